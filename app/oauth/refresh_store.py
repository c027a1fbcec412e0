"""Refresh tokens in Postgres: issue, consume atomically, find rotated.

A chain is one consent's refresh lineage for one resource (docs/reference.md,
"Refresh tokens"); withdrawing the consent ends it (:func:`.consent.withdraw`).
Tokens are opaque (256 random bits) and stored only as SHA-256 hashes. A
repeat inside the grace window is answered from the rotation's answer, sealed
beside the successor (:mod:`.refresh_seal`). What a chain grants is capped,
on every use, at what the person's consent holds now.

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import aliased

from ..db import db
from ..models import Consent, RefreshToken, User
from .consent import narrow
from .refresh_seal import RotationAnswer, seal
from .scopes import OFFLINE_ACCESS

#: 32 bytes: 256 random bits.
TOKEN_BYTES = 32
#: Longest string worth hashing; ours are 43 characters.
MAX_TOKEN_LENGTH = 128


def new_refresh_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_plausible(token: Any) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH


@dataclass(frozen=True)
class RefreshRecord:
    """A refresh token just consumed (or repeated in the grace window).

    It has the token interface Authlib's RefreshTokenGrant expects. ``scope``
    is the chain's scope capped at the consent's current one.
    """

    id: uuid.UUID
    consent_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID
    scope: str
    #: The URI of the resource the chain's tokens are for; it never changes.
    resource: str
    chain_expires_at: datetime
    #: What the rotation answered, when this is a repeat in the grace window.
    grace_answer: RotationAnswer | None = None

    def check_client(self, client: Any) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        # What a refresh may ask for: the chain's scope, and offline_access,
        # which is accepted and never granted.
        return f"{self.scope} {OFFLINE_ACCESS}"


def _live_chain(token_hash: str, client_id: str, idle_ttl: int | None) -> list[Any]:
    """Conditions under which a token's chain is still usable."""
    now = func.now()
    idle = (
        [RefreshToken.issued_at > now - timedelta(seconds=idle_ttl)]
        if idle_ttl is not None
        else []
    )
    return [
        RefreshToken.token_hash == token_hash,
        RefreshToken.client_id == client_id,
        RefreshToken.revoked_at.is_(None),
        RefreshToken.chain_expires_at > now,
        *idle,
        Consent.id == RefreshToken.consent_id,
        Consent.revoked_at.is_(None),
        User.id == RefreshToken.user_id,
        User.is_active.is_(True),
    ]


#: What :func:`record_of` reads, by these names.
RECORD_COLUMNS = (
    RefreshToken.id,
    RefreshToken.consent_id,
    RefreshToken.client_id,
    RefreshToken.user_id,
    RefreshToken.scope,
    RefreshToken.resource,
    RefreshToken.chain_expires_at,
    Consent.scope.label("consent_scope"),
)


def record_of(row: Any) -> RefreshRecord:
    # The consent may have been narrowed since the chain began (approved
    # again with fewer scopes); the chain never grants more than it holds.
    scope = " ".join(narrow(row.scope.split(), row.consent_scope))
    return RefreshRecord(
        id=row.id,
        consent_id=row.consent_id,
        client_id=row.client_id,
        user_id=row.user_id,
        scope=scope,
        resource=row.resource,
        chain_expires_at=row.chain_expires_at,
    )


def _scopes_cover(column: Any, requested: list[str]) -> Any:
    as_array = func.string_to_array(column, " ", type_=ARRAY(Text))
    return as_array.contains(cast(requested, ARRAY(Text)))


