"""The WSGI middleware around the Flask app, assembled in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings
from .errors import MAX_CONTENT_LENGTH, ChunkedBodyLimit
from .logs import RequestLog
from .security import SecurityHeaders


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap ``app.wsgi_app``, from the innermost layer out.

    A request meets them in the reverse order:

    1. :class:`~app.errors.ChunkedBodyLimit` gives a chunked body a length,
       so the one size limit applies to every body;
    2. ``ProxyFix`` (only with ``TRUSTED_PROXY_HOPS``) takes the caller's
       address and scheme from the trusted proxies;
    3. :class:`~app.security.SecurityHeaders` adds the headers every answer
       carries;
    4. :class:`~app.logs.RequestLog`, innermost, names the request and logs
       it, with ``REMOTE_ADDR`` already what the proxies said.
    """
    wsgi: Callable[..., Any] = RequestLog(app.wsgi_app)
    wsgi = SecurityHeaders(wsgi)
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        wsgi = ProxyFix(wsgi, x_for=hops, x_proto=hops)
    app.wsgi_app = ChunkedBodyLimit(wsgi, MAX_CONTENT_LENGTH)  # type: ignore[method-assign]
