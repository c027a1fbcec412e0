"""The one kind of per-process cache: bounded, frozen values, one eviction rule.

A process keeps a few things it has read or verified, so that the next
request needs no round trip for them: registered clients
(app/oauth/clients.py), the registry of resources (app/oauth/resources.py),
access tokens whose signature verified (app/oauth/tokens.py) and accounts'
emails (app/mcp/tools.py). Each is a
:class:`ProcessCache`, handed out by :func:`app.denylist.process_cache`, and an
entry leaves it by this rule, the same for all:

- at its expiry, the ``until`` it was put with (a Unix time; none: never);
- when an eviction of its key is announced (:func:`app.denylist.evict`) on
  the denylist's pub/sub channel, which every process's copy of the denylist
  follows (app/denylist_view.py);
- with the whole cache, whenever that copy (re)loads: announcements may have
  been missed meanwhile. While the copy is not current, no cache is handed
  out at all, and callers read the source;
- when the cache is full: then the oldest quarter goes.

A value read from the source before an eviction and put after it would undo
the eviction; a caller that reads first passes ``since``, the cache's
:attr:`ProcessCache.generation` before its read, and a put after any eviction
or clearing meanwhile is dropped.

Each cache says, where it is used, how its data may change and which of
these rules keeps it true: a client's registration changes only by being
pruned or, for a service client, revoked (announced; a service client's
row also expires after 30 seconds, app/oauth/clients.py), the registry
only by the ``resources`` commands (announced), a verified token never
changes (it expires), an email may change (it expires after minutes).
Values are frozen (frozen dataclasses, strings, tuples): every request of
the process shares them, so none may change one; a new value is put in its
place.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessCache(Generic[K, V]):
    """A bounded map of frozen values, each with an optional expiry."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[K, tuple[V, float]] = {}
        self._lock = threading.Lock()
        #: Counts evictions and clearings, for :meth:`put`'s ``since``.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The live value at ``key``, or ``None``."""
        found = self._entries.get(key)
        if found is None:
            return None
        value, until = found
        if until <= time.time():
            self._entries.pop(key, None)
            return None
        return value

    def put(
        self, key: K, value: V, until: float = math.inf, since: int | None = None
    ) -> None:
        """Keep ``value`` at ``key`` until the Unix time ``until``; unless an
        eviction came after ``since`` (a :attr:`generation`)."""
        with self._lock:
            if since is not None and since != self.generation:
                return
            if key not in self._entries and len(self._entries) >= self.size:
                # Dicts keep insertion order: the oldest quarter, not one per put.
                for stale in list(self._entries)[: max(1, self.size // 4)]:
                    del self._entries[stale]
            self._entries[key] = (value, until)

    def evict(self, key: K) -> None:
        """Forget ``key`` (an announced eviction)."""
        with self._lock:
            self.generation += 1
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything (the denylist copy reloaded)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
