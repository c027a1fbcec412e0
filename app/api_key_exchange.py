"""Trading an API key for an access token (``POST /auth/token``, docs/reference.md)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Response, current_app
from redis.exceptions import RedisError
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from .api_keys import hash_key
from .db import db
from .models import ApiKey, Consent, User, utcnow
from .oauth.consent import narrow
from .oauth.issuance import Issuance
from .oauth.resources import find_resource
from .oauth.tokens import issue_access_token, new_jti
from .redis_store import get_redis

log = logging.getLogger(__name__)

#: Longer candidates are hashed as the empty string, so a huge body costs no more
#: to check than a short one. A real key is 47 characters.
MAX_CANDIDATE_LENGTH = 256
#: ``last_used_at`` is written at most once per key in this many seconds.
LAST_USED_INTERVAL = 60


def exchange(candidate: object) -> tuple[str, dict[str, Any]] | None:
    """Trade a key for an access token; ``None`` for any key that is not good."""
    # Every failure takes the same path: one hash, one indexed lookup, no row.
    if not isinstance(candidate, str) or len(candidate) > MAX_CANDIDATE_LENGTH:
        candidate = ""
    row = db.session.execute(
        select(ApiKey.id, ApiKey.user_id, ApiKey.scopes, ApiKey.resource, Consent.scope)
        .join(User, User.id == ApiKey.user_id)
        # A client's key yields no more than the consent it was made under
        # holds now: the person may have approved the client again for less.
        .outerjoin(Consent, Consent.id == ApiKey.consent_id)
        .where(
            ApiKey.key_hash == hash_key(candidate),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
            User.is_active.is_(True),
        )
    ).first()
    # A removed resource's keys were revoked with it; this is the moment between.
    resource = find_resource(row.resource) if row is not None else None
    if row is None or resource is None:
        return None
    return issue_access_token(
        Issuance(
            user_id=row.user_id,
            client_id=None,
            resource=resource,
            scope=" ".join(narrow(row.scopes, row.scope)),
            jti=new_jti(),
            api_key_id=str(row.id),
        )
    )


def note_use_after(response: Response, key_id: str) -> None:
    """Record the key's use once ``response`` has gone out, not before."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def record() -> None:
        with app.app_context():
            _note_use(uuid.UUID(key_id))

    response.call_on_close(record)


def _note_use(key_id: uuid.UUID) -> None:
    # One write a minute per key at most, however often it is exchanged and on
    # whichever instance: the Redis gate is shared. Bookkeeping must not cost
    # the caller a token it is owed, so a failure here is only logged.
    try:
        gate = f"api_key:last_used:{key_id}"
        if get_redis().set(gate, "1", nx=True, ex=LAST_USED_INTERVAL):
            with db.transaction():
                db.session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used_at=utcnow())
                )
    except (RedisError, SQLAlchemyError) as exc:
        log.warning("could not record API key use: %s", type(exc).__name__)
