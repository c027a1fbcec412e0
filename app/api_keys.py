"""API keys: long-lived secrets that their owner exchanges for access tokens.

A key is ``lsk_`` followed by 256 random bits, so secret scanners can spot a
leaked one. It is shown once, when created; Postgres keeps only its SHA-256
and a short prefix for people to recognise it by. The JSON API and the
account page both go through this module.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, current_app
from flask_babel import gettext as _
from redis.exceptions import RedisError
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from .config import current_settings
from .db import db
from .models import ApiKey, User, utcnow
from .oauth.clients import SCOPES
from .oauth.tokens import issue_access_token
from .redis_store import get_redis
from .revocation import revoke_api_key as revoke_api_key_tokens

log = logging.getLogger(__name__)

#: Marks our keys so that secret scanners can recognise a leaked one.
KEY_PREFIX = "lsk_"
#: Random bytes in a key: 256 bits.
KEY_BYTES = 32
#: Characters kept in clear: the marker and 8 random ones (48 of the 256 bits),
#: enough to tell keys apart and far too few to help guess the rest.
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
#: Longer candidates are hashed as the empty string, so a huge body costs no more
#: to check than a short one. A real key is 47 characters.
MAX_CANDIDATE_LENGTH = 256
DEFAULT_SCOPES = ("read",)
MAX_NAME_LENGTH = 100
MAX_EXPIRES_IN_DAYS = 3650
#: ``last_used_at`` is written at most once per key in this many seconds.
LAST_USED_INTERVAL = 60
#: The ``via`` claim of tokens exchanged from a key.
VIA_API_KEY = "api_key"


class ApiKeyError(ValueError):
    """A key could not be created; the message tells the person why."""


class KeyLimitReached(ApiKeyError):
    """The owner already has as many live keys as allowed."""


@dataclass(frozen=True)
class NewKey:
    """A validated request for a key."""

    name: str
    scopes: tuple[str, ...]
    expires_in_days: int | None


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest under which a key is stored."""
    # surrogatepass: a lone surrogate from JSON ("\ud800") must not raise.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def isoformat_utc(moment: datetime | None) -> str | None:
    """Render a timestamp as ISO 8601 in UTC (``2026-01-31T12:00:00Z``)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_id(value: str) -> uuid.UUID | None:
    """Read an id from a URL; ``None`` for anything malformed."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def is_expired(key: ApiKey, now: datetime | None = None) -> bool:
    """Tell whether ``key`` is past its expiry (if it has one)."""
    return key.expires_at is not None and key.expires_at <= (now or utcnow())


def validate_new_key(
    name: object, scopes: object = None, expires_in_days: object = None
) -> NewKey:
    """Check a request for a key; ``None`` means the default. Raise ApiKeyError."""
    return NewKey(
        _valid_name(name), _valid_scopes(scopes), _valid_days(expires_in_days)
    )


def _valid_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ApiKeyError(_("Give the key a name."))
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise ApiKeyError(
            _("The name can be at most %(count)d characters.", count=MAX_NAME_LENGTH)
        )
    # Control characters garble the page, and Postgres refuses NUL and surrogates.
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ApiKeyError(_("The name contains characters that are not allowed."))
    return name


def _valid_scopes(scopes: object) -> tuple[str, ...]:
    if scopes is None:
        return DEFAULT_SCOPES
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s in SCOPES for s in scopes)
    ):
        raise ApiKeyError(
            _("Choose at least one scope, from: %(scopes)s.", scopes=", ".join(SCOPES))
        )
    return tuple(s for s in SCOPES if s in scopes)


def _valid_days(days: object) -> int | None:
    if days is None:
        return None
    # bool is a subclass of int, but "expires_in_days": true is no number of days.
    if (
        isinstance(days, bool)
        or not isinstance(days, int)
        or not 1 <= days <= MAX_EXPIRES_IN_DAYS
    ):
        raise ApiKeyError(
            _(
                "The lifetime must be a whole number of days from 1 to %(max)d.",
                max=MAX_EXPIRES_IN_DAYS,
            )
        )
    return days


def create_api_key(owner_id: uuid.UUID, request: NewKey) -> tuple[ApiKey, str]:
    """Store a new key for ``owner_id``; return the row and the key, shown once."""
    cap = current_settings().max_api_keys_per_user
    # Lock the owner's row so two concurrent creations cannot both pass the cap.
    db.session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    if _live_key_count(owner_id) >= cap:
        db.session.rollback()
        raise KeyLimitReached(
            _("You already have %(count)d API keys. Revoke one first.", count=cap)
        )
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    now = utcnow()
    row = ApiKey(
        id=uuid.uuid4(),
        user_id=owner_id,
        name=request.name,
        key_hash=hash_key(key),
        prefix=key[:DISPLAY_PREFIX_LENGTH],
        scopes=list(request.scopes),
        created_at=now,
        expires_at=(
            now + timedelta(days=request.expires_in_days)
            if request.expires_in_days
            else None
        ),
    )
    db.session.add(row)
    db.session.commit()
    return row, key


def _live_key_count(owner_id: uuid.UUID) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == owner_id, ApiKey.revoked_at.is_(None))
    )


def list_api_keys(owner_id: uuid.UUID) -> list[ApiKey]:
    """List the owner's keys that are not revoked (expired ones too), newest first."""
    return list(
        db.session.scalars(
            select(ApiKey)
            .where(ApiKey.user_id == owner_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc())
        )
    )


def revoke(owner_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Revoke one of the owner's live keys and every token exchanged from it."""
    revoked_id = db.session.scalar(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.user_id == owner_id,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .returning(ApiKey.id)
    )
    if revoked_id is None:
        db.session.rollback()
        return False
    # Mark before committing, so that if Redis fails the key stays live and the
    # person can simply retry; mark again after, to cover a token exchanged by a
    # request that read the key in the moment before the commit.
    revoke_api_key_tokens(str(revoked_id))
    db.session.commit()
    revoke_api_key_tokens(str(revoked_id))
    return True


def exchange(candidate: object) -> tuple[str, dict[str, Any]] | None:
    """Trade a key for an access token; ``None`` for any key that is not good."""
    # Every failure takes the same path: one hash, one indexed lookup, no row.
    if not isinstance(candidate, str) or len(candidate) > MAX_CANDIDATE_LENGTH:
        candidate = ""
    row = db.session.execute(
        select(ApiKey.id, ApiKey.user_id, ApiKey.scopes)
        .join(User, User.id == ApiKey.user_id)
        .where(
            ApiKey.key_hash == hash_key(candidate),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
            User.is_active.is_(True),
        )
    ).first()
    if row is None:
        return None
    return issue_access_token(
        str(row.user_id),
        " ".join(row.scopes),
        {"via": VIA_API_KEY, "api_key_id": str(row.id)},
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
            db.session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow())
            )
            db.session.commit()
    except (RedisError, SQLAlchemyError) as exc:
        db.session.rollback()
        log.warning("could not record API key use: %s", type(exc).__name__)
