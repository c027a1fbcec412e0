"""Browser-facing protections: cookies, CSRF, framing, CORS, proxy trust."""

from __future__ import annotations

from flask import Flask, Response, request
from flask_cors import CORS
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings
from .errors import HTML_BLUEPRINTS

csrf = CSRFProtect()

#: Routes that browser-based MCP clients call from any origin (CONTRACT §2),
#: with the methods a preflight may offer: only those the route answers.
#: ``/mcp`` also routes GET and DELETE, but only to say 405 (no stream, no
#: session), so a browser is not invited to send them.
CORS_ROUTES = {
    r"/.well-known/*": ["GET"],
    r"/register": ["POST"],
    r"/token": ["POST"],
    r"/revoke": ["POST"],
    r"/mcp": ["POST"],
    r"/auth/token": ["POST"],
}

#: Pages render only our own CSS and script, and may never be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="__Host-session" if settings.secure_cookies else "session",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
        WTF_CSRF_TIME_LIMIT=3600,
        WTF_CSRF_SSL_STRICT=False,  # the Referer check breaks behind proxies
    )
    csrf.init_app(app)
    CORS(
        app,
        resources={
            route: {"origins": "*", "methods": methods}
            for route, methods in CORS_ROUTES.items()
        },
        allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
        expose_headers=["WWW-Authenticate", "Mcp-Session-Id"],
        max_age=3600,
        send_wildcard=True,
        vary_header=False,
    )
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.after_request(_security_headers)


def _security_headers(response: Response) -> Response:
    if request.blueprint in HTML_BLUEPRINTS:
        # Pages carry CSRF tokens, keys shown once and personal data.
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
