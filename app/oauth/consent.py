"""Consents: what each person approved for each client, and their lifecycle.

Each consent has an id, which the codes and access tokens issued under it
carry (the ``consent_id`` claim). :func:`approve` records one (or re-approves
the live one in place), :func:`narrow` is what a consent approved again with
fewer scopes leaves of what was issued under it, and :func:`withdraw` ends
it with everything issued under it. Every endpoint that changes a consent
calls these. A withdrawn consent stays withdrawn; a later approval is a new
consent with a new id, so nothing issued before can ever count under it.

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import errors as pg_errors
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from .. import audit
from ..api_keys import revoke_all
from ..db import db
from ..denylist import deny_consent
from ..models import ApiKey, Consent, RefreshToken, utcnow
from ..pagination import Page, paginate
from . import client_use
from . import consent_statements as statements
from .scopes import within


@dataclass(frozen=True)
class ConsentedUser:
    """A person acting under one consent, as the authorization endpoint hands
    them to Authlib (``grant_user``), which passes them to the code it saves."""

    user_id: uuid.UUID
    consent_id: uuid.UUID

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


def find_consent(user_id: uuid.UUID, client_id: str, resource: str) -> Consent | None:
    """The live consent of ``user_id`` to ``client_id`` for ``resource``, if any."""
    return db.session.scalar(
        select(Consent).where(
            Consent.user_id == user_id,
            Consent.client_id == client_id,
            Consent.resource == resource,
            Consent.revoked_at.is_(None),
        )
    )


def has_approved(user_id: uuid.UUID, client_id: str) -> bool:
    """Whether ``user_id`` holds a live consent to ``client_id``, for any resource."""
    live = select(Consent.id).where(
        Consent.user_id == user_id,
        Consent.client_id == client_id,
        Consent.revoked_at.is_(None),
    )
    return bool(db.session.scalar(select(live.exists())))


def covers(consent: Consent | Approval | None, scope: str) -> bool:
    return consent is not None and set(scope.split()) <= set(consent.scope.split())


def signed_in_consent(
    user_id: str, client_id: str, resource: str
) -> tuple[Person, Approval | None] | None:
    """The enabled person ``user_id`` with their live consent to ``client_id``
    for ``resource``.

    One query; ``None`` if the account is gone or disabled.
    """
    key = _uuid(user_id)
    if key is None:
        return None
    parameters = {"p_user": key, "p_client": client_id, "p_resource": resource}
    found = statements.run(
        statements.prepared(statements.person_with_consent), parameters
    ).first()
    if found is None:
        return None
    person = Person(found.person_id, found.email)
    if found.consent_id is None:
        return person, None
    return person, Approval(found.consent_id, found.scope, found.approved_at)


class ClientGone(Exception):
    """The client was pruned while the person approved it (app/prune.py):
    nothing was recorded, and it is answered as an unknown client."""


def approve(
    user_id: str,
    client_id: str,
    scope: str,
    resource: str,
    client_row: Insert | None = None,
) -> uuid.UUID | None:
    """Record an approval by the enabled person ``user_id`` of ``client_id``
    for ``resource``; return the consent's id.

    Approving again while a consent is live keeps its id (its API keys and
    refresh chains stay bound to it). A request for scopes it lacks (MCP's
    step-up, after a ``403 insufficient_scope``) widens it to the union; a
    request within it narrows it to what was asked (:func:`narrow`).
    Otherwise a new consent begins. ``None``, with nothing recorded, if the
    account is gone or disabled. ``client_row`` (the client's own row, for a
    metadata-document client) is written by the same statement, so the
    approval needs no transaction. :class:`ClientGone` if the client was
    pruned meanwhile.
    """
    key = _uuid(user_id)
    if key is None:
        return None
    statement: Any = statements.prepared(statements.approval)
    if client_row is not None:
        # Built per request: a construct, compiled as it runs.
        statement = statements.approval().add_cte(client_row.cte("client_row"))
    parameters = {
        "p_id": uuid.uuid4(),
        "p_user": key,
        "p_client": client_id,
        "p_scope": scope,
        "p_resource": resource,
        "p_now": utcnow(),
    }
    # An upsert with RETURNING yields the row it inserted or updated, if any.
    try:
        consent_id = statements.run(statement, parameters).scalar()
    except IntegrityError as exc:
        if isinstance(exc.orig, pg_errors.ForeignKeyViolation):
            raise ClientGone(client_id) from None
        raise
    if consent_id is not None:
        audit.record(
            audit.CONSENT_GRANTED,
            user_id=key,
            client_id=client_id,
            scope=scope,
            resource=resource,
        )
    return consent_id


def deny(user_id: uuid.UUID, client_id: str, scope: str, resource: str) -> None:
    """Record that the person refused ``client_id`` the ``scope`` it asked for."""
    audit.record(
        audit.CONSENT_DENIED,
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        resource=resource,
    )


def narrow(scopes: Iterable[str], consent_scope: str | None) -> list[str]:
    """What was issued under a consent may still yield: ``scopes`` less any
    the consent (space-separated) no longer holds.

    A consent approved again with fewer scopes is narrowed in place; a
    refresh chain or a client's API key from before then yields no more than
    it holds now. ``None``: no consent limits them (a key the person made on
    the account page).
    """
    return within(scopes, consent_scope)


@dataclass(frozen=True)
class LiveConsent:
    """The enabled person holding a live consent, and what it allows today."""

    user_id: uuid.UUID
    scope: str


def live_consent_holder(
    user_id: str, consent_id: str, client_id: str
) -> LiveConsent | None:
    """The enabled person whose consent ``consent_id`` is still live.

    One query, run when a code is redeemed or a device approval is taken.
    The same statement records that ``client_id`` has been used, which
    spares it from pruning (:mod:`.client_use`).
    """
    user_key, consent_key = _uuid(user_id), _uuid(consent_id)
    if user_key is None or consent_key is None:
        return None
    parameters = {
        "p_user": user_key,
        "p_consent": consent_key,
        **client_use.parameters(client_id, utcnow()),
    }
    row = statements.run(
        statements.prepared(statements.holder_marking_client), parameters
    ).first()
    if row is None:
        return None
    return LiveConsent(row.id, row.scope)


def consents_page(user_id: uuid.UUID, number: int) -> Page[Consent]:
    """Page ``number`` of the person's live consents with their clients,
    newest first."""
    where = [Consent.user_id == user_id, Consent.revoked_at.is_(None)]
    rows = (
        select(Consent)
        .options(joinedload(Consent.client))
        .where(*where)
        .order_by(Consent.approved_at.desc(), Consent.id)
    )
    return paginate(rows, where, number)


def keep_only(resource: str, scopes: list[str]) -> None:
    """Narrow every live consent for ``resource`` to ``scopes``, the scopes
    an operator left it: what was issued under them then yields no more."""
    db.session.execute(_KEEP_ONLY, {"resource": resource, "kept": scopes})


#: Each consent's scopes in their order, less those not kept.
_KEEP_ONLY = text(
    "UPDATE consents SET scope = coalesce((SELECT string_agg(s, ' ' ORDER BY n)"
    " FROM unnest(string_to_array(consents.scope, ' ')) WITH ORDINALITY AS t(s, n)"
    " WHERE s = ANY(CAST(:kept AS text[]))), '')"
    " WHERE resource = :resource AND revoked_at IS NULL"
)


def withdraw(user_id: uuid.UUID, consent_id: uuid.UUID, actor: audit.Actor) -> bool:
    """End one of ``user_id``'s consents and everything issued under it.

    RFC 7009 §2.1 and RFC 9700 §4.14.2: the whole grant goes: its access
    tokens (the consent's id is denied), its refresh chains, and the API keys
    its client made, with the tokens exchanged from them. Denied before the
    caller commits. ``actor`` ended it: the person, the client (revoking a
    refresh token), an operator or the service (a replay or a reuse). Tell
    whether the consent was live.
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
    if client_id is not None:
        key_ids = revoke_all(ApiKey.consent_id == consent_id)
        deny_consent(str(consent_id))
        db.after_commit(
            lambda: audit.record(
                audit.CONSENT_REVOKED,
                actor,
                user_id=user_id,
                client_id=client_id,
                consent_id=consent_id,
                api_key_ids=key_ids,
            )
        )
        _end_chains(consent_id)
    return client_id is not None


def _end_chains(consent_id: uuid.UUID) -> None:
    """Mark the heads of a withdrawn consent's chains revoked.

    Only the heads, the tokens not rotated out (one per chain), are written,
    found by ``ix_refresh_tokens_consent_id_rotated_at`` without reading the
    rest of the chain. Every token of the chain is refused from now on by
    the consent's own ``revoked_at``, which each use, reuse check and
    revocation reads (:mod:`.refresh_store`, :mod:`.refresh_liveness`): a
    rotated-out token presented later finds no live chain, and ends nothing.
    """
    db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.consent_id == consent_id,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=func.now())
        .execution_options(synchronize_session=False)
    )


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
