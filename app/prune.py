"""Housekeeping: ``flask --app app prune`` deletes the rows nothing needs any more.

Each kind of row has a documented lifetime (docs/reference.md, "What
``prune`` deletes"). A row goes once it is dead, and has been dead for
``older_than`` (the ``--older-than-days``); what the denylist rebuild reads
(:func:`app.denylist_record.markers`: revoked consents, API keys and
clients) is kept at least for the denylist's window, whatever
``older_than`` says:

- refresh tokens: every row of a chain that can no longer be used: expired
  (``chain_expires_at``), ended (``revoked_at``, set when its consent was
  withdrawn) or idle (no unrotated token of the chain issued within
  ``REFRESH_TOKEN_IDLE_TTL``), for ``older_than``. While a chain could still
  be used, every token of it is kept: a rotated-out one presented again is
  reuse, and ends the consent (app/oauth/refresh_liveness.py);
- API keys revoked, or expired, ``older_than`` ago;
- consents withdrawn ``older_than`` ago (with the keys and chains still
  bound to them, which are dead too);
- clients: registered ``older_than`` ago and never used, with no consent
  (as the former ``clients prune`` did); used last ``unused_for`` ago
  (``last_authorized_at``: a code redeemed, a device approval taken, an
  identity assertion exchanged; app/oauth/client_use.py) with no live
  consent and none withdrawn within the window; revoked ``older_than`` ago.
  A service client is never pruned as unused;
- denied tokens, spent assertions and the registration cap's counts past
  their expiry; a count's step also once ``REGISTRATION_CAP_WINDOW`` as
  set now has left it (a deploy may have lengthened the window).

Work goes in batches of ``batch_size`` rows, each its own short
transaction, walking each table's key in order (keyset), so that memory is
bounded by one batch and no row is read twice. Rows another transaction
holds are skipped (``FOR UPDATE SKIP LOCKED``) and left for the next run.

An approval never loses its consent to a client being pruned: the clients
of a batch are locked first, by one statement, and deleted by a second whose
fresh snapshot checks again that no consent refers to them. An approval that
inserted its consent before the lock holds the client's key (its foreign-key
check), so the client is skipped; one committed before the lock is seen by
the second statement, so the client is kept; one that comes after waits for
the batch and then finds the client gone, which the approval answers as for
an unknown client (:class:`app.oauth.consent.ClientGone`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import aliased

from .config import current_settings
from .db import db
from .denylist import MARKER_MARGIN, evict
from .models import (
    ApiKey,
    Consent,
    DeniedToken,
    OAuthClient,
    RefreshToken,
    RegistrationCount,
    SpentAssertion,
    utcnow,
)
from .oauth.clients import CLIENT_CACHE

#: Defaults of the command's options (docs/reference.md).
DEFAULT_OLDER_THAN_DAYS = 7
DEFAULT_UNUSED_DAYS = 180
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class Horizons:
    """The times before which each kind of dead row may go."""

    #: Ended before this: chains, keys, consents, revoked clients.
    ended: datetime
    #: A chain whose newest unrotated token was issued before this is idle.
    idle: datetime
    #: Registered before this and never used.
    registered: datetime
    #: Last used before this, for a client with no live consent.
    unused: datetime
    #: Withdrawn after this: still read by the denylist rebuild.
    denial_window: datetime
    #: A step of the registration count started after this is still summed.
    registration_window: datetime
    now: datetime


def horizons(older_than: timedelta, unused_for: timedelta) -> Horizons:
    settings = current_settings()
    now = utcnow()
    # The denylist rebuilds markers from what was revoked within its window.
    window = timedelta(seconds=settings.access_token_ttl + MARKER_MARGIN)
    ended = now - max(older_than, window)
    return Horizons(
        ended=ended,
        idle=now - timedelta(seconds=settings.refresh_token_idle_ttl) - older_than,
        registered=now - older_than,
        unused=now - max(unused_for, older_than, window),
        denial_window=now - window,
        registration_window=now - timedelta(seconds=settings.registration_cap_window),
        now=now,
    )


@dataclass(frozen=True)
class Kind:
    """One kind of dead row: its table's key and what makes a row dead."""

    name: str
    key: Any
    dead: Callable[[Horizons], ColumnElement[bool]]
    #: Clients: locked first, deleted by a second statement (see the module).
    lock_then_delete: bool = False


def _dead_refresh_token(h: Horizons) -> ColumnElement[bool]:
    # A chain is the tokens sharing a consent and an end (inherited from the
    # first token); its head is the one not rotated. Another chain that
    # happened to share both would only keep more.
    head = aliased(RefreshToken)
    live_head = exists().where(
        head.consent_id == RefreshToken.consent_id,
        head.chain_expires_at == RefreshToken.chain_expires_at,
        head.rotated_at.is_(None),
        head.issued_at > h.idle,
    )
    return or_(
        RefreshToken.chain_expires_at < h.ended,
        RefreshToken.revoked_at < h.ended,
        ~live_head,
    )


