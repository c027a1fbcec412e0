"""Device cookies: a browser that has signed in before keeps its way in.

OWASP's "Slow Down Online Guessing Attacks with Device Cookies": a successful
sign-in leaves a signed cookie naming the account (its id, see
:func:`app.users.account_key`) and a random nonce. Attempts that present one
for the account being tried are limited per nonce, not on the account's
shared budget, so strangers who spend that budget cannot lock the owner out
(docs/reference.md, "Sign-in limits"). A nonce whose budget runs out is
locked until its cookie expires; the browser then counts as any other.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from flask import current_app, g, request
from itsdangerous import BadData, URLSafeSerializer
from werkzeug.wrappers import Response

from .config import current_settings
from .redis_store import get_redis
from .signin import LOGIN_PATH

#: How long a browser stays trusted after its last sign-in: 180 days.
LIFETIME = 180 * 24 * 3600
#: Keeps these signatures apart from the session's and the CSRF tokens'.
SALT = "device-cookie"
#: Longer cookie values are not ours; refuse them before any parsing.
MAX_COOKIE_LENGTH = 512


class Device(NamedTuple):
    """A valid device cookie: a digest of its nonce, and when it expires."""

    id: str
    expires_at: int


def cookie_name(account: str) -> str:
    # One cookie per account, so a shared browser stays trusted for each.
    prefix = "__Secure-" if current_settings().secure_cookies else ""
    return f"{prefix}device-{account[:16]}"


def encode(account: str, nonce: str, expires_at: int) -> str:
    """The signed value of a device cookie (HMAC-SHA256 keyed by ``SECRET_KEY``)."""
    claims = {"account": account, "nonce": nonce, "exp": expires_at}
    return _serializer().dumps(claims)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(
        current_app.config["SECRET_KEY"],
        salt=SALT,
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def _lock_key(device_id: str) -> str:
    return f"login:device-locked:{device_id}"


def _read(account: str) -> Device | None:
    value = request.cookies.get(cookie_name(account), "")
    if not value or len(value) > MAX_COOKIE_LENGTH:
        return None
    try:
        # itsdangerous compares signatures in constant time.
        claims = _serializer().loads(value)
    except BadData:
        return None
    if not isinstance(claims, dict) or claims.get("account") != account:
        return None
    nonce, expires_at = claims.get("nonce"), claims.get("exp")
    if not isinstance(nonce, str) or type(expires_at) is not int:
        return None
    if expires_at <= time.time():
        return None
    # Limiter keys and their log lines carry a digest, never the nonce itself.
    return Device(hashlib.sha256(nonce.encode()).hexdigest()[:32], expires_at)


def trusted_device(account: str) -> str | None:
    """The id of this browser's unlocked device cookie for ``account``, or ``None``."""
    if "login_device" not in g:
        device = _read(account)
        if device is not None and get_redis().exists(_lock_key(device.id)):
            device = None
        g.login_device = device
    return g.login_device.id if g.login_device else None


def lock_device() -> None:
    """Withdraw trust from the cookie this request presented, until it expires."""
    device: Device | None = g.get("login_device")
    if device is not None:
        ttl = max(1, device.expires_at - int(time.time()))
        get_redis().set(_lock_key(device.id), "1", ex=ttl)


def remember_device(response: Response, account: str) -> None:
    """Give the browser a fresh device cookie (a new nonce) for ``account``."""
    expires_at = int(time.time()) + LIFETIME
    settings = current_settings()
    response.set_cookie(
        cookie_name(account),
        encode(account, secrets.token_urlsafe(16), expires_at),
        max_age=LIFETIME,
        # Only the sign-in form needs it; no other route sees it.
        path=urlsplit(settings.issuer).path + LOGIN_PATH,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
