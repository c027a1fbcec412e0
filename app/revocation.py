"""Ending access tokens early: the one path every kind of revocation takes.

Access tokens are self-contained JWTs, so revoking one means remembering, in
Redis and only until the longest-lived token could expire, what is no longer
good: a single ``jti``, or everything issued up to a moment for one grant
(user and client), one API key or one user. :func:`is_revoked` checks every
marker that could apply to a token in one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .config import current_settings
from .redis_store import get_redis

#: Extra seconds a marker outlives the tokens it covers (clock skew between hosts).
MARKER_MARGIN = 60


def _marker_ttl() -> int:
    return current_settings().access_token_ttl + MARKER_MARGIN


def _jti_key(jti: str) -> str:
    return f"revoked:jti:{jti}"


def _grant_key(user_id: str, client_id: str) -> str:
    return f"revoked:grant:{user_id}:{client_id}"


def _api_key_key(key_id: str) -> str:
    return f"revoked:api_key:{key_id}"


def _user_key(user_id: str) -> str:
    return f"revoked:user:{user_id}"


def revoke_jti(jti: str, expires_at: int | None = None) -> None:
    """Deny one token until it would have expired anyway."""
    ttl = _marker_ttl() if expires_at is None else int(expires_at - time.time()) + 1
    if ttl > 0:
        get_redis().set(_jti_key(jti), "1", ex=min(ttl, _marker_ttl()))


def _revoke_issued_until_now(key: str) -> None:
    # Sub-second precision: codes carry exact issue times, tokens whole seconds.
    get_redis().set(key, f"{time.time():.6f}", ex=_marker_ttl())


def revoke_grant(user_id: str, client_id: str) -> None:
    """Deny every token issued so far to ``client_id`` on behalf of ``user_id``."""
    _revoke_issued_until_now(_grant_key(user_id, client_id))


def grant_revoked_at(user_id: str, client_id: str) -> float | None:
    """When ``user_id`` last revoked ``client_id`` (if within the token lifetime)."""
    cutoff = get_redis().get(_grant_key(user_id, client_id))
    return float(cutoff) if cutoff is not None else None


def revoke_api_key(key_id: str) -> None:
    """Deny every token exchanged from the API key ``key_id`` so far."""
    _revoke_issued_until_now(_api_key_key(key_id))


def revoke_user(user_id: str) -> None:
    """Deny every token issued so far to ``user_id`` (account disabled)."""
    _revoke_issued_until_now(_user_key(user_id))


def is_revoked(claims: Mapping[str, Any]) -> bool:
    """Tell whether a token with these (already verified) claims was revoked."""
    sub = str(claims.get("sub", ""))
    keys = [_jti_key(str(claims.get("jti", ""))), _user_key(sub)]
    if claims.get("client_id"):
        keys.append(_grant_key(sub, str(claims["client_id"])))
    if claims.get("api_key_id"):
        keys.append(_api_key_key(str(claims["api_key_id"])))
    jti_marker, *cutoffs = get_redis().mget(keys)
    if jti_marker is not None:
        return True
    issued_at = int(claims.get("iat", 0))
    return any(cutoff is not None and issued_at <= float(cutoff) for cutoff in cutoffs)
