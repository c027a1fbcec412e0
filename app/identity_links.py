"""A new identity waiting to be linked to an existing account, after proof.

When a provider vouches for an email that an account here already has, the
identity is not linked on the provider's word (a provider that lets anyone
claim any address, or an administrator who writes one, would take the
account over). It is held here, in Redis for a few minutes, under a random
value kept in a cookie of the browser that came back from the provider; once
that browser has signed in to the account by its current method, the person
confirms and the identity is linked. Another browser, or another account,
finds nothing to link. The sign-in must come after the identity: a browser
already signed in when the provider answered signs in again first, so that
a provider's word (or a session left open) is never the proof.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from flask import request
from werkzeug.wrappers import Response

from .config import current_settings
from .redis_store import get_redis
from .signin import LOGIN_PATH
from .upstream_identity import UpstreamIdentity

#: Seconds a person has to sign in to their account and confirm.
LINK_TTL = 600
#: Longer cookie values are not ours.
MAX_COOKIE_LENGTH = 64


@dataclass(frozen=True)
class PendingLink:
    """An identity, the account it may join, and where the person was going."""

    identity: UpstreamIdentity
    user_id: str
    target: str
    #: The sign-in this browser had when the provider answered, if any: it
    #: proves nothing, since it came first.
    earlier_session: str | None = None
    #: When the provider answered (Unix time): only a sign-in made after it
    #: proves the person owns the account, in whatever browser the offer
    #: ends up.
    offered_at: float = 0.0


def cookie_name() -> str:
    return ("__Secure-" if current_settings().secure_cookies else "") + "signin-link"


def _key(token: str) -> str:
    return "signin:link:" + hashlib.sha256(token.encode()).hexdigest()


def _token() -> str | None:
    token = request.cookies.get(cookie_name(), "")
    return token if 0 < len(token) <= MAX_COOKIE_LENGTH else None


def offer(response: Response, link: PendingLink) -> None:
    """Hold ``link`` for this browser (a fresh cookie on ``response``)."""
    token = secrets.token_urlsafe(24)
    identity = asdict(link.identity)
    identity["domains"] = sorted(link.identity.domains)
    record = {
        "identity": identity,
        "user_id": link.user_id,
        "target": link.target,
        "earlier_session": link.earlier_session,
        "offered_at": link.offered_at or time.time(),
    }
    get_redis().set(_key(token), json.dumps(record), ex=LINK_TTL)
    settings = current_settings()
    response.set_cookie(
        cookie_name(),
        token,
        max_age=LINK_TTL,
        path=urlsplit(settings.issuer).path + LOGIN_PATH,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def pending() -> PendingLink | None:
    """The link this browser holds, without using it up."""
    token = _token()
    return _parse(get_redis().get(_key(token))) if token else None


def take(response: Response) -> PendingLink | None:
    """Use this browser's link up (one ``GETDEL``), and drop its cookie."""
    token = _token()
    if token is None:
        return None
    settings = current_settings()
    response.delete_cookie(
        cookie_name(),
        path=urlsplit(settings.issuer).path + LOGIN_PATH,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
    return _parse(get_redis().getdel(_key(token)))


def _parse(raw: str | None) -> PendingLink | None:
    if raw is None:
        return None
    record = json.loads(raw)
    identity = record["identity"]
    identity["domains"] = frozenset(identity["domains"])
    return PendingLink(
        UpstreamIdentity(**identity),
        record["user_id"],
        record["target"],
        record.get("earlier_session"),
        float(record.get("offered_at") or 0),
    )
