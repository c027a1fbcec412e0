"""Who is signed in, since when and how: the one reader and writer of it.

A sign-in is kept in the page session (:mod:`app.sessions`): the session's
id, the account's id, when the person signed in (OpenID Connect's
``auth_time``) and by which method. Views and grants ask
:func:`current_sign_in` or :func:`current_user`; every way of signing in (the
password form, and later an identity provider) ends in :func:`begin`.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

from flask import Response, g, redirect, request, session

from .config import current_settings
from .models import User
from .sessions import is_ended, record_ended
from .users import get_active_user

F = TypeVar("F", bound=Callable[..., Any])

#: The sign-in page, under the issuer's path.
LOGIN_PATH = "/login"
#: The method of a sign-in with this service's own password form.
PASSWORD = "password"


@dataclass(frozen=True)
class SignIn:
    """Who signed in this browser, when (Unix time) and by which method."""

    user_id: str
    auth_time: int
    #: :data:`PASSWORD`, or the issuer of the identity provider used.
    method: str
    #: This sign-in's own id: a new sign-in, even within the same second,
    #: has another.
    session_id: str
    #: When it began, to the microsecond (``auth_time`` is whole seconds);
    #: 0 for a session from before this was kept.
    began_at: float = 0.0


def current_sign_in() -> SignIn | None:
    """This request's live sign-in, or ``None``.

    The account itself is not read: a caller that reads it anyway (with its
    consent, say) must still require it to exist and be enabled.
    """
    if "sign_in" not in g:
        g.sign_in = _from_session()
    return cast(SignIn | None, g.sign_in)


def _from_session() -> SignIn | None:
    user_id, session_id = session.get("user_id"), session.get("sid")
    if not (user_id and session_id) or is_ended(str(session_id)):
        return None
    return SignIn(
        user_id=str(user_id),
        auth_time=int(session.get("auth_time") or time.time()),
        # Sessions from before methods were recorded were all password ones.
        method=str(session.get("method") or PASSWORD),
        session_id=str(session_id),
        began_at=float(session.get("began_at") or 0),
    )


def current_user() -> User | None:
    """The signed-in, enabled user of this request, or ``None``."""
    if "current_user" not in g:
        signed_in = current_sign_in()
        g.current_user = get_active_user(signed_in.user_id) if signed_in else None
    return cast(User | None, g.current_user)


def begin(user: User, method: str) -> SignIn:
    """Sign ``user`` in to this browser by ``method``, in a fresh session."""
    if not user.is_active:
        raise ValueError("a disabled account cannot sign in")
    now = time.time()
    signed_in = SignIn(str(user.id), int(now), method, secrets.token_urlsafe(16), now)
    # Nothing set before it (CSRF token included) survives, so a session
    # planted by someone else is of no use to them.
    session.clear()
    session["sid"] = signed_in.session_id
    session["user_id"] = signed_in.user_id
    session["auth_time"] = signed_in.auth_time
    session["method"] = signed_in.method
    session["began_at"] = signed_in.began_at
    session.permanent = True
    g.sign_in, g.current_user = signed_in, user
    return signed_in


def end() -> None:
    """Sign this browser out; a copy of its session cookie is refused too."""
    session_id = session.get("sid")
    if session_id:
        record_ended(str(session_id))
    session.clear()
    g.sign_in, g.current_user = None, None


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
    return issuer_redirect(LOGIN_PATH + "?" + urlencode({"next": target}))


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return login_redirect()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
