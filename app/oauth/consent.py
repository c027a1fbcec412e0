"""Consents: what each person approved for each client, kept in Postgres.

Each consent has an id, which the codes and access tokens issued under it
carry (the ``consent_id`` claim). Revoking a consent denies that id; a later
approval is a new consent with a new id, so nothing issued before the
revocation can ever count as issued under it.

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    exists,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import joinedload
from sqlalchemy.sql.dml import ReturningInsert

from .. import audit
from ..api_keys import revoke_consent_keys
from ..db import db
from ..denylist import deny_consent
from ..models import Consent, OAuthClient, User, utcnow


@dataclass(frozen=True)
class ConsentedUser:
    """A person acting under one consent: the subject of codes and tokens.

    Authlib hands this to ``save_authorization_code`` (as the request's user)
    and to the token generator (as ``user``); ``token_jti`` is the id the
    token will have, chosen when its code was issued so a replay can deny it.
    The person's id is all either reads, so no account row is loaded for it.
    """

    user_id: uuid.UUID
    consent_id: uuid.UUID
    token_jti: str | None = None

    def get_user_id(self) -> str:
        return str(self.user_id)


class Person(NamedTuple):
    """The signed-in person, as the consent page shows them."""

    id: uuid.UUID
    email: str


class Approval(NamedTuple):
    """A live consent, as the consent page and ``prompt=none`` read it."""

    id: uuid.UUID
    scope: str
    approved_at: datetime


def find_consent(user_id: uuid.UUID, client_id: str) -> Consent | None:
    """The live consent of ``user_id`` to ``client_id``, if any."""
    return db.session.scalar(
        select(Consent).where(
            Consent.user_id == user_id,
            Consent.client_id == client_id,
            Consent.revoked_at.is_(None),
        )
    )


def covers(consent: Consent | Approval | None, scope: str) -> bool:
    return consent is not None and set(scope.split()) <= set(consent.scope.split())


def cap_scope(scopes: Iterable[str], consent_scope: str | None) -> list[str]:
    """``scopes`` less any the consent (space-separated) no longer holds.

    Approving a client again with fewer scopes narrows its consent in place;
    what was issued under it before (a refresh chain, a client's API key)
    then yields no more than the consent holds now. ``None``: no consent
    limits them (a key the person made on the account page).
    """
    if consent_scope is None:
        return list(scopes)
    allowed = set(consent_scope.split())
    return [scope for scope in scopes if scope in allowed]


def signed_in_consent(
    user_id: str, client_id: str
) -> tuple[Person, Approval | None] | None:
    """The enabled person ``user_id`` with their live consent to ``client_id``.

    One query; ``None`` if the account is gone or disabled.
    """
    key = _uuid(user_id)
    if key is None:
        return None
    parameters = {"p_user": key, "p_client": client_id}
    found: Any = _core(_person_with_consent(), parameters).first()
    if found is None:
        return None
    row = found._mapping
    approval = None
    if row["consent_id"] is not None:
        approval = Approval(row["consent_id"], row["scope"], row["approved_at"])
    return Person(row["user_id"], row["email"]), approval


def record_consent(
    user_id: str, client_id: str, scope: str, client_row: Insert | None = None
) -> uuid.UUID | None:
    """Record an approval by the enabled person ``user_id``; return the consent's id.

    Approving again while a consent is live replaces its scope and keeps its
    id (its API keys stay bound to it); otherwise a new consent begins.
    ``None``, with nothing recorded, if the account is gone or disabled.
    ``client_row`` (the client's own row, for a metadata-document client) is
    written by the same statement, so the approval needs no transaction.
    """
    key = _uuid(user_id)
    if key is None:
        return None
    statement: Any = _approval()
    if client_row is not None:
        statement = statement.add_cte(client_row.cte("client_row"))
    parameters = {
        "p_id": uuid.uuid4(),
        "p_user": key,
        "p_client": client_id,
        "p_scope": scope,
        "p_now": utcnow(),
    }
    # An upsert with RETURNING yields the row it inserted or updated, if any.
    return _core(statement, parameters).scalar()


def live_consent_holder(
    user_id: str, consent_id: str, mark_client: str | None = None
) -> uuid.UUID | None:
    """The id of the enabled person whose consent ``consent_id`` is still live.

    One query.
    With ``mark_client``, the same statement records that this client
    completed an authorization (see :func:`app.oauth.clients.mark_authorized`),
    if the consent is live.
    """
    user_key, consent_key = _uuid(user_id), _uuid(consent_id)
    if user_key is None or consent_key is None:
        return None
    parameters: dict[str, Any] = {"p_user": user_key, "p_consent": consent_key}
    if mark_client is None:
        return _core(_holder(), parameters).scalar()
    parameters.update(p_client=mark_client, p_now=utcnow())
    return _core(_holder_marking_client(), parameters).scalar()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# The hot statements are built once, with parameters: building SQLAlchemy
# constructs costs more CPU than Postgres spends running them. They select
# columns, not entities, and run on the session's connection: the ORM's
# per-statement and per-row work would cost more than the rest of the query.


def _core(statement: Any, parameters: dict[str, Any]) -> CursorResult[Any]:
    return db.session.connection().execute(statement, parameters)


@functools.cache
def _person_with_consent() -> Select:
    live = and_(
        Consent.user_id == User.id,
        Consent.client_id == bindparam("p_client"),
        Consent.revoked_at.is_(None),
    )
    return (
        select(
            User.id.label("user_id"),
            User.email,
            Consent.id.label("consent_id"),
            Consent.scope,
            Consent.approved_at,
        )
        .outerjoin(Consent, live)
        .where(User.id == bindparam("p_user"), User.is_active.is_(True))
    )


@functools.cache
def _approval() -> ReturningInsert[Any]:
    columns = Consent.__table__.c
    person = select(
        bindparam("p_id", type_=columns.id.type),
        User.id,
        bindparam("p_client", type_=columns.client_id.type),
        bindparam("p_scope", type_=columns.scope.type),
        bindparam("p_now", type_=columns.approved_at.type),
        bindparam("p_now", type_=columns.created_at.type),
    ).where(User.id == bindparam("p_user"), User.is_active.is_(True))
    # The table, not the mapped class: with parameters, an ORM insert would
    # be a bulk insert keyed by attribute.
    statement = insert(cast(Table, Consent.__table__)).from_select(
        ["id", "user_id", "client_id", "scope", "approved_at", "created_at"],
        person,
        include_defaults=False,
    )
    return statement.on_conflict_do_update(
        index_elements=[columns.user_id, columns.client_id],
        index_where=columns.revoked_at.is_(None),
        set_={"scope": bindparam("p_scope"), "approved_at": bindparam("p_now")},
    ).returning(columns.id)


def _live_holder() -> tuple[Any, ...]:
    return (
        User.id == bindparam("p_user"),
        User.is_active.is_(True),
        Consent.id == bindparam("p_consent"),
        Consent.revoked_at.is_(None),
    )


@functools.cache
def _holder() -> Select:
    return (
        select(User.id).join(Consent, Consent.user_id == User.id).where(*_live_holder())
    )


@functools.cache
def _holder_marking_client() -> Select:
    holder = select(Consent.id).join(User, Consent.user_id == User.id)
    mark = (
        update(cast(Table, OAuthClient.__table__))
        .where(
            OAuthClient.client_id == bindparam("p_client"),
            OAuthClient.last_authorized_at.is_(None),
            exists(holder.where(*_live_holder())),
        )
        .values(last_authorized_at=bindparam("p_now"))
    )
    return _holder().add_cte(mark.cte("mark_client"))


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
