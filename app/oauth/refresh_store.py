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

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Interval, Table, Text, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import aliased

from ..db import Prepared, db
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


def _live_chain(idle: bool) -> list[Any]:
    """Conditions under which token ``p_hash`` of ``p_client`` has a usable
    chain; with ``idle``, also used within ``p_idle`` (an interval)."""
    now = func.now()
    idle_condition = (
        [RefreshToken.issued_at > now - bindparam("p_idle", type_=Interval)]
        if idle
        else []
    )
    return [
        RefreshToken.token_hash == bindparam("p_hash"),
        RefreshToken.client_id == bindparam("p_client"),
        RefreshToken.revoked_at.is_(None),
        RefreshToken.chain_expires_at > now,
        *idle_condition,
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


def _scopes_cover(column: Any) -> Any:
    """SQL: ``column``'s space-separated scopes include all of ``p_requested``."""
    as_array = func.string_to_array(column, " ", type_=ARRAY(Text))
    return as_array.contains(bindparam("p_requested", type_=ARRAY(Text)))


def _run(statement: Prepared, parameters: dict[str, Any]) -> Any:
    # On the session's connection: the statements below are built and
    # compiled once with parameters, so each use skips SQLAlchemy's
    # construction, compilation and the ORM's per-statement work, which cost
    # more CPU than Postgres spends on them.
    return db.run(statement, parameters)


@functools.cache
def _consuming(by_resource: bool, by_scope: bool) -> Prepared:
    """The conditional UPDATE of :func:`consume`, in each of its shapes."""
    table = cast(Table, RefreshToken.__table__)
    conditions: list[Any] = [RefreshToken.rotated_at.is_(None)]
    if by_resource:
        conditions.append(RefreshToken.resource == bindparam("p_resource"))
    if by_scope:
        conditions += [_scopes_cover(RefreshToken.scope), _scopes_cover(Consent.scope)]
    return Prepared(
        update(table)
        .where(*conditions, *_live_chain(idle=True))
        .values(rotated_at=func.now(), last_used_at=func.now())
        .returning(*RECORD_COLUMNS)
    )


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
    parameters: dict[str, Any] = {
        "p_hash": hash_token(token),
        "p_client": client_id,
        "p_idle": timedelta(seconds=idle_ttl),
    }
    if resource is not None:
        parameters["p_resource"] = resource
    if requested:
        parameters["p_requested"] = list(requested)
    statement = _consuming(resource is not None, bool(requested))
    row = _run(statement, parameters).first()
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


@functools.cache
def _finding_unconsumed() -> Prepared:
    child = aliased(RefreshToken)
    now = func.now()
    idle_since = now - bindparam("p_idle", type_=Interval)
    statement = (
        select(
            *RECORD_COLUMNS,
            (RefreshToken.issued_at <= idle_since).label("idle"),
            func.extract("epoch", now - RefreshToken.rotated_at).label("since"),
            child.sealed.label("successor_sealed"),
            child.rotated_at.is_not(None).label("successor_used"),
        )
        .outerjoin(child, child.parent_id == RefreshToken.id)
        # Once rotated, idle time counts from the successor's issue.
        .where(*_live_chain(idle=False))
    )
    return Prepared(statement)


def find_unconsumed(token: str, client_id: str, idle_ttl: int) -> Unconsumed | None:
    """``token`` of a live chain of ``client_id``, with its successor, if any."""
    parameters = {
        "p_hash": hash_token(token),
        "p_client": client_id,
        "p_idle": timedelta(seconds=idle_ttl),
    }
    row = _run(_finding_unconsumed(), parameters).first()
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
    _run(
        _inserting(),
        {
            "id": uuid.uuid4(),
            "token_hash": hash_token(token),
            "consent_id": consent_id,
            "client_id": client_id,
            "user_id": user_id,
            "scope": scope,
            "resource": resource,
            "parent_id": parent[0] if parent else None,
            "sealed": seal(answer, parent[1]) if parent and answer else None,
            "code_jti": code_jti,
            "chain_expires_at": chain_expires_at,
        },
    )


@functools.cache
def _inserting() -> Prepared:
    """One token's row; every column a parameter of its own name but
    ``issued_at``, Postgres's ``now()``."""
    table = cast(Table, RefreshToken.__table__)
    names = (
        "id",
        "token_hash",
        "consent_id",
        "client_id",
        "user_id",
        "scope",
        "resource",
        "parent_id",
        "sealed",
        "code_jti",
        "chain_expires_at",
    )
    values = {name: bindparam(name, type_=table.c[name].type) for name in names}
    return Prepared(insert(table).values(**values, issued_at=func.now()))


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
