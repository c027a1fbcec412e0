"""The denylist: the one path by which access tokens end before they expire.

Access tokens are self-contained JWTs, so ending one early means remembering,
until the longest-lived token could expire, what is no longer good. Each
token names what it was issued under, so most entries are plain existence
markers keyed by an id:

- ``jti``: one token (a replayed code's, for instance);
- ``consent_id``: everything issued under one consent, which a re-approval
  replaces with a fresh id, so no time comparison is ever needed;
- ``api_key_id``: everything exchanged from one API key;
- ``client_id``: everything issued to one client (a revoked service client).

Only disabling a person needs a time cutoff, because their tokens share no
id narrower than their ``sub``.

Postgres is the record of every denial (:mod:`app.denylist_record`): a
revoked consent or API key, a disabled person's cut-off, and here a denied
``jti``, each written in the transaction of the change that caused it.
Redis markers, and each process's copy of them (:mod:`app.denylist_view`),
are caches of that record, rebuilt from it whenever Redis is found to have
lost them (:mod:`app.denylist_rebuild`). :func:`is_denied` checks every entry
that could apply to a token: in this process's copy while that copy is
provably current (no round trip), otherwise in one round trip to Redis that
also proves Redis was rebuilt, otherwise in Postgres itself. Every write also
announces the marker to those copies, in the same round trip.

Ordering with Postgres (see :mod:`app.db`): deny here before the database
change commits, so a Redis failure leaves the change uncommitted. After the
commit, one more look tells whether Redis was rebuilt (or lost) meanwhile,
and if so writes the markers again: that rebuild may have read Postgres
before this change was committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from flask import current_app

from . import denylist_record
from .config import current_settings
from .db import db
from .denylist_rebuild import SENTINEL, Rebuilder, answers, is_rebuilt
from .denylist_record import api_key_key, client_key, consent_key, jti_key, user_key
from .denylist_view import CHANNEL, DenylistView, announcement, eviction
from .process_cache import ProcessCache
from .redis_store import get_redis

#: Extra seconds an entry outlives the tokens it covers (clock skew between hosts).
MARKER_MARGIN = 60

log = logging.getLogger(__name__)


def _marker_ttl() -> int:
    return current_settings().access_token_ttl + MARKER_MARGIN


_view_lock = threading.Lock()


def _store(markers: list[tuple[str, str]], ttl: int) -> str | None:
    """Store markers and announce each to every process's copy, in one round trip.

    Return the sentinel Redis held meanwhile (:mod:`app.denylist_rebuild`).
    """
    pipeline = get_redis().pipeline(transaction=False)
    for key, value in markers:
        pipeline.set(key, value, ex=ttl)
        pipeline.publish(CHANNEL, announcement(key, value, ttl))
    pipeline.get(SENTINEL)
    sentinel: str | None = pipeline.execute()[-1]
    return sentinel


def _write(markers: list[tuple[str, str]], ttl: int | None = None) -> None:
    ttl = _marker_ttl() if ttl is None else ttl
    written_under = _store(markers, ttl)
    view = current_app.extensions.get("denylist_view")
    if view is not None:
        for key, value in markers:
            view.note(key, value, ttl)
    db.after_commit(lambda: _confirm(markers, ttl, written_under))


def _confirm(
    markers: list[tuple[str, str]], ttl: int, written_under: str | None
) -> None:
    """Write the markers again unless Redis was and stayed rebuilt since.

    A rebuild that read Postgres before our commit missed them, and a Redis
    that lost its data lost them too; the record is committed by now, so any
    later rebuild finds them.
    """
    pipeline = get_redis().pipeline(transaction=False)
    pipeline.get(SENTINEL)
    pipeline.info("server")
    try:
        sentinel, server_info = answers(pipeline)
        if sentinel != written_under or not is_rebuilt(sentinel, server_info):
            _store(markers, ttl)
    except redis.RedisError as exc:
        # Committed already: a Redis that comes back is rebuilt from Postgres.
        log.warning("denial not confirmed in Redis: %s", type(exc).__name__)


def process_cache(name: str, size: int) -> ProcessCache[Any, Any] | None:
    """This process's cache ``name`` (app/process_cache.py); ``None``: do not cache."""
    return _view().cache(name, size)


