"""The WSGI middleware around the Flask app, assembled in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings
from .errors import MAX_CONTENT_LENGTH, bound_chunked_body
from .logs import request_ended, request_started
from .security import add_security_headers


class Edge:
    """WSGI middleware: what every request gets below Flask, in one layer.

    In order, for each request:

    1. a chunked body gets a length (:func:`~app.errors.bound_chunked_body`),
       so the one size limit applies to every body;
    2. the request gets its id and, once the app has answered, its log line
       (:func:`~app.logs.request_started`, :func:`~app.logs.request_ended`);
    3. the answer gets ``X-Request-ID``, then the headers every answer
       carries (:func:`~app.security.add_security_headers`).

    One layer rather than one middleware each: each layer is a call and a
    ``start_response`` closure per request, and the three cost about as
    much again as what they do.
    """

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if "HTTP_TRANSFER_ENCODING" in environ:
            bound_chunked_body(environ, MAX_CONTENT_LENGTH)
        begun = request_started(environ)
        sent: list[str] = []

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            sent.append(status)
            headers.append(("X-Request-ID", begun.request_id))
            add_security_headers(headers)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            request_ended(environ, sent[-1] if sent else None, begun)


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap ``app.wsgi_app`` in :class:`Edge` and, with
    ``TRUSTED_PROXY_HOPS``, in ``ProxyFix`` outside it, which takes the
    caller's address and scheme from the trusted proxies: the request line
    then logs the address they said."""
    wsgi: Callable[..., Any] = Edge(app.wsgi_app)
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        wsgi = ProxyFix(wsgi, x_for=hops, x_proto=hops)
    app.wsgi_app = wsgi  # type: ignore[method-assign]
