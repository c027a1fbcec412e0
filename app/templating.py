"""Template helpers: every URL a page prints is built from ``ISSUER``; each
render finds its catalogue once."""

from __future__ import annotations

from typing import Any

from flask import Flask, request, url_for
from flask_babel import get_locale, get_translations
from jinja2 import pass_context
from jinja2.runtime import Context

from .config import current_settings


def public_url(endpoint: str, **values: Any) -> str:
    """Build an absolute URL under the issuer, whatever Host the request carried."""
    path = url_for(endpoint, **values)
    root = request.script_root if request else ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return current_settings().issuer + path


def _catalogue(context: Context) -> Any:
    """The catalogue of one render, as Flask-Babel's ``_`` uses.

    Flask-Babel finds it anew for every message a template translates (about
    14 µs each: context, locale, its string form, a cache lookup; a page has
    a dozen or more). A render is in one locale, so it is found once, kept on
    the render's own context, which Jinja passes with each message.
    """
    found = getattr(context, "page_catalogue", None)
    if found is None:
        found = get_translations()
        context.page_catalogue = found  # type: ignore[attr-defined]
    return found


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(public_url=public_url, get_locale=get_locale)
    # As Flask-Babel installs them (newstyle: autoescaped, %-formatted),
    # with the catalogue found once per render.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=pass_context(lambda ctx, s: _catalogue(ctx).ugettext(s)),
        ngettext=pass_context(lambda ctx, s, p, n: _catalogue(ctx).ungettext(s, p, n)),
        newstyle=True,
        pgettext=pass_context(lambda ctx, c, s: _catalogue(ctx).upgettext(c, s)),
        npgettext=pass_context(
            lambda ctx, c, s, p, n: _catalogue(ctx).unpgettext(c, s, p, n)
        ),
    )
