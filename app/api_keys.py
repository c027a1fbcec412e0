"""API keys: long-lived secrets that their owner exchanges for access tokens.

A key is ``lsk_`` followed by 256 random bits, so secret scanners can spot a
leaked one. It is shown once, when created; Postgres keeps only its SHA-256
and a short prefix for people to recognise it by. The JSON API and the
account page both go through this module.

A key a client makes through the JSON API is bound to the consent it was made
under: the client sees only those keys, counts them against its own quota
(``API_KEY_MAX_PER_APP``), and withdrawing the consent revokes them. Keys made
on the account page belong to no consent and count against the person's own
quota (``MAX_API_KEYS_PER_USER``), which no application can use up
(docs/reference.md, "API keys").

These functions only flush; the caller owns the transaction (:mod:`app.db`).
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from . import audit
from .config import current_settings
from .db import db
from .denylist import deny_api_keys
from .models import ApiKey, Consent, User, utcnow
from .oauth.resources import Resource
from .pagination import Page, paginate

#: Marks our keys so that secret scanners can recognise a leaked one.
KEY_PREFIX = "lsk_"
#: Random bytes in a key: 256 bits.
KEY_BYTES = 32
#: Characters kept in clear: the marker and 8 random ones (48 of the 256 bits),
#: enough to tell keys apart and far too few to help guess the rest.
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
DEFAULT_SCOPES = ("read",)
MAX_NAME_LENGTH = 100
MAX_EXPIRES_IN_DAYS = 3650


class ApiKeyError(ValueError):
    """A key could not be created; the message tells the person why."""


class KeyLimitReached(ApiKeyError):
    """The owner already has as many live keys as allowed."""


class ConsentWithdrawn(ApiKeyError):
    """The consent a client would make the key under is no longer live."""


@dataclass(frozen=True)
class NewKey:
    """A validated request for a key."""

    name: str
    scopes: tuple[str, ...]
    expires_in_days: int | None
    #: The URI of the resource (RFC 8707) its tokens are for.
    resource: str


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
    name: object,
    scopes: object,
    expires_in_days: object,
    resource: Resource,
    *,
    max_days: int = MAX_EXPIRES_IN_DAYS,
    default_days: int | None = None,
) -> NewKey:
    """Check a request for a key for ``resource``; ``None`` means the default.
    Raise ApiKeyError.

    ``default_days`` is the lifetime of a key whose request names none
    (``None``: it never expires); a longer one than ``max_days`` is refused.
    """
    days = _valid_days(expires_in_days, max_days)
    return NewKey(
        _valid_name(name),
        _valid_scopes(scopes, resource.scope_names),
        default_days if days is None else days,
        resource.uri,
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


def _valid_scopes(scopes: object, known: tuple[str, ...]) -> tuple[str, ...]:
    if scopes is None:
        # The least a key can do: one scope, read-only where there is one.
        return DEFAULT_SCOPES if set(DEFAULT_SCOPES) <= set(known) else known[:1]
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s in known for s in scopes)
    ):
        raise ApiKeyError(
            _("Choose at least one scope, from: %(scopes)s.", scopes=", ".join(known))
        )
    return tuple(s for s in known if s in scopes)


def _valid_days(days: object, max_days: int) -> int | None:
    if days is None:
        return None
    # bool is a subclass of int, but "expires_in_days": true is no number of days.
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= max_days:
        raise ApiKeyError(
            _(
                "The lifetime must be a whole number of days from 1 to %(max)d.",
                max=max_days,
            )
        )
    return days


def create_api_key(
    owner_id: uuid.UUID, request: NewKey, consent_id: uuid.UUID | None = None
) -> tuple[ApiKey, str]:
    """Store a new key for ``owner_id``; return the row and the key, shown once.

    With ``consent_id`` the key is a client's, made under that live consent.
    """
    # Lock the owner's row so two concurrent creations cannot both pass the cap.
    db.session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    if consent_id is not None and not _lock_live_consent(owner_id, consent_id):
        raise ConsentWithdrawn(str(consent_id))
    _check_quota(owner_id, consent_id)
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    now = utcnow()
    row = ApiKey(
        id=uuid.uuid4(),
        user_id=owner_id,
        consent_id=consent_id,
        name=request.name,
        key_hash=hash_key(key),
        prefix=key[:DISPLAY_PREFIX_LENGTH],
        scopes=list(request.scopes),
        resource=request.resource,
        created_at=now,
        expires_at=(
            now + timedelta(days=request.expires_in_days)
            if request.expires_in_days
            else None
        ),
    )
    db.session.add(row)
    db.session.flush()
    key_id = row.id
    db.after_commit(lambda: audit.record_api_key(audit.API_KEY_CREATED, key_id))
    return row, key


def _lock_live_consent(owner_id: uuid.UUID, consent_id: uuid.UUID) -> bool:
    # A shared lock until the caller commits: withdrawing the consent (an UPDATE of this
    # row) waits for the new key and then revokes it, or has already happened
    # and the key is refused. Either way no key outlives its consent.
    return (
        db.session.scalar(
            select(Consent.id)
            .where(
                Consent.id == consent_id,
                Consent.user_id == owner_id,
                Consent.revoked_at.is_(None),
            )
            .with_for_update(read=True)
        )
        is not None
    )


def _check_quota(owner_id: uuid.UUID, consent_id: uuid.UUID | None) -> None:
    """Refuse a key beyond its maker's quota of live keys.

    The person's own keys and each application's are counted apart, so no
    application can use up the person's quota or another application's.
    """
    settings = current_settings()
    own = consent_id is None
    cap = settings.max_api_keys_per_user if own else settings.api_key_max_per_app
    if _live_key_count(owner_id, consent_id) < cap:
        return
    if own:
        raise KeyLimitReached(
            _("You already have %(count)d API keys. Revoke one first.", count=cap)
        )
    raise KeyLimitReached(
        _(
            "This application already holds %(count)d API keys for you. "
            "Delete one first.",
            count=cap,
        )
    )


def _live_key_count(owner_id: uuid.UUID, consent_id: uuid.UUID | None) -> int:
    """Count the owner's keys that are not revoked, made by the person
    themselves (``None``) or under one consent."""
    maker = (
        ApiKey.consent_id.is_(None)
        if consent_id is None
        else ApiKey.consent_id == consent_id
    )
    count = db.session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == owner_id, ApiKey.revoked_at.is_(None), maker)
    )
    return count or 0


def _visible(owner_id: uuid.UUID, consent_id: uuid.UUID | None) -> list[Any]:
    """Conditions for the owner's live keys; only one consent's when one is named."""
    conditions = [ApiKey.user_id == owner_id, ApiKey.revoked_at.is_(None)]
    if consent_id is not None:
        conditions.append(ApiKey.consent_id == consent_id)
    return conditions


def list_api_keys(
    owner_id: uuid.UUID, consent_id: uuid.UUID | None = None
) -> list[ApiKey]:
    """List live keys (expired ones too), newest first.

    Without ``consent_id``, every key of the owner, as the owner sees them,
    each with the client that made it; with it, only the keys a client made
    under that consent.
    """
    query = select(ApiKey).where(*_visible(owner_id, consent_id))
    if consent_id is None:
        query = query.options(joinedload(ApiKey.consent).joinedload(Consent.client))
    return list(db.session.scalars(query.order_by(ApiKey.created_at.desc())))


def api_keys_page(owner_id: uuid.UUID, number: int) -> Page[ApiKey]:
    """Page ``number`` of the owner's live keys, as :func:`list_api_keys`
    lists them without a consent."""
    where = _visible(owner_id, None)
    rows = (
        select(ApiKey)
        .where(*where)
        .options(joinedload(ApiKey.consent).joinedload(Consent.client))
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return paginate(rows, where, number)


def revoke(
    owner_id: uuid.UUID, key_id: uuid.UUID, consent_id: uuid.UUID | None = None
) -> bool:
    """Revoke a live key and every token exchanged from it.

    ``consent_id`` narrows the keys that can be revoked as in :func:`list_api_keys`.
    """
    revoked_id = db.session.scalar(
        update(ApiKey)
        .where(ApiKey.id == key_id, *_visible(owner_id, consent_id))
        .values(revoked_at=utcnow())
        .returning(ApiKey.id)
    )
    if revoked_id is None:
        return False
    # Before the caller commits: if Redis fails, the key stays live (app.db).
    deny_api_keys([str(revoked_id)])
    db.after_commit(lambda: audit.record_api_key(audit.API_KEY_REVOKED, revoked_id))
    return True


def revoke_all(*conditions: Any) -> list[str]:
    """Revoke every live key matching ``conditions`` (a withdrawn consent's, a
    removed resource's) and the tokens exchanged from them; return their ids.

    Their audit record is the caller's, which names them all at once.
    """
    key_ids = [
        str(key_id)
        for key_id in db.session.scalars(
            update(ApiKey)
            .where(*conditions, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.id)
        )
    ]
    deny_api_keys(key_ids)
    return key_ids
