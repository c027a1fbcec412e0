"""Cookie sessions: opened only on people's pages, and ended for good on sign-out.

Who is signed in, and since when, is :mod:`app.signin`'s to say.
"""

from __future__ import annotations

from flask import Flask, Request, Response, current_app, request
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from .redis_store import get_redis
from .surfaces import Surface


class PageSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions, opened only where people's pages need them."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.environ.get("HTTP_COOKIE", ""):
            # No cookie of that name: what the parent returns, without
            # parsing the Cookie header or routing the request first.
            return self.session_class()
        # Only people's pages read who is signed in; APIs, documents and
        # services neither verify nor set the cookie (app.surfaces). Flask
        # opens the session before routing; routing here tells the surface
        # (Flask routes again once the session is open).
        surface = app.extensions.get("surfaces", {}).get(_blueprint_of(app, request))
        if surface is not None and surface is not Surface.PAGE:
            return None  # Flask's NullSession: reads are empty, writes raise
        return super().open_session(app, request)

    def save_session(
        self, app: Flask, session: SessionMixin, response: Response
    ) -> None:
        # A session opened without a cookie was opened before routing, as a
        # plain one; whatever the request did to it, only pages set cookies.
        surface = app.extensions.get("surfaces", {}).get(request.blueprint)
        if surface is not None and surface is not Surface.PAGE:
            return
        super().save_session(app, session, response)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        # Flask builds a serializer per request; the key never changes.
        serializer = app.extensions.get("session_serializer")
        if serializer is None:
            serializer = super().get_signing_serializer(app)
            app.extensions["session_serializer"] = serializer
        return serializer


def _blueprint_of(app: Flask, request: Request) -> str | None:
    """The blueprint ``request`` routes to, before Flask has routed it."""
    try:
        rule, _ = app.create_url_adapter(request).match(return_rule=True)  # type: ignore[union-attr]
    except HTTPException:  # not found, wrong method, or a redirect
        return None
    return rule.endpoint.rpartition(".")[0] or None


def init_app(app: Flask) -> None:
    app.session_interface = PageSessionInterface()


def _ended_key(session_id: str) -> str:
    return f"session:ended:{session_id}"


def is_ended(session_id: str) -> bool:
    """Tell whether the session ``session_id`` was ended (by signing out)."""
    # Sessions live in signed cookies; a copy taken before sign-out would stay
    # valid, so sign-out records the session as ended until it would expire.
    return bool(get_redis().exists(_ended_key(session_id)))


def record_ended(session_id: str) -> None:
    """Refuse the session ``session_id`` from now until it would have expired."""
    lifetime = current_app.permanent_session_lifetime
    get_redis().set(_ended_key(session_id), "1", ex=lifetime)