def _dead_api_key(h: Horizons) -> ColumnElement[bool]:
    return or_(ApiKey.revoked_at < h.ended, ApiKey.expires_at < h.ended)


def _dead_consent(h: Horizons) -> ColumnElement[bool]:
    return Consent.revoked_at < h.ended


def _dead_client(h: Horizons) -> ColumnElement[bool]:
    any_consent = exists().where(Consent.client_id == OAuthClient.client_id)
    # Live, or withdrawn recently enough that the denylist rebuild reads it.
    needed_consent = exists().where(
        Consent.client_id == OAuthClient.client_id,
        or_(Consent.revoked_at.is_(None), Consent.revoked_at > h.denial_window),
    )
    registered = OAuthClient.service_resource.is_(None) & OAuthClient.revoked_at.is_(
        None
    )
    never_used = and_(
        registered,
        OAuthClient.created_at < h.registered,
        OAuthClient.last_authorized_at.is_(None),
        ~any_consent,
    )
    unused = and_(
        registered,
        OAuthClient.created_at < h.unused,
        OAuthClient.last_authorized_at < h.unused,
        ~needed_consent,
    )
    # A revoked client's row is the record its denial is rebuilt from.
    revoked = and_(OAuthClient.revoked_at < h.ended, ~needed_consent)
    return or_(never_used, unused, revoked)


def _expired(model: Any) -> Callable[[Horizons], ColumnElement[bool]]:
    return lambda h: model.expires_at < h.now


def _dead_count(h: Horizons) -> ColumnElement[bool]:
    # Past its expiry, and left by the window as it is set now: a step
    # counted under a shorter window before a deploy lengthened it still
    # counts (app/oauth/registration_caps.py sums the steps started within it).
    return and_(
        RegistrationCount.expires_at < h.now,
        RegistrationCount.starts_at <= h.registration_window,
    )


#: In this order: a chain or key goes before the consent it is bound to, so
#: deleting a consent cascades to little; a consent before its client.
KINDS = (
    Kind("refresh tokens", RefreshToken.id, _dead_refresh_token),
    Kind("API keys", ApiKey.id, _dead_api_key),
    Kind("consents", Consent.id, _dead_consent),
    Kind("clients", OAuthClient.client_id, _dead_client, lock_then_delete=True),
    Kind("denied tokens", DeniedToken.jti, _expired(DeniedToken)),
    Kind("spent assertions", SpentAssertion.digest, _expired(SpentAssertion)),
    Kind("registration counts", RegistrationCount.starts_at, _dead_count),
)


def count(kind: Kind, h: Horizons) -> int:
    """How many rows of ``kind`` are dead (``--dry-run``)."""
    return db.session.scalar(select(func.count()).where(kind.dead(h))) or 0


@dataclass(frozen=True)
class Batch:
    deleted: list[Any]
    #: The last key looked at, where the next batch starts.
    last: Any
    #: A full batch was found: there may be more.
    more: bool


def _batch(kind: Kind, h: Horizons, after: Any, size: int) -> Batch:
    """Delete one batch of ``kind`` after the key ``after``.

    The caller commits: one transaction a batch.
    """
    table = kind.key.table
    candidates = select(kind.key).where(kind.dead(h)).order_by(kind.key).limit(size)
    if after is not None:
        candidates = candidates.where(kind.key > after)
    candidates = candidates.with_for_update(skip_locked=True)
    if not kind.lock_then_delete:
        statement = delete(table).where(kind.key.in_(candidates.scalar_subquery()))
        deleted = list(db.session.scalars(statement.returning(kind.key)))
        # RETURNING keeps no order: a uuid orders in Python as in Postgres;
        # other keys (text, under a collation) start again from the first,
        # past rows that are all dead and gone.
        uuids = [key for key in deleted if isinstance(key, uuid.UUID)]
        last = max(uuids) if len(uuids) == len(deleted) and uuids else None
        return Batch(deleted, last, len(deleted) >= size)
    locked = list(db.session.scalars(candidates))
    if not locked:
        return Batch([], None, False)
    # A new statement, a new snapshot: an approval committed before the
    # lock is seen now, and keeps its client.
    deleted = list(
        db.session.scalars(
            delete(table).where(kind.key.in_(locked), kind.dead(h)).returning(kind.key)
        )
    )
    return Batch(deleted, locked[-1], len(locked) >= size)


def prune(kind: Kind, h: Horizons, batch_size: int) -> Iterator[int]:
    """Delete every dead row of ``kind``; yield each batch's count."""
    after: Any = None
    while True:
        with db.transaction():
            batch = _batch(kind, h, after, batch_size)
        if kind.lock_then_delete and batch.deleted:
            # One message for the batch, after the commit: a process that
            # read a row meanwhile drops what it read (app/process_cache.py).
            evict(CLIENT_CACHE, [str(key) for key in batch.deleted])
        if batch.deleted:
            yield len(batch.deleted)
        if not batch.more:
            return
        after = batch.last
