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
time, apart from the timed runs.

Environment: BENCH_SECONDS (4) and BENCH_WARMUP (1) per run, BENCH_ROUNDS
(3) runs of each side, alternating, of which each keeps its best (and as many
bursts of sign-ins), BENCH_FLOW_PROCESSES (8), BENCH_COUNT_REQUESTS (20),
BENCH_ONLY (words naming the rows to time, e.g. "healthz flow"; "memory" for
the sign-in bursts; all by default), BENCH_JSON (a path to write the results
to, for tests), BENCH_SCALE (``large``, ``medium``: the database filled first,
every counted statement's plan checked, housekeeping explained and pruned;
tools/bench_scale.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import bench_costs
import bench_flows
import bench_memory
import bench_scale
import bench_servers
import devservices
from bench_report import Row, as_json, print_report

TOOLS = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ONLY = os.environ.get("BENCH_ONLY", "").split()
FLOW_PROCESSES = int(os.environ.get("BENCH_FLOW_PROCESSES", "8"))
COUNT_REQUESTS = int(os.environ.get("BENCH_COUNT_REQUESTS", "20"))
WRK_CONNECTIONS, WRK_THREADS = 32, 2
POSTGRES_OPTIONS = ("-c", "shared_preload_libraries=pg_stat_statements")
MCP_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    '"params":{"name":"whoami","arguments":{}}}'
)

#: What BENCH_SCALE adds: a filled database, plans, housekeeping (or nothing).
SCALE = bench_scale.Run.from_environment()

#: Requests per second, failed requests, server CPU µs per request.
Rate = tuple[float, int, float]
#: Process group of the gunicorn serving each port (set once both serve).
GROUPS: dict[int, int] = {}
#: Saves that many fresh authorization codes and returns them.
Mint = Callable[[int], list[str]]
#: The rows of the two code exchanges, signed with HS256 and with RS256.
TOKEN_HS256, TOKEN_RS256 = "POST /token (code, HS256)", "POST /token (code, RS256)"
MEMORY = "memory"


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: str | None
    goal: float | None


@dataclass(frozen=True)
class Target:
    """An endpoint of one of the app's servers, with what sending it needs."""

    endpoint: Endpoint
    port: int
    client: bench_flows.Client
    mint: Mint


