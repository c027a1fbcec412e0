"""``BENCH_SCALE``: what no request of the bench reaches, explained at size.

Once the timed rows are done, against the filled database: the account page
of a person with 500 consents, 50 keys and 5 service clients (its first and
last pages); registration's cap counts from an address that registered
thousands of clients; ending a consent whose chain is 1,200 tokens long,
and reuse detection walking that chain from its first token; the
denylist's rebuild from Postgres; one batch of ``prune`` of each kind;
``flask --app app prune --dry-run``. Each runs with ``auto_explain`` on for
its session only (``EXPLAIN (ANALYZE, BUFFERS)`` of every statement, nested
ones too), in a transaction rolled back, so the next sees the same rows.
Then ``flask --app app prune`` runs once for real: its time and the CLI
process's peak memory (its own ``VmHWM``, read as it exits).

The sections any request reaches in a deployment (the account page,
registration, ending a chain) fail the bench if they scan a big table; the
others (a replay's walk, the rebuild after Redis lost its data, the CLI's)
are reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_plans
import psycopg
from bench_scale import Landmarks

#: ``application_name`` of the bench's own explained sessions: the log's
#: plans of each section are told apart by it.
APPLICATION = "bench-housekeeping"


@dataclass
class Section:
    """One group of statements, explained."""

    title: str
    #: A request reaches it in a deployment: a scan fails the bench.
    gate: bool
    plans: list[bench_plans.Plan] = field(default_factory=list)
    note: str = ""


@dataclass
class PruneRun:
    seconds: float
    peak_kib: int
    returncode: int
    output: str


@dataclass
class Housekeeping:
    sections: list[Section]
    prune: PruneRun | None
    table_rows: dict[str, int]

    def scans(self) -> list[tuple[Section, bench_plans.Scan]]:
        return [
            (section, scan)
            for section in self.sections
            for scan in bench_plans.scans(section.plans, self.table_rows)
        ]

    @property
    def failed(self) -> bool:
        prune_failed = self.prune is not None and self.prune.returncode != 0
        return prune_failed or any(section.gate for section, _ in self.scans())


class _RolledBack(Exception):
    pass


def _explained(application: str) -> None:
    """This transaction's statements are logged with their plans."""
    from sqlalchemy import text

    from app.db import db

    settings = {"application_name": application, **bench_plans.SETTINGS}
    connection = db.session.connection()
    for name, value in settings.items():
        connection.execute(
            text("SELECT set_config(:name, :value, true)"),
            {"name": name, "value": value},
        )


def _in_rolled_back(
    application: str, work: Callable[[Landmarks], str], marks: Landmarks
) -> str:
    """Run ``work`` explained, in a transaction rolled back; what it said."""
    from app.db import db

    said = ""
    try:
        with db.transaction():
            _explained(application)
            said = work(marks)
            raise _RolledBack
    except _RolledBack:
        pass
    return said


def _account_page(marks: Landmarks) -> str:
    from app import service_clients
    from app.api_keys import api_keys_page
    from app.identities import list_identities
    from app.oauth.consent import consents_page
    from app.oauth.refresh_store import last_refreshed

    user = uuid.UUID(marks.heavy_user_id)
    shown = []
    for number in (1, 10**6):  # the first page, and the last (past the end)
        consents = consents_page(user, number)
        keys = api_keys_page(user, number)
        services = service_clients.page_for(user, number)
        refreshed = last_refreshed([consent.id for consent in consents.items])
        list_identities(user)
        shown.append(
            f"page {consents.number}/{consents.count} of {consents.total} consents"
            f" ({len(refreshed)} refreshed), {keys.total} keys,"
            f" {services.total} service clients"
        )
    return "; ".join(shown)


def _registration(marks: Landmarks) -> str:
    from app.config import current_settings
    from app.db import db
    from app.models import utcnow
    from app.oauth.registration_caps import _source_count, insert_within_caps

    settings = current_settings()
    now = utcnow()
    values = {
        "client_id": f"lessie-bench-{uuid.uuid4().hex[:12]}",
        "client_secret_hash": None,
        "client_name": "bench",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "",
        "registered_from": marks.heavy_address,
        "created_at": now,
        "last_authorized_at": None,
        "jwks": None,
        "jwks_uri": None,
    }
    # As a deployment has them: the defaults, not the bench's lifted caps.
    limits = replace(settings, max_clients_per_address=100, max_clients=100_000)
    parameters = {
        **values,
        "since": now - timedelta(seconds=limits.registration_cap_window),
        "per_address": limits.max_clients_per_address,
        "cap": limits.max_clients,
    }
    count = db.session.connection().execute(_source_count(), parameters).scalar()
    insert_within_caps(values, limits)
    return f"{count} clients from {marks.heavy_address} within the window"


def _end_long_chain(marks: Landmarks) -> str:
    from app import audit
    from app.oauth.consent import withdraw

    ended = withdraw(
        uuid.UUID(marks.heavy_user_id),
        uuid.UUID(marks.long_chain_consent_id),
        audit.Actor.PERSON,
    )
    return f"withdrew the consent of a {marks.long_chain}-token chain: {ended}"


def _reuse_walk(marks: Landmarks) -> str:
    from app.config import current_settings
    from app.oauth.refresh_liveness import chain_head_is_live

    first = uuid.UUID(marks.long_chain_first_id)
    live = chain_head_is_live(first, current_settings().refresh_token_idle_ttl)
    return f"from the first of {marks.long_chain} tokens to a live head: {live}"


