"""Template helpers: every URL a page prints is built from ``ISSUER``."""

from __future__ import annotations

from typing import Any

from flask import Flask, request, url_for
from flask_babel import get_locale

from .config import current_settings


def public_url(endpoint: str, **values: Any) -> str:
    """Build an absolute URL under the issuer, whatever Host the request carried."""
    path = url_for(endpoint, **values)
    root = request.script_root if request else ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return current_settings().issuer + path


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(public_url=public_url, get_locale=get_locale)
