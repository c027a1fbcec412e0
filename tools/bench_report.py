"""The tables ``make bench`` prints, with the goals of README, "Performance"."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

from bench_costs import Costs, describe
from bench_memory import DYNO_MIB, Memory, Process

#: Flows per second a 2-core machine must reach (README, "Performance").
FLOW_GOAL = 180
#: Most Postgres statements and Redis commands a code exchange may cost.
TOKEN_STATEMENTS, TOKEN_COMMANDS = 3, 2
#: The rows of code exchanges start so.
CODE_EXCHANGE = "POST /token (code"
HEADER = (
    "endpoint",
    "req/s",
    "hello req/s",
    "ratio",
    "goal",
    "CPU µs/req (hello)",
    "PG stmts/req",
    "Redis cmds/req",
)


@dataclass
class Row:
    """One measured endpoint; ``hello`` is None for flows (rate is flows/s)."""

    name: str
    rate: float
    hello: float | None
    goal: float | None
    costs: Costs
    failed: int
    error: str = ""
    #: Server CPU µs per request, the app's and hello-world's (best rounds).
    cpu_us: tuple[float, float] | None = None
    #: The goal in requests per second, whatever hello-world does.
    min_rate: float | None = None
    #: Answers by status of the app's runs that had failures.
    answers: dict[str, int] = field(default_factory=dict)
    #: The first answer other than the one a working server gives.
    first_failure: str = ""

    @property
    def statements(self) -> float:
        return self.costs.per_request(sum(self.costs.statements.values()))

    @property
    def commands(self) -> float:
        return self.costs.per_request(sum(self.costs.commands.values()))


def as_json(row: Row) -> dict[str, Any]:
    costs = row.costs
    return {
        "name": row.name,
        "rate": row.rate,
        "hello": row.hello,
        "goal": row.goal,
        "failed": row.failed,
        "error": row.error,
        "cpu_us": row.cpu_us,
        "min_rate": row.min_rate,
        "answers": row.answers,
        "first_failure": row.first_failure,
        "requests_counted": costs.requests,
        "statements": dict(costs.statements),
        "commands": dict(costs.commands),
        "script_commands": dict(costs.script_commands),
        "background_commands": dict(costs.background),
    }


def _verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


def _goal(row: Row) -> str:
    if row.hello is None:
        return f">= {FLOW_GOAL}/s {_verdict(row.rate >= FLOW_GOAL)}"
    if row.min_rate is not None:
        return f">= {row.min_rate:.0f}/s {_verdict(row.rate >= row.min_rate)}"
    if row.goal is not None:
        return f">= {row.goal:.2f} {_verdict(row.rate / row.hello >= row.goal)}"
    if row.name.startswith(CODE_EXCHANGE):
        met = row.statements <= TOKEN_STATEMENTS and row.commands <= TOKEN_COMMANDS
        return f"<= {TOKEN_STATEMENTS} PG, {TOKEN_COMMANDS} Redis {_verdict(met)}"
    return "-"


def _cpu(row: Row) -> str:
    if row.cpu_us is None:
        return "-"
    if row.hello is None:  # flows: the app's CPU per flow, nothing to compare
        return f"{row.cpu_us[0]:.0f} per flow"
    return f"{row.cpu_us[0]:.0f} ({row.cpu_us[1]:.0f})"


def _cells(row: Row) -> tuple[str, ...]:
    costs = row.costs
    transaction = costs.per_request(costs.transaction_control)
    inner = costs.per_request(sum(costs.script_commands.values()))
    rate = f"{row.rate:.1f}" + (" flows/s" if row.hello is None else "")
    return (
        row.name,
        rate,
        "-" if row.hello is None else f"{row.hello:.1f}",
        "-" if row.hello is None else f"{row.rate / row.hello:.2f}",
        _goal(row),
        _cpu(row),
        f"{row.statements:.2f} ({transaction:.2f} tx)",
        f"{row.commands:.2f}" + (f" (+{inner:.2f} in scripts)" if inner else ""),
    )


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def _table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> str:
    table = [header, *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


MEMORY_HEADER = (
    "process",
    "at rest MiB (PSS)",
    "peak MiB (PSS)",
    "after MiB",
    "at end MiB",
    "PG conns",
    "Redis conns",
    "goal",
)


def _memory_cells(process: Process) -> tuple[str, ...]:
    return (
        process.name,
        f"{process.rest_rss:.1f} ({process.rest_pss:.1f})",
        f"{process.peak_rss:.1f} ({process.peak_pss:.1f})",
        f"{process.after_rss:.1f}",
        f"{process.end_rss:.1f}",
        str(process.postgres),
        str(process.redis),
        "",
    )


def _memory_total(memory: Memory) -> tuple[str, ...]:
    processes = memory.processes
    rest = sum(p.rest_rss for p in processes)
    rest_pss = sum(p.rest_pss for p in processes)
    return (
        f"master + {memory.workers} workers",
        f"{rest:.1f} ({rest_pss:.1f})",
        f"{memory.total_peak_rss:.1f} ({memory.total_peak_pss:.1f})",
        f"{sum(p.after_rss for p in processes):.1f}",
        f"{sum(p.end_rss for p in processes):.1f}",
        str(sum(p.postgres for p in processes)),
        str(sum(p.redis for p in processes)),
        f"<= {DYNO_MIB} {_verdict(memory.fits)}",
    )


def print_memory(memory: Memory) -> None:
    """The memory table: the gunicorn tree at rest and during sign-in bursts."""
    from app.passwords import MEMORY_KIB, PARALLELISM, TIME_COST

    cells = [_memory_cells(p) for p in memory.processes]
    print(_table(MEMORY_HEADER, [*cells, _memory_total(memory)]))
    workers = memory.worker_processes
    if workers:
        print(
            f"\nWorker at rest {max(w.rest_rss for w in workers):.1f} MiB, at peak"
            f" {max(w.peak_rss for w in workers):.1f} MiB; master"
            f" {memory.master.rest_rss:.1f} MiB; master + {memory.workers} workers"
            f" at peak {memory.total_peak_rss:.1f} MiB"
            f" (<= {DYNO_MIB} MiB {_verdict(memory.fits)})."
        )
    print(
        f"{memory.sign_ins} password sign-ins at once, {memory.bursts} bursts"
        f" (argon2id m={MEMORY_KIB // 1024} MiB, t={TIME_COST}, p={PARALLELISM}),"
        " against the app as deployed: the Procfile's web: command and"
        f" gunicorn.conf.py, {memory.workers} workers x {memory.threads} threads,"
        " the service's own RS256 key. At rest: each worker has served pages,"
        " no sign-in. RSS counts the pages a worker shares with the master in"
        " both; PSS splits them. Peak: each process's"
        f" {memory.peak_source} during the bursts; the total adds them, as if"
        " all peaked at once (its PSS: the largest sum sampled every 5 ms)."
        " After: 1 s after the last burst. At end: when the bench is done"
        " with that server (after its timed RS256 code exchanges, wrk -c32,"
        " when they run); conns: its TCP connections to Postgres and Redis"
        " open then."
    )
    if memory.error:
        print(f"    FAILED: {memory.error}")


def print_report(
    rows: list[Row],
    seconds: int,
    rounds: int,
    processes: int,
    took: float,
    memory: Memory | None = None,
) -> None:
    if rows:
        _print_rows(rows, seconds, rounds, processes)
    print(f"Machine: {_machine()}. Took {took:.0f} s.\n")
    if memory is not None:
        print_memory(memory)
        print()
    for row in rows:
        print(f"{row.name}, per {'flow' if row.hello is None else 'request'}:")
        print("\n".join(describe(row.costs)))
        if row.failed or row.error:
            print(f"    FAILED: {row.failed} failed requests {row.error}".rstrip())
        if row.answers:
            answers = ", ".join(f"{n} x {s}" for s, n in sorted(row.answers.items()))
            print(f"    answers in the failing runs: {answers}")
        if row.first_failure:
            print(f"    first unexpected answer: {row.first_failure}")


def _print_rows(rows: list[Row], seconds: int, rounds: int, processes: int) -> None:
    print(_table(HEADER, [_cells(row) for row in rows]))
    print(
        f"\nBest of {rounds} runs of {seconds} s after a warm-up, hello-world and"
        f" the app alternating; wrk -t2 -c32; flows by {processes}"
        " processes. CPU µs/req: user and system time of the server's processes"
        " per request, best round (less sensitive to other work than req/s)."
        " The flow row counts per flow. PG stmts include the"
        " transaction control (tx: BEGIN/COMMIT/ROLLBACK); a Redis script is one"
        " command, its inner commands are listed apart."
    )
