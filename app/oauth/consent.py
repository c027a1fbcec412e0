"""Consents: what each person approved for each client, kept in Postgres.

Each consent has an id, which the codes and access tokens issued under it
carry (the ``consent_id`` claim). Revoking a consent denies that id; a later
approval is a new consent with a new id, so nothing issued before the
revocation can ever count as issued under it.

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import joinedload

from .. import audit
from ..api_keys import revoke_consent_keys
from ..db import db
from ..denylist import deny_consent
from ..models import Consent, User, utcnow


@dataclass(frozen=True)
class ConsentedUser:
    """A person acting under one consent: the subject of codes and tokens.

    Authlib hands this to ``save_authorization_code`` (as the request's user)
    and to the token generator (as ``user``); ``token_jti`` is the id the
    token will have, chosen when its code was issued so a replay can deny it.
    """

    user: User
    consent_id: uuid.UUID
    token_jti: str | None = None

    def get_user_id(self) -> str:
        return self.user.get_user_id()


def find_consent(user_id: uuid.UUID, client_id: str) -> Consent | None:
    """The live consent of ``user_id`` to ``client_id``, if any."""
    return db.session.scalar(
        select(Consent).where(
            Consent.user_id == user_id,
            Consent.client_id == client_id,
            Consent.revoked_at.is_(None),
        )
    )


def covers(consent: Consent | None, scope: str) -> bool:
    return consent is not None and set(scope.split()) <= set(consent.scope.split())


def record_consent(user_id: uuid.UUID, client_id: str, scope: str) -> uuid.UUID:
    """Record an approval and return the id of the live consent it made.

    Approving again while a consent is live replaces its scope and keeps its
    id (its API keys stay bound to it); otherwise a new consent begins.
    """
    now = utcnow()
    statement = insert(Consent).values(
        id=uuid.uuid4(),
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        approved_at=now,
        created_at=now,
    )
    # An upsert with RETURNING always yields the row it inserted or updated.
    return db.session.execute(
        statement.on_conflict_do_update(
            index_elements=[Consent.user_id, Consent.client_id],
            index_where=Consent.revoked_at.is_(None),
            set_={"scope": scope, "approved_at": now},
        ).returning(Consent.id)
    ).scalar_one()


def live_consent_holder(user_id: str, consent_id: str) -> User | None:
    """The enabled person whose consent ``consent_id`` is still live, in one query."""
    try:
        user_key, consent_key = uuid.UUID(user_id), uuid.UUID(consent_id)
    except ValueError:
        return None
    return db.session.scalar(
        select(User)
        .join(Consent, Consent.user_id == User.id)
        .where(
            User.id == user_key,
            User.is_active.is_(True),
            Consent.id == consent_key,
            Consent.revoked_at.is_(None),
        )
    )


def list_consents(user_id: uuid.UUID) -> list[Consent]:
    """The person's live consents with their clients, newest first."""
    return list(
        db.session.scalars(
            select(Consent)
            .options(joinedload(Consent.client))
            .where(Consent.user_id == user_id, Consent.revoked_at.is_(None))
            .order_by(Consent.approved_at.desc())
        )
    )


def revoke_consent(user_id: uuid.UUID, consent_id: uuid.UUID) -> bool:
    """Revoke one of ``user_id``'s consents and everything issued under it.

    That is its tokens, and the API keys its client made together with the
    tokens exchanged from them (CONTRACT §7). Denied before the caller commits.
    """
    client_id = db.session.scalar(
        update(Consent)
        .where(
            Consent.id == consent_id,
            Consent.user_id == user_id,
            Consent.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .returning(Consent.client_id)
    )
    if client_id is None:
        return False
    key_ids = revoke_consent_keys(consent_id)
    deny_consent(str(consent_id))
    db.after_commit(
        lambda: audit.record(
            audit.CONSENT_REVOKED,
            user_id=user_id,
            client_id=client_id,
            consent_id=consent_id,
            api_key_ids=key_ids,
        )
    )
    return True
