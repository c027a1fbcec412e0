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

import functools
import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Table
from sqlalchemy.sql.dml import ReturningInsert

from ..db import db
from ..denylist_record import insert_expiring
from ..models import SpentAssertion
from ..redis_store import get_redis
from . import client_use
from .key_sets import ALGORITHMS
from .keys import TokenRegistry

#: Seconds of clock skew allowed between us and a signer.
LEEWAY = 60
#: Longest ``jti`` kept: longer ones are refused, not hashed at any length.
MAX_JTI_LENGTH = 256
# Header parameters beyond the registered ones are ignored, not refused:
# issuers add their own (``crit`` is still honoured). The tokens' registry
# takes RFC 8037's "EdDSA" without joserfc's deprecation warning (app/oauth/keys.py).
_REGISTRY = TokenRegistry(algorithms=list(ALGORITHMS), strict_check_header=False)


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


def is_numeric_date(value: Any) -> bool:
    """RFC 7519 §2: a number of seconds (a JSON boolean is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_usable_jti(jti: Any) -> bool:
    """Whether ``jti`` can name an assertion here: a string of sane length."""
    return isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH


def spend_jti(
    kind: str, issuer: str, jti: Any, expires_at: Any, used_by: str | None = None
) -> bool:
    """Spend ``jti`` of ``issuer``'s assertions of ``kind``; ``False`` if it
    was spent before (RFC 7523 §3, item 7).

    Kept until the assertion expires, plus the skew allowed, so a replay is
    refused on every instance for as long as it could be accepted: in Redis,
    which answers first and alone for a replay it holds, and in Postgres (in
    the request's transaction), which still holds it when Redis has lost its
    data. Of two requests at once, the second waits on the first's row.

    ``used_by``: the client the assertion is a grant for, which the same
    statement records as used (:mod:`.client_use`).
    """
    if not is_usable_jti(jti):
        return False
    ttl = int(expires_at) - int(time.time()) + LEEWAY
    if ttl <= 0:
        return False
    digest = hashlib.sha256(f"{kind}\n{issuer}\n{jti}".encode()).hexdigest()
    if not get_redis().set(f"assertion:jti:{digest}", "1", nx=True, ex=ttl):
        return False
    now = datetime.now(UTC)
    parameters = {
        "p_key": digest,
        "p_expires": now + timedelta(seconds=ttl),
        "p_now": now,
    }
    statement = _record_spent()
    if used_by is not None:
        statement = _record_spent_marking()
        parameters.update(client_use.parameters(used_by, now))
    spent = db.session.connection().execute(statement, parameters)
    return spent.first() is not None


@functools.cache
def _record_spent() -> ReturningInsert[Any]:
    """Insert the spent ``jti`` unless it is there; prune a few expired ones."""
    table = cast(Table, SpentAssertion.__table__)
    return insert_expiring(table, "digest").returning(table.c.digest)


@functools.cache
def _record_spent_marking() -> ReturningInsert[Any]:
    """:func:`_record_spent`, also marking client ``p_client`` used."""
    return _record_spent().add_cte(client_use.mark())
