"""``make bench``: the app against a bare Flask hello-world, and its memory.

The goals are in the README, "Performance".

Private Postgres (with ``pg_stat_statements``) and Redis as in ``make test``;
the app and ``tools/bench_hello.py`` are served by the Procfile's ``web:``
command, the app twice: signing with HS256 (``JWT_SECRET``), and as a default
deploy runs it, with the service's own RS256 key and two workers. The latter
first has its memory read during bursts of concurrent sign-ins
(``tools/bench_memory.py``), then serves the RS256 code exchange. Each endpoint
is timed with wrk right after hello-world is timed with the same request, so
noise on this shared machine hits both; flows are driven by processes with
keep-alive connections. What each endpoint costs in Postgres statements and
Redis commands is counted by the servers, on a few requests sent one at a
time, apart from the timed runs. The rows, and what each request consumes
(codes, refresh tokens, device codes, identity assertions), are set up by
``tools/bench_targets.py``; wrk (``tools/bench_wrk.lua``) tells what every
answer was, so a failed request can be explained.

Environment: BENCH_SECONDS (4) and BENCH_WARMUP (1) per run, BENCH_ROUNDS
(3) runs of each side, alternating, of which each keeps its best (and as many
bursts of sign-ins), BENCH_FLOW_PROCESSES (8), BENCH_COUNT_REQUESTS (20),
BENCH_ONLY (words naming the rows to time, in any letter case, e.g.
"healthz flow refresh"; "memory" for the sign-in bursts; all by default),
BENCH_JSON (a path to write the results to, for tests), BENCH_SCALE
(``large``, ``medium``: the database filled first, every counted statement's
plan checked, housekeeping explained and pruned; tools/bench_scale.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import bench_costs
import bench_flows
import bench_memory
import bench_scale
import bench_servers
import devservices
from bench_report import Row, as_json, print_report
from bench_targets import Endpoint, Mint, Target, selected, targets

TOOLS = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
FLOW_PROCESSES = int(os.environ.get("BENCH_FLOW_PROCESSES", "8"))
COUNT_REQUESTS = int(os.environ.get("BENCH_COUNT_REQUESTS", "20"))
WRK_CONNECTIONS, WRK_THREADS, WRK_TIMEOUT = 32, 2, 10
#: A cache that holds the large database's indexes (about 0.7 GB of them
#: at BENCH_SCALE=large), as the memory of a managed plan sized for 3 GB of
#: data does; Postgres's own default (128 MB) is a tenth of it.
POSTGRES_OPTIONS = (
    "-c",
    "shared_preload_libraries=pg_stat_statements",
    "-c",
    "shared_buffers=1GB",
)

#: What BENCH_SCALE adds: a filled database, plans, housekeeping (or nothing).
SCALE = bench_scale.Run.from_environment()

#: Process group of the gunicorn serving each port (set once both serve).
GROUPS: dict[int, int] = {}
MEMORY = "memory"


@dataclass
class Run:
    """One wrk run: its rate, what the server answered, its CPU per request."""

    rate: float
    #: Requests not answered ``expected`` (socket errors included), or, if
    #: more, codes sent more than once: a repeat is a request the row does
    #: not mean to time, even answered ``expected`` (a refresh token's grace).
    failed: int
    cpu_us: float
    #: Answers by status.
    answers: Counter[str]
    #: Codes sent again after the list ran out.
    repeats: int
    #: Connections that failed to connect, read, write or answer in time.
    socket_errors: int
    #: The first answer other than ``expected``: status and start of its body.
    first_failure: str


def wrk(
    port: int,
    endpoint: Endpoint,
    seconds: int,
    codes: list[str],
    tmp: Path,
    expected: int | None = None,
) -> Run:
    """Run wrk; ``expected`` is the status a working server answers (by
    default the endpoint's own)."""
    expected = endpoint.status if expected is None else expected
    body_file, codes_file = "-", "-"
    if endpoint.body is not None:
        body_file = str(tmp / "body")
        Path(body_file).write_text(endpoint.body)
    if codes and consumes_codes(endpoint):
        codes_file = str(tmp / "codes")
        Path(codes_file).write_text("\n".join(codes) + "\n")
    command = [devservices.find_wrk(), f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}"]
    # wrk gives up on an answer after 2 s by default and counts a timeout; a
    # slow page (the account page on a busy machine) is slow, not failing.
    command += [f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}s"]
    command += ["-s", str(TOOLS / "bench_wrk.lua")]
    for name, value in endpoint.headers.items():
        command += ["-H", f"{name}: {value}"]
    command += [f"http://127.0.0.1:{port}{endpoint.path}", "--", endpoint.method]
    command += [body_file, codes_file, str(WRK_THREADS), str(expected)]
    cpu_before = group_cpu(GROUPS.get(port))
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = group_cpu(GROUPS.get(port)) - cpu_before
    line = next(x for x in output.stdout.splitlines() if x.startswith("BENCH "))
    result = json.loads(line.removeprefix("BENCH "))
    answers = Counter({str(k): int(v) for k, v in result["statuses"].items()})
    kinds = ("connect", "read", "write", "timeout")
    sockets = sum(result[k] for k in kinds)
    unexpected = sum(answers.values()) - answers[str(expected)]
    told = []
    if result["first_status"]:
        told.append(f"{result['first_status']} {result['first_body']}".strip())
    if sockets:
        errors = ", ".join(f"{result[k]} {k}" for k in kinds if result[k])
        told.append(f"socket errors: {errors}")
    first = "; ".join(told)
    requests = max(result["requests"], 1)
    return Run(
        rate=requests / (result["duration_us"] / 1e6),
        failed=max(unexpected + sockets, result["repeats"]),
        cpu_us=cpu / requests * 1e6,
        answers=answers,
        repeats=result["repeats"],
        socket_errors=sockets,
        first_failure=first,
    )


def group_cpu(group: int | None) -> float:
    """CPU seconds (user + system) used so far by a process group's processes.

    Unlike requests per second, this barely moves when other work shares
    the machine, so it tells what a request costs the server itself.
    """
    if group is None:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        # Fields after the name: state ppid pgrp ... utime(12) stime(13).
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _hello_round(served: bench_servers.Served, endpoint: Endpoint, tmp: Path) -> Run:
    # hello-world gets codes too, so that wrk does the same work for both;
    # it answers 200 to everything.
    fake = [secrets.token_urlsafe(32) for _ in range(1000)]
    if WARMUP:
        wrk(served.hello_port, endpoint, WARMUP, fake, tmp, expected=200)
    run = wrk(served.hello_port, endpoint, SECONDS, fake, tmp, expected=200)
    # Its codes repeat on purpose: nothing consumes them.
    unexpected = sum(run.answers.values()) - run.answers["200"]
    return replace(run, failed=unexpected + run.socket_errors, repeats=0)


def consumes_codes(endpoint: Endpoint) -> bool:
    return "{code}" in (endpoint.body or "")


def timed(port: int, endpoint: Endpoint, codes: list[str], tmp: Path) -> Run:
    """Warm up, then time."""
    if WARMUP:
        wrk(port, endpoint, WARMUP, codes, tmp)
    return wrk(port, endpoint, SECONDS, codes, tmp)


def timed_with_codes(
    port: int, endpoint: Endpoint, mint: Mint, ceiling: float, tmp: Path
) -> Run:
    """Like :func:`timed`, with a fresh code for every request.

    The warm-up's codes may run out (its answers are not counted; its rate
    then includes quick refusals, which only makes the estimate larger). The
    timed run gets codes for twice the warm-up's rate; but a warm-up can be
    slow for reasons of its own (the app as deployed, idle for a minute,
    first rebuilds its signing key ring), so a timed run that sent any code
    twice is run again with codes for ``ceiling``: a repeat is answered as a
    used code, a refresh token's grace or reuse, not the request the row
    times.
    """
    rate = ceiling
    if WARMUP:
        warm_codes = mint(min(int(ceiling * WARMUP), 2000) + 100)
        warm = wrk(port, endpoint, WARMUP, warm_codes, tmp)
        rate = min(ceiling, 2 * warm.rate)
    run = wrk(port, endpoint, SECONDS, mint(int(rate * SECONDS) + 200), tmp)
    if run.repeats and rate < ceiling:
        log(
            f"  {run.repeats} codes ran out at {run.rate:.0f}/s (minted for"
            f" {rate:.0f}/s); again with codes for {ceiling:.0f}/s"
        )
        settle()
        run = wrk(port, endpoint, SECONDS, mint(int(ceiling * SECONDS) + 200), tmp)
    return run


def sender(
    client: bench_flows.Client, endpoint: Endpoint, codes: list[str]
) -> Callable[[], None]:
    """A function that sends ``endpoint`` once and checks the answer."""

    def send() -> None:
        body = endpoint.body
        if codes:
            assert body is not None, endpoint.name
            body = body.replace("{code}", codes.pop())
        status, _, data = client.request(
            endpoint.method,
            endpoint.path,
            None if body is None else body.encode(),
            endpoint.headers,
        )
        bench_flows.expect(status, endpoint.status, endpoint.name, data)
        if endpoint.holds not in data:
            raise bench_flows.FlowError(f"{endpoint.name}: {data[:200]!r}")

    return send


def flows_per_second(served: bench_servers.Served) -> tuple[float, str]:
    """Flows per second of ``FLOW_PROCESSES`` processes started together."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(FLOW_PROCESSES), context.Queue()
    job = (served.app_port, bench_servers.EMAIL, served.password, WARMUP, SECONDS)
    workers = [
        context.Process(target=bench_flows.flow_worker, args=(job, barrier, results))
        for _ in range(FLOW_PROCESSES)
    ]
    for worker in workers:
        worker.start()
    done = [results.get(timeout=SECONDS + WARMUP + 120) for _ in workers]
    for worker in workers:
        worker.join()
    errors = [error for _, error in done if error]
    return sum(count for count, _ in done) / SECONDS, "; ".join(errors[:1])


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def count_costs(urls: dict[str, str], send: Callable[[], object]) -> bench_costs.Costs:
    for _ in range(COUNT_REQUESTS):
        send()  # warms the worker's connection pools
    with SCALE.explaining():
        return bench_costs.measure(
            urls["DATABASE_URL"], urls["REDIS_URL"], send, COUNT_REQUESTS
        )


def settle() -> None:
    """Let the server finish what wrk left in flight before the next run."""
    time.sleep(min(1.0, SECONDS / 5))


def measure_memory(served: bench_servers.Served) -> bench_memory.Memory:
    """The deployed app's memory during bursts of concurrent sign-ins."""
    log(
        f"reading memory during {bench_memory.SIGN_INS} concurrent sign-ins,"
        f" {ROUNDS} bursts"
    )
    return bench_memory.measure(
        served.groups[served.deployed_port],
        served.deployed_port,
        bench_servers.EMAIL,
        served.password,
        ROUNDS,
        bench_servers.gunicorn_setting("threads"),
    )


def measure(
    served: bench_servers.Served, tmp: Path
) -> tuple[list[Row], bench_memory.Memory | None]:
    GROUPS.update(served.groups)
    SCALE.prepare(served.env, log)
    # Memory first, while the deployed app's workers have signed no one in.
    memory = measure_memory(served) if selected(MEMORY) else None
    with contextlib.ExitStack() as stack:
        specs, person = targets(served, stack)
        rows = _measure(served, person.client, specs, tmp)
    SCALE.finish(tmp, log)
    if memory is not None:
        bench_memory.finish(memory, served.backend_ports())
    return rows, memory


def _measure(
    served: bench_servers.Served,
    client: bench_flows.Client,
    specs: list[Target],
    tmp: Path,
) -> list[Row]:
    urls = served.env
    # Costs first, one request at a time, before any timed run can leave
    # requests in flight.
    log("counting statements and commands")
    costs = {}
    for target in specs:
        endpoint = target.endpoint
        codes = target.mint(2 * COUNT_REQUESTS) if target.mint else []
        costs[endpoint.name] = count_costs(urls, sender(target.client, endpoint, codes))
    flow_costs = count_costs(urls, lambda: bench_flows.flow(client))
    rows: list[Row] = []
    for target in specs:
        endpoint = target.endpoint
        log(f"timing {endpoint.name}")
        # Rounds alternate hello-world and the app, and each side keeps its
        # best round: on a shared machine, other work only ever slows a run
        # down, and alternating exposes both sides to the same stretches.
        hello = rps = 0.0
        failed = 0
        answers: Counter[str] = Counter()
        first_failure = ""
        hello_cpu = cpu = float("inf")
        for _ in range(ROUNDS):
            hello_run = _hello_round(served, endpoint, tmp)
            settle()
            if target.mint is not None:
                # The app cannot outrun hello-world; half as much again covers noise.
                ceiling = 1.5 * max([hello_run.rate, *(row.hello or 0 for row in rows)])
                run = timed_with_codes(target.port, endpoint, target.mint, ceiling, tmp)
            else:
                run = timed(target.port, endpoint, [], tmp)
            log(
                f"  {run.rate:.0f}/s (hello {hello_run.rate:.0f}/s), answers"
                f" {dict(run.answers)}, {run.repeats} codes repeated"
                + (f", first failure: {run.first_failure}" if run.failed else "")
            )
            settle()
            hello, rps = max(hello, hello_run.rate), max(rps, run.rate)
            hello_cpu, cpu = min(hello_cpu, hello_run.cpu_us), min(cpu, run.cpu_us)
            failed += hello_run.failed + run.failed
            if run.failed:
                answers.update(run.answers)
                first_failure = first_failure or run.first_failure
            if hello_run.failed and not first_failure:
                first_failure = f"hello-world: {hello_run.first_failure}"
        rows.append(
            Row(
                endpoint.name,
                rps,
                hello,
                endpoint.goal,
                costs[endpoint.name],
                failed,
                cpu_us=(cpu, hello_cpu),
                min_rate=endpoint.min_rate,
                answers=dict(answers),
                first_failure=first_failure,
            )
        )
    if not selected("flow"):
        return rows
    log(f"timing flows with {FLOW_PROCESSES} processes")
    flows, error, flow_cpu = 0.0, "", float("inf")
    for _ in range(ROUNDS):
        cpu_before = group_cpu(GROUPS.get(served.app_port))
        round_flows, error = flows_per_second(served)
        cpu = group_cpu(GROUPS.get(served.app_port)) - cpu_before
        # The warm-up's flows are not counted; at the same rate, they used
        # the warm-up's share of the CPU.
        if round_flows:
            flow_cpu = min(flow_cpu, cpu / (round_flows * (SECONDS + WARMUP)) * 1e6)
        flows = max(flows, round_flows)
        if error:
            break
    rows.append(
        Row(
            "flow (4 requests)",
            flows,
            None,
            None,
            flow_costs,
            0,
            error,
            cpu_us=(flow_cpu, 0.0) if flow_cpu < float("inf") else None,
        )
    )
    return rows


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mcp-auth-bench-") as directory:
        tmp = Path(directory)
        tmp.chmod(0o755)
        started = time.monotonic()
        log("starting Postgres, Redis, the app (twice) and hello-world")
        with (
            devservices.services(
                tmp, False, postgres_options=POSTGRES_OPTIONS + SCALE.postgres_options
            ) as urls,
            bench_servers.serve(urls, tmp) as served,
        ):
            try:
                rows, memory = measure(served, tmp)
            except Exception:
                for name in ("app.log", "hello.log", "deployed.log"):
                    sys.stderr.write((tmp / name).read_text()[-3000:])
                raise
        took = time.monotonic() - started
        print_report(rows, SECONDS, ROUNDS, FLOW_PROCESSES, took, memory)
        scanned = SCALE.report()
    if os.environ.get("BENCH_JSON"):
        results = {
            "rows": [as_json(row) for row in rows],
            "memory": memory and bench_memory.as_json(memory),
            "scale": SCALE.as_json(),
        }
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(results, indent=1))
    failed = any(row.failed or row.error for row in rows) or scanned
    return 1 if failed or (memory and memory.error) else 0


if __name__ == "__main__":
    sys.exit(main())
