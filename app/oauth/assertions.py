"""Signed JWTs presented to us: verified by a key set, and used only once.

Two kinds arrive at the token endpoints: a client's own assertion, which
authenticates it (``private_key_jwt``, :mod:`.client_assertion`), and an
identity assertion from a trusted issuer, which is a grant
(:mod:`.grants.identity_assertion`). Both are checked here the same way: a
signature by a key of the signer's set (:mod:`.key_sets`) with an
algorithm of :data:`~.key_sets.ALGORITHMS`, tried against the one key the
header names, or against each key when it names none; and a ``jti`` spent
once across every instance (:func:`spend_jti`).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from ..redis_store import get_redis
from .key_sets import ALGORITHMS

#: Seconds of clock skew allowed between us and a signer.
LEEWAY = 60
#: Longest ``jti`` kept: longer ones are refused, not hashed at any length.
MAX_JTI_LENGTH = 256
# Header parameters beyond the registered ones are ignored, not refused:
# issuers add their own (``crit`` is still honoured).
_REGISTRY = JWSRegistry(algorithms=list(ALGORITHMS), strict_check_header=False)


class BadAssertion(Exception):
    """The assertion is not signed by the key set, or is not a JWT at all."""


def verify_signature(assertion: str, key_set: KeySet, kid: Any) -> dict[str, Any]:
    """The claims of ``assertion`` once a key of ``key_set`` verifies it."""
    candidates = [k for k in key_set.keys if kid is None or k.kid == kid]
    for key in candidates:
        try:
            token = jwt.decode(assertion, key, registry=_REGISTRY)
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(token.claims, dict):
            return token.claims
    raise BadAssertion


def is_usable_jti(jti: Any) -> bool:
    """Whether ``jti`` can name an assertion here: a string of sane length."""
    return isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH


def spend_jti(kind: str, issuer: str, jti: Any, expires_at: Any) -> bool:
    """Spend ``jti`` of ``issuer``'s assertions of ``kind``; ``False`` if it
    was spent before (RFC 7523 §3, item 7).

    Kept in Redis until the assertion expires, plus the skew allowed, so a
    replay is refused on every instance for as long as it could be accepted.
    """
    if not is_usable_jti(jti):
        return False
    ttl = int(expires_at) - int(time.time()) + LEEWAY
    if ttl <= 0:
        return False
    digest = hashlib.sha256(f"{kind}\n{issuer}\n{jti}".encode()).hexdigest()
    return bool(get_redis().set(f"assertion:jti:{digest}", "1", nx=True, ex=ttl))
