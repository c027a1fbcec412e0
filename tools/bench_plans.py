"""What Postgres planned for the bench's statements, and which read a big table.

Postgres's ``auto_explain`` (preloaded by the bench at ``BENCH_SCALE``, idle
until asked) logs the plan of every statement a session runs, nested ones
too (a foreign key's check, a cascade), in JSON, with the rows each node
really read (``log_analyze``, without timing) and its buffers. The bench
turns it on for the whole cluster while it counts statements (the requests
sent one at a time: :func:`explaining`), and for one session of its own
while it runs what no request reaches (:mod:`bench_housekeeping`). The log is
Postgres's stderr, ``server.log`` in its data folder (tools/devservices.py),
read through Postgres itself.

A plan *scans* when it reads a table of more than :data:`BIG_TABLE` rows
whole (``Seq Scan``), or more than :data:`MANY_ROWS` of its rows through a
bitmap or an index (``Bitmap Heap Scan``, ``Index Scan``, an ``Index Only
Scan``'s heap fetches), or more than :data:`MANY_ENTRIES` entries of one of
its indexes: at a million rows each costs what a request cannot afford.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

#: Tables with more rows than this are big: reading one whole is a scan.
BIG_TABLE = 10_000
#: Reading more rows than this of a big table, by any path, is a scan too.
MANY_ROWS = 1_000
#: An index-only scan reads no rows; reading more entries than this is one.
MANY_ENTRIES = 10_000
#: The log's name in the data folder (tools/devservices.py writes it).
LOG_FILE = "server.log"
#: Postgres options for the bench's server: the module loaded, and idle.
POSTGRES_OPTIONS = (
    "-c",
    "shared_preload_libraries=pg_stat_statements,auto_explain",
    "-c",
    "auto_explain.log_format=json",
    "-c",
    "auto_explain.log_nested_statements=on",
    # Each line names its database and session's application, so that only
    # the app's plans are read, and the bench's own sessions' told apart.
    "-c",
    "log_line_prefix=%m [%p] db=%d app=%a ",
)
#: While on: every statement's plan, with the rows each node read.
SETTINGS = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_timing": "off",
    "auto_explain.log_buffers": "on",
}
_ENTRY = re.compile(
    r"^\S+ \S+ \S+ \[(?P<pid>\d+)\] db=(?P<database>\S*) app=(?P<application>\S*)"
    r" LOG:  duration: (?P<ms>[\d.]+) ms  plan:\n",
    re.MULTILINE,
)
_RELATION_NODES = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")


@dataclass(frozen=True)
class Node:
    """One node of a plan that reads a table."""

    kind: str
    relation: str
    index: str
    #: Rows (or index entries) the node looked at, those its filter removed
    #: included, over all loops.
    rows_read: float
    #: Of an index-only scan: the rows it had to read from the table.
    heap_fetches: float = 0.0

    @property
    def scans(self) -> bool:
        """Whether the node reads a big table whole, or too much of it."""
        if self.kind == "Seq Scan":
            return True
        if self.kind == "Index Only Scan":
            return self.heap_fetches > MANY_ROWS or self.rows_read > MANY_ENTRIES
        return self.rows_read > MANY_ROWS

    def __str__(self) -> str:
        return f"{self.kind} on {self.relation}" + (
            f" using {self.index}" if self.index else ""
        )


@dataclass(frozen=True)
class Plan:
    """One logged plan."""

    database: str
    application: str
    pid: int
    milliseconds: float
    query: str
    node_types: tuple[str, ...]
    reads: tuple[Node, ...]
    #: Shared buffers the statement hit and read.
    buffers: int


@dataclass(frozen=True)
class Scan:
    """A node that read a big table: whole, or many of its rows."""

    node: Node
    table_rows: int
    query: str

    def __str__(self) -> str:
        return (
            f"{self.node} ({self.table_rows:,} rows): read"
            f" {self.node.rows_read:,.0f} rows in: {self.query[:160]}"
        )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _rows_read(node: dict[str, Any]) -> float:
    """What the node read over all its loops (EXPLAIN gives each per loop);
    the planner's estimate when nothing was measured."""
    if "Actual Rows" not in node:
        return float(node.get("Plan Rows", 0))
    per_loop = node["Actual Rows"] + sum(
        node.get(removed, 0)
        for removed in ("Rows Removed by Filter", "Rows Removed by Index Recheck")
    )
    return float(per_loop * node.get("Actual Loops", 1))


def _node(node: dict[str, Any]) -> Node:
    return Node(
        node["Node Type"],
        node.get("Relation Name", ""),
        node.get("Index Name", ""),
        _rows_read(node),
        float(node.get("Heap Fetches", 0) * node.get("Actual Loops", 1)),
    )


_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\d+|\b\d+(?:\.\d+)?\b")
_LISTS = re.compile(r"\?(?:\s*,\s*\?)+")


def normalize(query: str) -> str:
    """The statement with its parameters and constants as ``?``, so that
    the runs of one statement read as one."""
    text = " ".join(query.split())
    return _LISTS.sub("?, ...", _LITERAL.sub("?", text))


