"""Whether a refresh token, or the chain it belongs to, could still be used.

A token that could no longer be used, from an old backup or a log, must not
end the grant the person holds today: approving a client again keeps its
consent, so an old chain and today's share it (docs/reference.md, "Refresh
tokens"). Revocation and reuse detection ask here first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from ..db import db
from ..models import Consent, RefreshToken, User
from .refresh_store import (
    RECORD_COLUMNS,
    RefreshRecord,
    hash_token,
    is_plausible,
    record_of,
)


@dataclass(frozen=True)
class StoredToken:
    """A refresh token as revocation sees it."""

    record: RefreshRecord
    #: Its chain is live and it is the current token, or was rotated out
    #: within the grace window and its holder may never have had the successor.
    revocable: bool


def lookup(token: str, idle_ttl: int, grace_seconds: int) -> StoredToken | None:
    """Find ``token`` whoever holds it, and tell whether it can end its chain."""
    if not is_plausible(token):
        return None
    child = aliased(RefreshToken)
    now = func.now()
    current = and_(
        RefreshToken.rotated_at.is_(None),
        RefreshToken.issued_at > now - timedelta(seconds=idle_ttl),
    )
    repeatable = and_(
        RefreshToken.rotated_at > now - timedelta(seconds=grace_seconds),
        child.id.is_not(None),
        child.rotated_at.is_(None),
    )
    revocable = and_(
        RefreshToken.revoked_at.is_(None),
        RefreshToken.chain_expires_at > now,
        Consent.revoked_at.is_(None),
        User.is_active.is_(True),
        or_(current, repeatable),
    )
    row = db.session.execute(
        select(*RECORD_COLUMNS, revocable.label("revocable"))
        .join(Consent, Consent.id == RefreshToken.consent_id)
        .join(User, User.id == RefreshToken.user_id)
        .outerjoin(child, child.parent_id == RefreshToken.id)
        .where(RefreshToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    return StoredToken(record_of(row), bool(row._mapping["revocable"]))


def chain_head_is_live(token_id: uuid.UUID, idle_ttl: int) -> bool:
    """Whether the newest token descending from ``token_id`` is still usable.

    Only called when a rotated-out token comes back (rare): the walk down
    the chain follows the ``parent_id`` index one rotation at a time.
    """
    descendants = (
        select(RefreshToken.id, RefreshToken.rotated_at, RefreshToken.issued_at)
        .where(RefreshToken.parent_id == token_id)
        .cte("descendants", recursive=True)
    )
    child = aliased(RefreshToken)
    descendants = descendants.union_all(
        select(child.id, child.rotated_at, child.issued_at).where(
            child.parent_id == descendants.c.id
        )
    )
    head = exists().where(
        descendants.c.rotated_at.is_(None),
        descendants.c.issued_at > func.now() - timedelta(seconds=idle_ttl),
    )
    return bool(db.session.scalar(select(head)))
