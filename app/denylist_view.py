"""Each process's own copy of the denylist, kept current by Redis pub/sub.

Checking a token against Redis costs a round trip on every request; a copy in
memory costs none, but must never be trusted when it may be behind. So:

- every denial is written to Redis *and* published on :data:`CHANNEL` in one
  round trip (:func:`app.denylist`); Redis caches the record in Postgres;
- a thread per process subscribes, makes sure Redis holds every marker
  Postgres records (a Redis that lost them is first rebuilt from Postgres,
  :mod:`app.denylist_rebuild`), then loads every marker with ``SCAN`` (a
  denial published meanwhile is queued on the subscription and applied after),
  and does the same after any reconnect, replacing the whole copy, since a
  restarted Redis may have lost markers or gained new ones;
- the thread pings on the subscription every :data:`PING_INTERVAL`. Redis
  answers in order, so a pong proves every denial published before its ping
  has been applied. The copy is trusted only while the newest pong's ping is
  younger than :data:`TRUST_WINDOW`; otherwise (not loaded yet, disconnected,
  slow) callers fall back to asking Redis directly.

The same channel carries evictions from the per-process caches
(:mod:`app.process_cache`, which states their one rule): :meth:`DenylistView.cache`
hands a cache out only while the copy is current, and every (re)load empties
them all, since evictions may have been missed meanwhile.

A Redis flushed while the copy stays connected loses nothing the copy holds:
it keeps every marker it had, and the next reload waits for the rebuild.

Pub/sub rather than keyspace notifications: those need ``CONFIG SET``, which
managed Redis often forbids, and carry no value. Rather than RESP3 client-side
caching: that caches only keys once read, so a first look-up still costs a
round trip per token, and it cannot say the copy is complete.

The thread starts on first use, so under gunicorn each worker starts its own
after the fork, and stops after :data:`IDLE_STOP` without a look-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from .process_cache import ProcessCache

#: Where denials are announced; each message is ``"<ttl> <key> <value>"``.
CHANNEL = "denylist:announce"
#: Every marker key starts with this.
KEY_PREFIX = "denied:"
#: Announcements whose key starts with this evict an entry from a named cache.
EVICT_PREFIX = "evict:"
#: Marks our pings' payloads (redis-py sends health-check pings of its own).
PONG_PREFIX = "denylist-view:"
#: Seconds between pings on the subscription.
PING_INTERVAL = 0.1
#: The copy is trusted while it is provably no older than this (seconds).
TRUST_WINDOW = 0.5
#: Seconds to wait before reconnecting after a failure.
RECONNECT_DELAY = 0.2
#: Seconds without a look-up after which the thread stops (restarted on use).
IDLE_STOP = 60.0
#: Seconds between sweeps of entries whose markers have expired.
SWEEP_INTERVAL = 30.0

log = logging.getLogger(__name__)


def announcement(key: str, value: str, ttl: int) -> str:
    """The message that tells every view about a marker just written."""
    return f"{ttl} {key} {value}"


def eviction(cache: str, entries: list[str]) -> str:
    """The one message that removes ``entries`` from every process's cache
    ``cache``: one a line (no entry holds a line break)."""
    if any("\n" in entry for entry in entries):
        raise ValueError("an evicted entry holds a line break")
    return announcement(EVICT_PREFIX + cache, "\n".join(entries), 0)


class _Idle(Exception):
    """Nobody looked anything up for a while: stop following."""


class DenylistView:
    """An in-memory copy of the ``denied:*`` markers; see the module's text."""

    def __init__(
        self,
        client: redis.Redis,
        max_ttl: int,
        ensure_rebuilt: Callable[[threading.Event], str | None],
    ) -> None:
        self._client = client
        self._max_ttl = max_ttl
        #: Returns once Redis holds every marker Postgres records, naming that
        #: rebuild (:mod:`app.denylist_rebuild`).
        self._ensure_rebuilt = ensure_rebuilt
        #: key -> (value, monotonic time after which the marker is gone)
        self._markers: dict[str, tuple[str, float]] = {}
        self._caches: dict[str, ProcessCache[Any, Any]] = {}
        self._current_as_of = float("-inf")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopped = threading.Event()
        self._last_used = time.monotonic()

    def lookup(self, keys: Iterable[str]) -> list[str | None] | None:
        """The markers' values, or ``None`` if the copy cannot be trusted now."""
        self._ensure_started()
        self._last_used = time.monotonic()
        if time.monotonic() - self._current_as_of > TRUST_WINDOW:
            return None
        markers = self._markers
        return [markers.get(key, (None, 0.0))[0] for key in keys]

    def cache(self, name: str, size: int) -> ProcessCache[Any, Any] | None:
        """The process cache ``name``, or ``None`` while evictions may be missed."""
        self._ensure_started()
        self._last_used = time.monotonic()
        if time.monotonic() - self._current_as_of > TRUST_WINDOW:
            return None
        cache = self._caches.get(name)
        if cache is None:
            cache = self._caches.setdefault(name, ProcessCache(size))
        return cache

    def is_current(self) -> bool:
        return time.monotonic() - self._current_as_of <= TRUST_WINDOW

    def stop(self, wait: float = 0.0) -> None:
        """Stop following; wait up to ``wait`` seconds for the thread to end."""
        self._stopped.set()
        thread = self._thread
        if wait and thread is not None and thread.is_alive():
            thread.join(wait)

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # After a fork the parent's thread is gone and its copy unproven.
            self._current_as_of = float("-inf")
            self._thread = threading.Thread(
                target=self._run, name="denylist-view", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._follow()
            except _Idle:
                with self._lock:
                    self._current_as_of = float("-inf")
                    self._pid = 0  # the next look-up starts a fresh thread
                return
            except (redis.RedisError, SQLAlchemyError, OSError, ValueError) as exc:
                # Once per outage, not once per retry.
                if self._current_as_of != float("-inf"):
                    log.warning("denylist view behind: %s", type(exc).__name__)
            self._current_as_of = float("-inf")
            self._stopped.wait(RECONNECT_DELAY)

    def _follow(self) -> None:
        pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            # Load only once subscribed, or a denial could fall between the two.
            confirmed = pubsub.get_message(timeout=PING_INTERVAL * 20)
            if confirmed is None or confirmed.get("type") != "subscribe":
                raise redis.ConnectionError("no subscription confirmation")
            # A Redis that restarted, failed over or was flushed must get back
            # what Postgres records before the copy is trusted again; and it
            # must not have lost it again while being loaded.
            rebuilt = self._ensure_rebuilt(self._stopped)
            self._markers = self._load()
            if self._ensure_rebuilt(self._stopped) != rebuilt:
                raise redis.ConnectionError("Redis lost its data while loaded")
            for cache in list(self._caches.values()):
                cache.clear()
            next_sweep = time.monotonic() + SWEEP_INTERVAL
            while not self._stopped.is_set():
                pubsub.ping(PONG_PREFIX + str(time.monotonic()))
                deadline = time.monotonic() + PING_INTERVAL
                while (left := deadline - time.monotonic()) > 0:
                    message = pubsub.get_message(timeout=left)
                    if message is not None:
                        self._apply(message)
                if time.monotonic() - self._last_used > IDLE_STOP:
                    raise _Idle
                if time.monotonic() > next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + SWEEP_INTERVAL
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def _load(self) -> dict[str, tuple[str, float]]:
        # TTLs are not read: keeping a marker up to the longest TTL is safe,
        # since every marker outlives the tokens it covers (app.denylist).
        expires = time.monotonic() + self._max_ttl
        markers: dict[str, tuple[str, float]] = {}
        batch: list[str] = []
        for key in self._client.scan_iter(match=KEY_PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._load_batch(batch, expires, markers)
                batch = []
        self._load_batch(batch, expires, markers)
        return markers

    def _load_batch(
        self, keys: list[str], expires: float, into: dict[str, tuple[str, float]]
    ) -> None:
        if keys:
            values: list[str | None] = self._client.mget(keys)  # type: ignore[assignment]
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    into[key] = (value, expires)

    def note(self, key: str, value: str, ttl: int) -> None:
        """Take a marker this process just wrote, before its announcement returns.

        So the instance that made a denial enforces it from its next request;
        the announcement brings it (again) a moment later, and to the others.
        """
        self._markers[key] = (value, time.monotonic() + min(ttl, self._max_ttl))

    def _apply(self, message: dict) -> None:
        kind, data = message.get("type"), message.get("data")
        if kind == "pong" and str(data).startswith(PONG_PREFIX):
            # The ping's own payload comes back: when it was sent.
            self._current_as_of = float(str(data)[len(PONG_PREFIX) :])
        elif kind == "message":
            ttl, key, value = str(data).split(" ", 2)
            if key.startswith(EVICT_PREFIX):
                cache = self._caches.get(key[len(EVICT_PREFIX) :])
                if cache is not None:
                    for entry in value.split("\n"):
                        cache.evict(entry)
                return
            expires = time.monotonic() + min(int(ttl), self._max_ttl)
            self._markers[key] = (value, expires)

    def _sweep(self) -> None:
        now = time.monotonic()
        self._markers = {k: v for k, v in self._markers.items() if v[1] > now}