def parse(log: str) -> list[Plan]:
    """Every plan ``auto_explain`` wrote into ``log`` (JSON format)."""
    decoder = json.JSONDecoder()
    plans = []
    for entry in _ENTRY.finditer(log):
        start = log.find("{", entry.end())
        try:
            document, _ = decoder.raw_decode(log, start)
            root = document["Plan"]
        except (ValueError, KeyError, TypeError):
            continue  # cut off, or interleaved with another process's line
        nodes = list(_nodes(root))
        buffers = sum(
            root.get(name, 0) for name in ("Shared Hit Blocks", "Shared Read Blocks")
        )
        plans.append(
            Plan(
                entry["database"],
                entry["application"],
                int(entry["pid"]),
                float(entry["ms"]),
                normalize(document.get("Query Text", "")),
                tuple(node["Node Type"] for node in nodes),
                tuple(
                    _node(node)
                    for node in nodes
                    if node["Node Type"] in _RELATION_NODES
                ),
                buffers,
            )
        )
    return plans


def scans(plans: Iterable[Plan], table_rows: dict[str, int]) -> list[Scan]:
    """The nodes of ``plans`` that read a big table whole or in bulk, one
    per statement and table (the worst)."""
    worst: dict[tuple[str, str, str], Scan] = {}
    for plan in plans:
        for node in plan.reads:
            rows = table_rows.get(node.relation, 0)
            if rows <= BIG_TABLE or not node.scans:
                continue
            key = (plan.query, node.relation, node.kind)
            if key not in worst or worst[key].node.rows_read < node.rows_read:
                worst[key] = Scan(node, rows, plan.query)
    return list(worst.values())


@dataclass
class Statement:
    """The plans of one normalized statement."""

    query: str
    calls: int = 0
    node_types: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    milliseconds: float = 0.0
    buffers: int = 0


def by_statement(plans: Iterable[Plan]) -> list[Statement]:
    found: dict[str, Statement] = {}
    for plan in plans:
        statement = found.setdefault(plan.query, Statement(plan.query))
        statement.calls += 1
        statement.node_types.update(plan.node_types)
        statement.reads.update(str(node) for node in plan.reads)
        statement.milliseconds += plan.milliseconds
        statement.buffers += plan.buffers
    return sorted(found.values(), key=lambda s: s.query)


def maintenance_url(database_url: str) -> str:
    """libpq's URL for the ``postgres`` database of the app's cluster."""
    url = make_url(database_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


def database_name(database_url: str) -> str:
    return make_url(database_url).database or ""


def log_size(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT size FROM pg_stat_file(%s)", (LOG_FILE,)).fetchone()
    return int(row[0]) if row else 0


def read_log(conn: psycopg.Connection, offset: int) -> str:
    """The server's log from ``offset`` to its end."""
    size = log_size(conn)
    if size <= offset:
        return ""
    row = conn.execute(
        "SELECT pg_read_binary_file(%s, %s, %s)", (LOG_FILE, offset, size - offset)
    ).fetchone()
    return bytes(row[0]).decode("utf-8", "replace") if row else ""


def table_rows(database_url: str) -> dict[str, int]:
    """Rows of each of the app's tables, as ``ANALYZE`` last counted them."""
    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        rows = conn.execute(
            "SELECT relname, reltuples::bigint FROM pg_class"
            " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {name: max(0, count) for name, count in rows}


class Capture:
    """The plans logged while :meth:`explaining` blocks ran, for one database."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.database = database_name(database_url)
        self.plans: list[Plan] = []

    @contextlib.contextmanager
    def explaining(self) -> Iterator[None]:
        """Log every statement's plan, cluster-wide, for the duration of the block."""
        with psycopg.connect(
            maintenance_url(self.database_url), autocommit=True
        ) as conn:
            offset = log_size(conn)
            _configure(conn, SETTINGS)
            try:
                yield
            finally:
                _configure(conn, dict.fromkeys(SETTINGS))
                # Plans are logged as each statement ends: all have been.
                self.plans += [
                    plan
                    for plan in parse(read_log(conn, offset))
                    if plan.database == self.database
                ]


def _configure(conn: psycopg.Connection, settings: Mapping[str, str | None]) -> None:
    """Set (or, for ``None``, reset) settings cluster-wide; every session
    takes them before its next statement."""
    for name, value in settings.items():
        if value is None:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        else:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    conn.execute("SELECT pg_reload_conf()")
    # The postmaster signals each backend; give them a moment to be told.
    time.sleep(0.3)


def describe(plans: list[Plan], rows: dict[str, int]) -> tuple[list[str], list[Scan]]:
    """The report's lines: each statement with its plan's node types, then
    the scans (or "no scans")."""
    statements = by_statement(plans)
    found = scans(plans, rows)
    lines = []
    for statement in statements:
        types = ", ".join(sorted(statement.node_types))
        calls = statement.calls
        lines.append(
            f"  {calls:4d}x {statement.milliseconds / calls:7.2f} ms"
            f" {statement.buffers / calls:7.0f} buf  {statement.query[:110]}"
        )
        lines.append(f"        {types}; " + "; ".join(sorted(statement.reads)))
    if found:
        head = (
            f"plans: {len(statements)} statements, {len(found)} scan(s) of a big table:"
        )
        lines += [head, *(f"  SCAN {scan}" for scan in found)]
    else:
        lines.append(f"plans: {len(statements)} statements, no scans")
    return lines, found
