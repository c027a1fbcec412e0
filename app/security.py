"""Browser-facing protections: cookies, framing, content policy, proxy trust.

CSRF, CORS and caching depend on the kind of surface: see ``surfaces``.
"""

from __future__ import annotations

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


#: The headers every answer carries, unless it set its own.
SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_SECURITY_HEADER_NAMES = frozenset(name.lower() for name, _ in SECURITY_HEADERS)


def add_security_headers(headers: list[tuple[str, str]]) -> None:
    """Add :data:`SECURITY_HEADERS` to a WSGI header list, but any it has.

    Below Flask (``app/middleware.py``), on the plain header list: a few
    microseconds per request, where four ``Headers.setdefault`` calls in an
    ``after_request`` hook cost several times that on every route.
    """
    for name, _ in headers:
        if name.lower() in _SECURITY_HEADER_NAMES:  # the answer set one itself
            present = {name.lower() for name, _ in headers}
            headers.extend(
                header
                for header in SECURITY_HEADERS
                if header[0].lower() not in present
            )
            return
    headers.extend(SECURITY_HEADERS)
