"""Who is signed in: the people's side of the service (cookie sessions)."""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

from flask import Flask, Request, Response, current_app, g, redirect, request, session
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from .config import current_settings
from .models import User
from .redis_store import get_redis
from .surfaces import Surface
from .users import get_active_user

F = TypeVar("F", bound=Callable[..., Any])


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


def signed_in_id() -> str | None:
    """The account id of this request's live session, or ``None``.

    The account itself is not read: a caller that reads it anyway (with
    its consent, say) must still require it to exist and be enabled.
    """
    if "signed_in_id" not in g:
        user_id, session_id = session.get("user_id"), session.get("sid")
        live = bool(user_id and session_id) and not _ended(str(session_id))
        g.signed_in_id = str(user_id) if live else None
    return g.signed_in_id


def current_user() -> User | None:
    """The signed-in, enabled user of this request, or ``None``."""
    if "current_user" not in g:
        user_id = signed_in_id()
        g.current_user = get_active_user(user_id) if user_id else None
    return g.current_user


def _ended_key(session_id: str) -> str:
    return f"session:ended:{session_id}"


def _ended(session_id: str) -> bool:
    # Sessions live in signed cookies; a copy taken before sign-out would stay
    # valid, so sign-out records the session as ended until it would expire.
    return bool(get_redis().exists(_ended_key(session_id)))


def sign_in(user: User) -> None:
    # A fresh session on sign-in: nothing set before it (CSRF token included)
    # survives, so a session planted by someone else is of no use to them.
    session.clear()
    session["sid"] = secrets.token_urlsafe(16)
    session["user_id"] = str(user.id)
    session["auth_time"] = int(time.time())
    session.permanent = True
    g.current_user = user
    g.signed_in_id = str(user.id)


def sign_out() -> None:
    session_id = session.get("sid")
    if session_id:
        lifetime = current_app.permanent_session_lifetime
        get_redis().set(_ended_key(session_id), "1", ex=lifetime)
    session.clear()
    g.pop("current_user", None)
    g.pop("signed_in_id", None)


def is_local_target(target: str | None) -> bool:
    """Accept only a path on this service: no scheme, host or protocol-relative form."""
    if not target or len(target) > 4096 or not target.startswith("/"):
        return False
    if target.startswith("//") or "\\" in target:
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def issuer_redirect(path: str) -> Response:
    """Redirect to a path under the issuer (which may carry a path prefix)."""
    # Flask's redirect builds the app's own response class.
    return cast(Response, redirect(current_settings().issuer + path, code=302))


def login_redirect() -> Response:
    """Send the visitor to the login page, to come back to this very request."""
    target = request.full_path if request.query_string else request.path
    return issuer_redirect("/login?" + urlencode({"next": target}))


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return login_redirect()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
