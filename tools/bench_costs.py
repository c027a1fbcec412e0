"""Count what a request costs in Postgres statements and Redis commands.

The servers count, not the app: ``pg_stat_statements`` (the benchmark's
Postgres preloads it) records every statement, and Redis ``MONITOR`` streams
every command, marking those a Lua script runs, so that a script counts as
one round trip and its inner commands are listed beside it. The pings each
process's denylist view sends on its subscription every 0.1 s
(:mod:`app.denylist_view`) are no request's: they are listed apart, and
not counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import redis
from sqlalchemy.engine import make_url

from app.denylist_view import PONG_PREFIX

#: Statements that only open or close a transaction, listed apart.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
#: Redis ends the monitored block with this; it is not counted.
_SENTINEL = "bench-costs-end"
#: The app may still be closing its transaction once the client has the answer.
_SETTLE_SECONDS = 0.3
#: How MONITOR shows a denylist view's own ping (its payload's prefix).
_VIEW_PING = "ping " + PONG_PREFIX

_STATEMENTS = """
SELECT query, calls FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""


@dataclass
class Costs:
    """Statements and commands seen while ``requests`` requests were served."""

    requests: int
    statements: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    script_commands: Counter[str] = field(default_factory=Counter)
    #: Commands no request sent (the denylist views' pings), not counted.
    background: Counter[str] = field(default_factory=Counter)

    def per_request(self, count: int) -> float:
        return count / self.requests

    @property
    def queries(self) -> int:
        return sum(
            calls
            for query, calls in self.statements.items()
            if not query.upper().startswith(TRANSACTION_CONTROL)
        )

    @property
    def transaction_control(self) -> int:
        return sum(self.statements.values()) - self.queries


def _maintenance_connection(database_url: str) -> psycopg.Connection:
    """A connection to the ``postgres`` database of the app's cluster.

    The extension's view lives there, so the app's own schema stays as its
    migrations left it; the counts it shows are the whole cluster's.
    """
    url = make_url(database_url).set(drivername="postgresql", database="postgres")
    conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return conn


class _Monitor(threading.Thread):
    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.connection = redis.Redis.from_url(redis_url)
        self.monitor = self.connection.monitor()
        self.monitor.__enter__()  # MONITOR is on once this returns
        self.commands: Counter[str] = Counter()
        self.script_commands: Counter[str] = Counter()
        self.background: Counter[str] = Counter()

    def run(self) -> None:
        for event in self.monitor.listen():
            command = event["command"]
            if command == f"ECHO {_SENTINEL}":
                break
            name = command.split(" ", 1)[0].lower()
            if command.lower().startswith(_VIEW_PING):
                self.background[name] += 1
            elif event.get("client_type") == "lua":
                self.script_commands[name] += 1
            else:
                self.commands[name] += 1
        self.monitor.__exit__(None, None, None)
        self.connection.close()


def measure(
    database_url: str, redis_url: str, send: Callable[[], object], requests: int
) -> Costs:
    """Call ``send`` ``requests`` times, one after another, and count the cost."""
    database = make_url(database_url).database
    with _maintenance_connection(database_url) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        monitor = _Monitor(redis_url)
        monitor.start()
        for _ in range(requests):
            send()
        time.sleep(_SETTLE_SECONDS)
        control = redis.Redis.from_url(redis_url)
        control.echo(_SENTINEL)
        control.close()
        monitor.join(timeout=10)
        rows = conn.execute(_STATEMENTS, (database,)).fetchall()
    costs = Costs(requests)
    for query, calls in rows:
        costs.statements[" ".join(query.split())] += calls
    costs.commands = monitor.commands
    costs.script_commands = monitor.script_commands
    costs.background = monitor.background
    return costs


def describe(costs: Costs) -> list[str]:
    """Lines naming each statement and command, with how many per request."""
    lines = [
        f"    pg  {costs.per_request(calls):5.2f}  {query[:110]}"
        for query, calls in costs.statements.most_common()
    ]
    lines += [
        f"    redis {costs.per_request(count):5.2f}  {name}"
        for name, count in costs.commands.most_common()
    ]
    lines += [
        f"    redis {costs.per_request(count):5.2f}  {name} (inside a script)"
        for name, count in costs.script_commands.most_common()
    ]
    lines += [
        f"    redis {costs.per_request(count):5.2f}  {name} (the denylist views'"
        " own, not counted)"
        for name, count in costs.background.most_common()
    ]
    return lines or ["    (none)"]