def _denylist_rebuild(marks: Landmarks) -> str:
    from app.config import current_settings
    from app.db import db
    from app.denylist import MARKER_MARGIN
    from app.denylist_record import markers

    window = current_settings().access_token_ttl + MARKER_MARGIN
    found = markers(db.session.connection(), window, datetime.now(UTC))
    return f"{len(found)} markers"


def _prune_batches(marks: Landmarks) -> str:
    from app import prune

    h = prune.horizons(
        timedelta(days=prune.DEFAULT_OLDER_THAN_DAYS),
        timedelta(days=prune.DEFAULT_UNUSED_DAYS),
    )
    counts = []
    for kind in prune.KINDS:
        batch = prune._batch(kind, h, None, prune.DEFAULT_BATCH_SIZE)
        counts.append(f"{len(batch.deleted)} {kind.name}")
    return "one batch deletes " + ", ".join(counts)


#: The sections run in the bench's process: title, gate, what runs.
SECTIONS: tuple[tuple[str, bool, Callable[[Landmarks], str]], ...] = (
    ("account page of a person with 500 consents", True, _account_page),
    ("registration from an address of thousands", True, _registration),
    ("ending a long refresh chain", True, _end_long_chain),
    # Only when a rotated-out token comes back: a replay, a rare request.
    ("reuse detection walking a long chain", False, _reuse_walk),
    ("denylist rebuild from Postgres", False, _denylist_rebuild),
    ("prune: one batch of each kind", False, _prune_batches),
)


def _cli_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    return {**base, **env, **extra}


#: Runs ``flask --app app ARGS`` and, as it exits, writes its own ``VmHWM``
#: to the file named first. Read by the process itself: ``wait4``'s
#: ``ru_maxrss`` would also count the memory of the bench process it was
#: forked from, before its ``exec``.
_PEAK_WRAPPER = """
import atexit, sys
report = sys.argv[1]
def peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["flask", "--app", "app", *sys.argv[2:]]
from flask.cli import main
main()
"""


def _flask(
    env: dict[str, str], args: list[str], directory: Path
) -> tuple[float, int, int, str]:
    """Run ``flask --app app ARGS``; its time, peak RSS (KiB), status, output."""
    out, peak = directory / "cli.out", directory / "cli.peak"
    peak.unlink(missing_ok=True)
    started = time.monotonic()
    with open(out, "wb") as sink:
        status = subprocess.run(
            [sys.executable, "-c", _PEAK_WRAPPER, str(peak), *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        ).returncode
    took = time.monotonic() - started
    kib = int(peak.read_text().split()[1]) if peak.exists() else 0
    return took, kib, status, out.read_text()


def _options(settings: dict[str, str]) -> str:
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def run(
    env: dict[str, str], marks: Landmarks, directory: Path, prune: bool = True
) -> Housekeeping:
    """Explain each section against the filled database, then prune it."""
    from bench_servers import app_for

    database_url = env["DATABASE_URL"]
    sections = []
    with psycopg.connect(bench_plans.maintenance_url(database_url)) as conn:
        offset = bench_plans.log_size(conn)
    with app_for(env) as app, app.app_context():
        for index, (title, gate, work) in enumerate(SECTIONS):
            section = Section(title, gate)
            application = f"{APPLICATION}-{index}"
            section.note = _in_rolled_back(application, work, marks)
            sections.append(section)
    dry_run = Section("prune --dry-run (the CLI)", False)
    application = f"{APPLICATION}-dry-run"
    seconds, _, status, output = _flask(
        _cli_env(
            env,
            PGOPTIONS=_options(bench_plans.SETTINGS),
            PGAPPNAME=application,
        ),
        ["prune", "--dry-run"],
        directory,
    )
    dry_run.note = f"{seconds:.1f} s, status {status}: " + "; ".join(
        line for line in output.splitlines() if line.startswith("would prune")
    )
    sections.append(dry_run)
    with psycopg.connect(bench_plans.maintenance_url(database_url)) as conn:
        plans = bench_plans.parse(bench_plans.read_log(conn, offset))
    names = [f"{APPLICATION}-{index}" for index in range(len(SECTIONS))]
    for section, name in zip(sections, [*names, application], strict=True):
        section.plans = [plan for plan in plans if plan.application == name]
    rows = bench_plans.table_rows(database_url)
    if not prune:
        return Housekeeping(sections, None, rows)
    seconds, peak, status, output = _flask(_cli_env(env), ["prune"], directory)
    return Housekeeping(sections, PruneRun(seconds, peak, status, output), rows)


def describe(found: Housekeeping) -> list[str]:
    lines = ["housekeeping and account statements, EXPLAIN (ANALYZE, BUFFERS):"]
    for section in found.sections:
        lines.append(f"  {section.title}: {section.note}")
        for statement in bench_plans.by_statement(section.plans):
            lines.append(
                f"    {statement.calls}x {statement.milliseconds:8.1f} ms"
                f" {statement.buffers:8d} buf  {statement.query[:100]}"
            )
            if statement.reads:
                lines.append("        " + "; ".join(sorted(statement.reads)))
    scans = found.scans()
    for section, scan in scans:
        verdict = "SCAN" if section.gate else "scan (not a request's)"
        lines.append(f"  {verdict} in {section.title}: {scan}")
    if not scans:
        lines.append("  no scans")
    if found.prune is not None:
        prune = found.prune
        said = prune.output.splitlines()
        pruned = [line for line in said if line.startswith("pruned")]
        lines.append(
            f"prune: {prune.seconds:.1f} s, peak RSS (VmHWM)"
            f" {prune.peak_kib / 1024:.0f} MiB, status {prune.returncode}: "
            + "; ".join(pruned)
        )
        if prune.returncode:
            lines.append(prune.output[-2000:])
    return lines