def consume(
    token: str,
    client_id: str,
    idle_ttl: int,
    requested: list[str],
    resource: str | None = None,
) -> RefreshRecord | None:
    """Rotate out ``token`` if it is live, covers ``requested`` and (when
    given) is for ``resource``.

    One conditional UPDATE, so of concurrent uses exactly one wins (the
    others wait on the row lock and then see it rotated). A request it would
    refuse leaves the token untouched (RFC 6749 §5.2).
    """
    conditions: list[Any] = [RefreshToken.rotated_at.is_(None)]
    if resource is not None:
        conditions.append(RefreshToken.resource == resource)
    if requested:
        conditions += [
            _scopes_cover(RefreshToken.scope, requested),
            _scopes_cover(Consent.scope, requested),
        ]
    row = db.session.execute(
        update(RefreshToken)
        .where(*conditions, *_live_chain(hash_token(token), client_id, idle_ttl))
        .values(rotated_at=func.now(), last_used_at=func.now())
        .returning(*RECORD_COLUMNS)
        .execution_options(synchronize_session=False)
    ).first()
    return record_of(row) if row is not None else None


@dataclass(frozen=True)
class Unconsumed:
    """A token of a live chain that :func:`consume` did not rotate, and why."""

    record: RefreshRecord
    #: Unused for longer than the idle lifetime (and not rotated).
    idle: bool
    #: ``None`` if it was never rotated out.
    seconds_since_rotation: float | None
    sealed_answer: str | None
    #: Its successor was itself used: its holder received the rotation.
    successor_used: bool


def find_unconsumed(token: str, client_id: str, idle_ttl: int) -> Unconsumed | None:
    """``token`` of a live chain of ``client_id``, with its successor, if any."""
    child = aliased(RefreshToken)
    now = func.now()
    row = db.session.execute(
        select(
            *RECORD_COLUMNS,
            (RefreshToken.issued_at <= now - timedelta(seconds=idle_ttl)).label("idle"),
            func.extract("epoch", now - RefreshToken.rotated_at).label("since"),
            child.sealed.label("successor_sealed"),
            child.rotated_at.is_not(None).label("successor_used"),
        )
        .outerjoin(child, child.parent_id == RefreshToken.id)
        # Once rotated, idle time counts from the successor's issue.
        .where(*_live_chain(hash_token(token), client_id, None))
    ).first()
    if row is None:
        return None
    since = row.since
    return Unconsumed(
        record_of(row),
        bool(row.idle) and since is None,
        None if since is None else float(since),
        row.successor_sealed,
        bool(row.successor_used),
    )


def issue(
    token: str,
    *,
    consent_id: uuid.UUID,
    client_id: str,
    user_id: uuid.UUID,
    scope: str,
    resource: str,
    chain_expires_at: datetime,
    parent: tuple[uuid.UUID, str] | None = None,
    answer: RotationAnswer | None = None,
    code_jti: str | None = None,
) -> None:
    """Store a new token of a chain: one INSERT.

    ``parent`` is the rotated-out token's id and plaintext, under which
    ``answer`` (this token and the access token issued with it) is sealed
    for the grace window.
    """
    db.session.execute(
        insert(RefreshToken).values(
            id=uuid.uuid4(),
            token_hash=hash_token(token),
            consent_id=consent_id,
            client_id=client_id,
            user_id=user_id,
            scope=scope,
            resource=resource,
            parent_id=parent[0] if parent else None,
            sealed=seal(answer, parent[1]) if parent and answer else None,
            code_jti=code_jti,
            issued_at=func.now(),
            chain_expires_at=chain_expires_at,
        )
    )


def chain_of_code(code_jti: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The person and consent of the chain a code produced, if it produced one."""
    row = db.session.execute(
        select(RefreshToken.user_id, RefreshToken.consent_id)
        .where(RefreshToken.code_jti == code_jti)
        .limit(1)
    ).first()
    return (row.user_id, row.consent_id) if row is not None else None


def last_refreshed(consent_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When each consent's chain was last used, for the account page.

    One row read per consent (its newest rotation, from the end of
    ``ix_refresh_tokens_consent_id_rotated_at``), however long its chains.
    """
    if not consent_ids:
        return {}
    newest = (
        select(RefreshToken.rotated_at)
        .where(
            RefreshToken.consent_id == Consent.id,
            RefreshToken.rotated_at.is_not(None),
        )
        .order_by(RefreshToken.rotated_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Consent.id, newest.label("last_rotated_at")).where(
            Consent.id.in_(consent_ids)
        )
    )
    return {
        row.id: row.last_rotated_at for row in rows if row.last_rotated_at is not None
    }