def evict(name: str, entries: list[str]) -> None:
    """Drop ``entries`` from every process's cache ``name``: one message."""
    if entries:
        get_redis().publish(CHANNEL, eviction(name, entries))


def _view() -> DenylistView:
    extensions = current_app.extensions
    view = extensions.get("denylist_view")
    if view is None:
        with _view_lock:
            view = extensions.get("denylist_view")
            if view is None:
                rebuilder = Rebuilder(get_redis(), db.engine, _marker_ttl())
                extensions["denylist_rebuilder"] = rebuilder
                view = DenylistView(get_redis(), _marker_ttl(), rebuilder.ensure)
                extensions["denylist_view"] = view
    return view


def _rebuilder() -> Rebuilder:
    _view()
    rebuilder: Rebuilder = current_app.extensions["denylist_rebuilder"]
    return rebuilder


def deny_token(jti: str, expires_at: int | None = None) -> None:
    """Deny one token until it would have expired anyway (``exp``, if known)."""
    now = time.time()
    until = now + _marker_ttl()
    if expires_at is not None:
        until = min(until, expires_at + 1)
    if until > now:
        expiry = datetime.fromtimestamp(until, UTC)
        denylist_record.record_token(db.session, jti, expiry)
        _write([(jti_key(jti), "1")], int(until - now) + 1)


def deny_consent(consent_id: str) -> None:
    """Deny every token issued under the consent ``consent_id``.

    The consent's ``revoked_at``, in the caller's transaction, is the record.
    """
    _write([(consent_key(consent_id), "1")])


def deny_api_keys(key_ids: list[str]) -> None:
    """Deny every token exchanged from each of the API keys ``key_ids``.

    Each key's ``revoked_at``, in the caller's transaction, is the record.
    """
    if key_ids:
        _write([(api_key_key(key_id), "1") for key_id in key_ids])


def deny_clients(client_ids: list[str]) -> None:
    """Deny every token issued to each of ``client_ids``.

    Each client's ``revoked_at``, in the caller's transaction, is the record.
    """
    if client_ids:
        _write([(client_key(client_id), "1") for client_id in client_ids])


def deny_user_until_now(user_id: str) -> None:
    """Deny every token issued so far to ``user_id`` (account disabled).

    The person's ``tokens_cut_off_at`` (:func:`app.users.disable_user`) is the
    record.
    """
    # Tokens carry whole-second ``iat``; the cutoff covers the current second.
    _write([(user_key(user_id), str(int(time.time())))])


def _lookup(keys: list[str]) -> list[str | None] | None:
    """The markers' values from a cache that can be trusted, or ``None``."""
    values = _view().lookup(keys)
    if values is None:
        values = _from_redis(keys)
    if values is None and _rebuilder().try_rebuild():
        values = _from_redis(keys)
    return values


def _from_redis(keys: list[str]) -> list[str | None] | None:
    """The markers' values, or ``None`` if Redis was not rebuilt: one round trip."""
    pipeline = get_redis().pipeline(transaction=False)
    pipeline.mget([*keys, SENTINEL])
    pipeline.info("server")
    values, server_info = answers(pipeline)
    return values[:-1] if is_rebuilt(values[-1], server_info) else None


def is_denied(claims: Mapping[str, Any]) -> bool:
    """Tell whether a token with these (already verified) claims was denied."""
    keys = [jti_key(str(claims.get("jti", ""))), user_key(str(claims.get("sub")))]
    if claims.get("consent_id"):
        keys.append(consent_key(str(claims["consent_id"])))
    if claims.get("api_key_id"):
        keys.append(api_key_key(str(claims["api_key_id"])))
    if claims.get("client_id"):
        keys.append(client_key(str(claims["client_id"])))
    values = _lookup(keys)
    if values is None:
        # Another instance is rebuilding Redis: the record decides meanwhile.
        return denylist_record.is_token_denied(db.session, claims)
    jti_marker, user_cutoff, *markers = values
    if jti_marker is not None or any(marker is not None for marker in markers):
        return True
    return user_cutoff is not None and int(claims.get("iat", 0)) <= int(user_cutoff)


def is_user_denied(user_id: str) -> bool:
    """Tell whether ``user_id`` was disabled within the longest token lifetime."""
    values = _lookup([user_key(user_id)])
    if values is None:
        return denylist_record.is_user_denied(db.session, user_id, _marker_ttl())
    return values[0] is not None