def token_endpoint(name: str, registered: dict, verifier: str) -> Endpoint:
    """The code exchange of a client that went through consent."""
    form = urlencode(bench_flows.token_form("{code}", verifier))
    token_body = form.replace(quote("{code}"), "{code}")
    token_headers = {
        "Authorization": bench_flows.basic_auth(registered),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return Endpoint(name, "POST", "/token", token_headers, token_body, None)


def endpoints(registered: dict, verifier: str, token: str) -> list[Endpoint]:
    bearer = {"Authorization": f"Bearer {token}"}
    mcp_headers = {
        **bearer,
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    return [
        Endpoint("POST /mcp whoami", "POST", "/mcp", mcp_headers, MCP_BODY, 0.70),
        Endpoint("GET /auth/verify", "GET", "/auth/verify", bearer, None, 0.80),
        Endpoint("GET /healthz", "GET", "/healthz", {}, None, 0.90),
        token_endpoint(TOKEN_HS256, registered, verifier),
    ]


def wrk(
    port: int, endpoint: Endpoint, seconds: int, codes: list[str], tmp: Path
) -> Rate:
    """Run wrk; return requests per second and the count of failed requests."""
    body_file, codes_file = "-", "-"
    if endpoint.body is not None:
        body_file = str(tmp / "body")
        Path(body_file).write_text(endpoint.body)
    if codes and consumes_codes(endpoint):
        codes_file = str(tmp / "codes")
        Path(codes_file).write_text("\n".join(codes) + "\n")
    command = [devservices.find_wrk(), f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}"]
    command += [f"-d{seconds}s", "-s", str(TOOLS / "bench_wrk.lua")]
    for name, value in endpoint.headers.items():
        command += ["-H", f"{name}: {value}"]
    command += [f"http://127.0.0.1:{port}{endpoint.path}", "--", endpoint.method]
    command += [body_file, codes_file, str(WRK_THREADS)]
    cpu_before = group_cpu(GROUPS.get(port))
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = group_cpu(GROUPS.get(port)) - cpu_before
    line = next(x for x in output.stdout.splitlines() if x.startswith("BENCH "))
    result = json.loads(line.removeprefix("BENCH "))
    failed = sum(result[k] for k in ("status", "connect", "read", "write", "timeout"))
    requests = max(result["requests"], 1)
    return requests / (result["duration_us"] / 1e6), failed, cpu / requests * 1e6


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


def _hello_round(served: bench_servers.Served, endpoint: Endpoint, tmp: Path) -> Rate:
    # hello-world gets codes too, so that wrk does the same work for both.
    fake = [secrets.token_urlsafe(32) for _ in range(1000)]
    return timed(served.hello_port, endpoint, fake, tmp)


def selected(name: str) -> bool:
    """Whether ``BENCH_ONLY`` (words, any of which names a row) keeps this row."""
    return not ONLY or any(word in name for word in ONLY)


def consumes_codes(endpoint: Endpoint) -> bool:
    return "{code}" in (endpoint.body or "")


def timed(port: int, endpoint: Endpoint, codes: list[str], tmp: Path) -> Rate:
    """Warm up, then time; return requests per second and failed requests."""
    if WARMUP:
        wrk(port, endpoint, WARMUP, codes, tmp)
    return wrk(port, endpoint, SECONDS, codes, tmp)


def timed_with_codes(
    port: int, endpoint: Endpoint, mint: Mint, ceiling: float, tmp: Path
) -> Rate:
    """Like :func:`timed`, with fresh codes enough for the rate the warm-up saw.

    The warm-up may run out of codes (its answers are not counted); its rate
    then includes the quick refusals, which only makes the estimate larger.
    """
    rate = ceiling
    if WARMUP:
        warm_codes = mint(min(int(ceiling * WARMUP), 2000) + 100)
        warm_rate, _, _ = wrk(port, endpoint, WARMUP, warm_codes, tmp)
        rate = min(ceiling, 2 * warm_rate)
    return wrk(port, endpoint, SECONDS, mint(int(rate * SECONDS) + 200), tmp)


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
        bench_flows.expect(status, 200, endpoint.name, data)
        if endpoint.path == "/mcp" and b'"result"' not in data:
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


def signed_with(token: str, algorithm: str) -> None:
    """Stop unless the access token's header names ``algorithm``."""
    header = token.split(".", 1)[0]
    named = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    if named.get("alg") != algorithm:
        raise SystemExit(f"expected {algorithm} access tokens, got {named}")


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


def approved(
    served: bench_servers.Served, port: int, env: dict[str, str]
) -> tuple[bench_flows.Client, dict, str, str, contextlib.AbstractContextManager[Mint]]:
    """Sign in at ``port``, run one flow; the client, the registered client,
    its verifier, an access token, and a minter of its codes (to enter)."""
    client = bench_flows.Client(port)
    bench_flows.sign_in(client, bench_servers.EMAIL, served.password)
    registered, verifier, token = bench_flows.flow(client)
    minter = bench_servers.code_minter(
        env,
        registered["client_id"],
        served.user_id,
        bench_flows.challenge_of(verifier),
    )
    return client, registered, verifier, token, minter


def measure(
    served: bench_servers.Served, tmp: Path
) -> tuple[list[Row], bench_memory.Memory | None]:
    GROUPS.update(served.groups)
    SCALE.prepare(served.env, log)
    # Memory first, while the deployed app's workers have signed no one in.
    memory = measure_memory(served) if selected(MEMORY) else None
    client, registered, verifier, token, minter = approved(
        served, served.app_port, served.env
    )
    signed_with(token, "HS256")
    with contextlib.ExitStack() as stack:
        mint = stack.enter_context(minter)
        targets = [
            Target(endpoint, served.app_port, client, mint)
            for endpoint in endpoints(registered, verifier, token)
        ]
        if selected(TOKEN_RS256):
            deployed = approved(served, served.deployed_port, served.deployed_env)
            rs_client, rs_registered, rs_verifier, rs_token, rs_minter = deployed
            signed_with(rs_token, "RS256")
            # Beside the HS256 row, so that the signature's cost reads off.
            targets.append(
                Target(
                    token_endpoint(TOKEN_RS256, rs_registered, rs_verifier),
                    served.deployed_port,
                    rs_client,
                    stack.enter_context(rs_minter),
                )
            )
        specs = [target for target in targets if selected(target.endpoint.name)]
        rows = _measure(served, client, specs, tmp)
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
        codes = target.mint(2 * COUNT_REQUESTS) if consumes_codes(endpoint) else []
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
        hello_cpu = cpu = float("inf")
        for _ in range(ROUNDS):
            hello_round, hello_failed, hello_cpu_round = _hello_round(
                served, endpoint, tmp
            )
            settle()
            if consumes_codes(endpoint):
                # The app cannot outrun hello-world; half as much again covers noise.
                ceiling = 1.5 * max([hello_round, *(row.hello or 0 for row in rows)])
                app_round, app_failed, cpu_round = timed_with_codes(
                    target.port, endpoint, target.mint, ceiling, tmp
                )
            else:
                app_round, app_failed, cpu_round = timed(target.port, endpoint, [], tmp)
            settle()
            hello, rps = max(hello, hello_round), max(rps, app_round)
            hello_cpu, cpu = min(hello_cpu, hello_cpu_round), min(cpu, cpu_round)
            failed += hello_failed + app_failed
        rows.append(
            Row(
                endpoint.name,
                rps,
                hello,
                endpoint.goal,
                costs[endpoint.name],
                failed,
                cpu_us=(cpu, hello_cpu),
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
