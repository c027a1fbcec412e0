"""Browser-facing protections: cookies, framing, content policy, proxy trust.

CSRF, CORS and caching depend on the kind of surface: see ``surfaces``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from .config import Settings

#: Pages render only our own CSS and script, and may never be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Flask signs with SECRET_KEY and still reads these (its rotation list).
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="__Host-session" if settings.secure_cookies else "session",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
        WTF_CSRF_TIME_LIMIT=3600,
        WTF_CSRF_SSL_STRICT=False,  # the Referer check breaks behind proxies
    )


class SecurityHeaders:
    """WSGI middleware: the headers every answer carries, unless it set its own.

    Below Flask, on the plain header list: a few microseconds per request,
    where four ``Headers.setdefault`` calls in an ``after_request`` hook
    cost several times that on every route.
    """

    HEADERS = (
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    )

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(
                header for header in self.HEADERS if header[0].lower() not in present
            )
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)
