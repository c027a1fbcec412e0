"""Finding a Redis that forgot denials, and rebuilding its markers from Postgres.

Redis may come back without its latest writes: restarted empty, restarted
from a snapshot older than its last writes (a crash after its last save),
failed over to a replica that had not caught up, or flushed. Its markers are
only a cache of the record in Postgres (:mod:`app.denylist_record`), and a
Redis is trusted with denials only once they were rebuilt into it.

A rebuild ends by writing :data:`SENTINEL` as ``"<run_id> <generation>"``.
``run_id`` is the Redis server process's own id (``INFO server``): new at
every start, and different on every replica. A sentinel that is missing
(flushed, new) or names another ``run_id`` (restarted, failed over) shows a
Redis not rebuilt yet. ``generation`` is new at every rebuild, so a writer
can tell whether one happened since it wrote (:mod:`app.denylist`).

One instance rebuilds at a time, holding :data:`LOCK`; the sentinel is set
only while the lock is still its own, so a flush during the rebuild, which
takes the lock with it, means the rebuild has to start again.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import Engine

from . import denylist_record

#: Names the Redis server and rebuild whose markers Redis holds.
SENTINEL = "denylist:rebuilt"
#: Held by the one instance rebuilding; its value is that rebuild's own token.
LOCK = "denylist:rebuilding"
#: Seconds after which a rebuild that died lets another instance take over.
LOCK_SECONDS = 15
#: Markers written per round trip.
BATCH = 1000
#: Seconds between looks while another instance rebuilds.
WAIT = 0.1

# Set the sentinel only if the lock is still ours (no flush since it was taken).
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

log = logging.getLogger(__name__)


def is_rebuilt(sentinel: str | None, server_info: Any) -> bool:
    """Tell whether the Redis that answered ``INFO server`` was rebuilt."""
    return sentinel is not None and sentinel.split(" ")[0] == _run_id(server_info)


def _run_id(server_info: Any) -> str:
    # A Redis that refuses INFO (some managed ones restrict it) names no
    # server: then only a missing sentinel shows that it lost its data.
    if isinstance(server_info, redis.ResponseError):
        return ""
    if isinstance(server_info, Exception):
        raise server_info
    return str(server_info.get("run_id", ""))


def answers(pipeline: Any) -> list[Any]:
    """Run a pipeline whose last command is ``INFO``, which alone may be refused."""
    results: list[Any] = pipeline.execute(raise_on_error=False)
    for result in results[:-1]:
        if isinstance(result, Exception):
            raise result
    return results


class Rebuilder:
    """Checks and rebuilds one Redis's markers from one Postgres."""

    def __init__(self, client: redis.Redis, engine: Engine, window: int) -> None:
        self._client = client
        self._engine = engine
        self._window = window
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    def current(self) -> str | None:
        """The sentinel if Redis holds every marker Postgres records, else ``None``."""
        pipeline = self._client.pipeline(transaction=False)
        pipeline.get(SENTINEL)
        pipeline.info("server")
        sentinel, server_info = answers(pipeline)
        return sentinel if is_rebuilt(sentinel, server_info) else None

    def try_rebuild(self) -> bool:
        """Rebuild, unless another instance is; tell whether this one did."""
        token = secrets.token_hex(16)
        if not self._client.set(LOCK, token, nx=True, ex=LOCK_SECONDS):
            return False
        try:
            pipeline = self._client.pipeline(transaction=False)
            pipeline.info("server")
            run_id = _run_id(answers(pipeline)[0])
            with self._engine.connect() as connection:
                found = denylist_record.markers(
                    connection, self._window, datetime.now(UTC)
                )
            for start in range(0, len(found), BATCH):
                pipeline = self._client.pipeline(transaction=False)
                for marker in found[start : start + BATCH]:
                    pipeline.set(marker.key, marker.value, ex=marker.ttl)
                pipeline.execute()
            sentinel = f"{run_id} {secrets.token_hex(8)}"
            done = self._finish(keys=[LOCK, SENTINEL], args=[token, sentinel])
        except Exception:
            try:
                self._release(keys=[LOCK], args=[token])
            except redis.RedisError:
                pass  # it expires on its own
            raise
        if done:
            log.warning("denylist rebuilt from Postgres: %d marker(s)", len(found))
        return bool(done)

    def ensure(self, stopped: threading.Event) -> str | None:
        """Return the sentinel once Redis is rebuilt (by us or another instance).

        For a background thread: it waits while another instance rebuilds.
        ``None`` if ``stopped`` was set first.
        """
        while not stopped.is_set():
            sentinel = self.current()
            if sentinel is not None:
                return sentinel
            if not self.try_rebuild():
                stopped.wait(WAIT)
        return None
