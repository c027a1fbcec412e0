"""Refresh tokens in Postgres: issue, consume atomically, find rotated, end chains.

A chain is one consent's refresh lineage (CONTRACT §10). Tokens are opaque
(256 random bits) and stored only as SHA-256 hashes. To answer a repeated
refresh inside the grace window with the *same* successor, the successor's
plaintext is kept sealed (AES-GCM) under a key derived from its parent token:
the database alone cannot unseal it, only someone presenting the parent can,
and nothing needs to live in Redis, which may be restarted (CONTRACT §10).

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import aliased

from ..db import db
from ..models import Consent, OAuthClient, RefreshToken, User, utcnow
from .constants import OFFLINE_ACCESS

#: 32 bytes: 256 random bits (CONTRACT §10).
TOKEN_BYTES = 32
#: Longest string worth hashing; ours are 43 characters.
MAX_TOKEN_LENGTH = 128
_SEAL_LABEL = b"refresh-token-successor"


def new_refresh_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_plausible(token: Any) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH


def _seal_key(parent_token: str) -> bytes:
    # A keyed derivation, not the stored hash: the hash cannot unseal.
    return hmac.new(parent_token.encode(), _SEAL_LABEL, hashlib.sha256).digest()


def seal(successor: str, parent_token: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_seal_key(parent_token)).encrypt(nonce, successor.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(sealed: str | None, parent_token: str) -> str | None:
    if not sealed:
        return None
    raw = base64.urlsafe_b64decode(sealed.encode())
    try:
        plain = AESGCM(_seal_key(parent_token)).decrypt(raw[:12], raw[12:], None)
    except InvalidTag:
        return None
    return plain.decode()


@dataclass
class RefreshRecord:
    """A refresh token just consumed (or repeated in the grace window).

    It has the token interface Authlib's RefreshTokenGrant expects.
    """

    id: uuid.UUID
    consent_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID
    scope: str
    chain_expires_at: datetime
    #: The successor already issued, when this is a repeat in the grace window.
    grace_successor: str | None = field(default=None)

    def check_client(self, client: Any) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        # What a refresh may ask for: the chain's scope, and offline_access,
        # which is accepted and never granted (CONTRACT §10).
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


_RECORD_COLUMNS = (
    RefreshToken.id,
    RefreshToken.consent_id,
    RefreshToken.client_id,
    RefreshToken.user_id,
    RefreshToken.scope,
    RefreshToken.chain_expires_at,
)


def consume(token: str, client_id: str, idle_ttl: int) -> RefreshRecord | None:
    """Rotate out ``token`` if it is live: one conditional UPDATE, so of
    concurrent uses exactly one wins (the others wait on the row lock and then
    see it rotated)."""
    row = db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.rotated_at.is_(None),
            *_live_chain(hash_token(token), client_id, idle_ttl),
        )
        .values(rotated_at=func.now(), last_used_at=func.now())
        .returning(*_RECORD_COLUMNS)
        .execution_options(synchronize_session=False)
    ).first()
    return RefreshRecord(*row) if row is not None else None


@dataclass(frozen=True)
class Rotated:
    """A token of a live chain that was already rotated out."""

    record: RefreshRecord
    seconds_since: float
    sealed_successor: str | None


def find_rotated(token: str, client_id: str) -> Rotated | None:
    """The rotated-out ``token`` of a live chain, with its successor, if any."""
    child = aliased(RefreshToken)
    row = db.session.execute(
        select(
            *_RECORD_COLUMNS,
            func.extract("epoch", func.now() - RefreshToken.rotated_at),
            child.sealed,
        )
        .outerjoin(child, child.parent_id == RefreshToken.id)
        .where(
            RefreshToken.rotated_at.is_not(None),
            # Idle time counts from the successor's issue, not this token's.
            *_live_chain(hash_token(token), client_id, None),
        )
    ).first()
    if row is None:
        return None
    return Rotated(RefreshRecord(*row[:6]), float(row[6]), row[7])


def issue(
    token: str,
    *,
    consent_id: uuid.UUID,
    client_id: str,
    user_id: uuid.UUID,
    scope: str,
    chain_expires_at: datetime,
    parent: tuple[uuid.UUID, str] | None = None,
    code_jti: str | None = None,
    mark_client: bool = False,
) -> None:
    """Store a new token of a chain: one INSERT.

    ``parent`` is the rotated-out token's id and plaintext, to seal this one
    for the grace window. ``mark_client`` records, in the same statement, that
    the client completed an authorization (as ``mark_authorized`` does).
    """
    statement = insert(RefreshToken).values(
        id=uuid.uuid4(),
        token_hash=hash_token(token),
        consent_id=consent_id,
        client_id=client_id,
        user_id=user_id,
        scope=scope,
        parent_id=parent[0] if parent else None,
        sealed=seal(token, parent[1]) if parent else None,
        code_jti=code_jti,
        issued_at=func.now(),
        chain_expires_at=chain_expires_at,
    )
    if mark_client:
        # Postgres runs a data-modifying WITH once, read or not.
        marked = (
            update(OAuthClient)
            .where(
                OAuthClient.client_id == client_id,
                OAuthClient.last_authorized_at.is_(None),
            )
            .values(last_authorized_at=utcnow())
            .returning(OAuthClient.client_id)
            .cte("marked")
        )
        statement = statement.add_cte(marked)
    db.session.execute(statement)


def chain_of_code(code_jti: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The person and consent of the chain a code produced, if it produced one."""
    row = db.session.execute(
        select(RefreshToken.user_id, RefreshToken.consent_id)
        .where(RefreshToken.code_jti == code_jti)
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def end_chains(consent_id: uuid.UUID) -> None:
    """Mark every refresh token of a consent revoked."""
    db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.consent_id == consent_id,
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=func.now())
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class StoredToken:
    """A refresh token as revocation and introspection see it."""

    record: RefreshRecord
    issued_at: datetime
    expires_at: datetime
    active: bool


def lookup(token: str, idle_ttl: int) -> StoredToken | None:
    """Find ``token`` whoever holds it; ``active`` if it could be used now."""
    if not is_plausible(token):
        return None
    row = db.session.execute(
        select(
            *_RECORD_COLUMNS,
            RefreshToken.issued_at,
            RefreshToken.rotated_at,
            RefreshToken.revoked_at,
            Consent.revoked_at,
            User.is_active,
        )
        .join(Consent, Consent.id == RefreshToken.consent_id)
        .join(User, User.id == RefreshToken.user_id)
        .where(RefreshToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    record = RefreshRecord(*row[:6])
    issued_at, rotated_at, revoked_at, consent_revoked, user_active = row[6:]
    expires_at = min(record.chain_expires_at, issued_at + timedelta(seconds=idle_ttl))
    live = rotated_at is None and revoked_at is None and consent_revoked is None
    return StoredToken(
        record, issued_at, expires_at, live and user_active and expires_at > utcnow()
    )


def last_refreshed(consent_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When each consent's chain was last used, for the account page."""
    if not consent_ids:
        return {}
    rows = db.session.execute(
        select(RefreshToken.consent_id, func.max(RefreshToken.rotated_at))
        .where(
            RefreshToken.consent_id.in_(consent_ids),
            RefreshToken.rotated_at.is_not(None),
        )
        .group_by(RefreshToken.consent_id)
    )
    return {consent_id: moment for consent_id, moment in rows if moment is not None}
