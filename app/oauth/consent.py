"""Grants: what each person approved for each client, kept in Postgres."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from .. import audit
from ..api_keys import deny_key_tokens, revoke_consent_keys
from ..db import db
from ..models import Grant, utcnow
from ..revocation import revoke_grant as revoke_grant_tokens


def find_grant(user_id: uuid.UUID, client_id: str) -> Grant | None:
    """The live grant of ``user_id`` to ``client_id``, if any."""
    return db.session.scalar(
        select(Grant).where(
            Grant.user_id == user_id,
            Grant.client_id == client_id,
            Grant.revoked_at.is_(None),
        )
    )


def covers(grant: Grant | None, scope: str) -> bool:
    return grant is not None and set(scope.split()) <= set(grant.scope.split())


def record_grant(user_id: uuid.UUID, client_id: str, scope: str) -> None:
    """Record an approval; a later approval replaces the earlier one."""
    now = utcnow()
    statement = insert(Grant).values(
        id=uuid.uuid4(),
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        approved_at=now,
        created_at=now,
    )
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=[Grant.user_id, Grant.client_id],
            set_={"scope": scope, "approved_at": now, "revoked_at": None},
        )
    )
    db.session.commit()


def list_grants(user_id: uuid.UUID) -> list[Grant]:
    return list(
        db.session.scalars(
            select(Grant)
            .where(Grant.user_id == user_id, Grant.revoked_at.is_(None))
            .order_by(Grant.approved_at.desc())
        )
    )


def revoke_grant(user_id: uuid.UUID, grant_id: uuid.UUID) -> bool:
    """Revoke one of ``user_id``'s grants and everything issued under it.

    That is its tokens, and the API keys its client made together with the
    tokens exchanged from them (CONTRACT §7).
    """
    client_id = db.session.scalar(
        update(Grant)
        .where(
            Grant.id == grant_id, Grant.user_id == user_id, Grant.revoked_at.is_(None)
        )
        .values(revoked_at=utcnow())
        .returning(Grant.client_id)
    )
    if client_id is None:
        db.session.rollback()
        return False
    key_ids = revoke_consent_keys(grant_id)
    db.session.commit()
    audit.record(
        audit.CONSENT_REVOKED,
        user_id=user_id,
        client_id=client_id,
        consent_id=grant_id,
        api_key_ids=key_ids,
    )
    deny_key_tokens(key_ids)
    revoke_grant_tokens(str(user_id), client_id)
    return True
