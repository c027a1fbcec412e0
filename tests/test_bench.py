"""`make bench` in a very short mode, so that the driver cannot rot unnoticed.

Timings on a shared machine say nothing, so only the shape is checked: every
row is there, every request succeeded, the servers counted something, and
the memory of the app as deployed was read for the master and each worker.
The wrk script's account of the answers is checked against a stand-in server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "POST /mcp whoami",
    "GET /auth/verify",
    "GET /healthz",
    "POST /token (code, HS256)",
    "POST /token (code, RS256)",
    "POST /token (refresh)",
    "POST /token (client credentials)",
    "POST /introspect",
    "POST /register",
    "POST /revoke",
    "GET /account",
    "POST /token (device, pending)",
    "POST /token (ID-JAG)",
    "flow (4 requests)",
)
#: What each row's requests must have cost, at least (docs/reference.md).
STATEMENTS = {
    "POST /token (refresh)": ("UPDATE refresh_tokens", "INSERT INTO refresh_tokens"),
    "POST /token (client credentials)": (),
    "POST /revoke": ("UPDATE consents",),
    "POST /register": ("WITH added AS (INSERT INTO oauth_clients",),
    "GET /account": ("SELECT consents",),
    "POST /token (ID-JAG)": ("SELECT trusted_issuers",),
}


def test_bench_produces_every_row_and_count(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    env = {
        **os.environ,
        "BENCH_SECONDS": "1",
        "BENCH_WARMUP": "0",
        "BENCH_ROUNDS": "1",
        "BENCH_FLOW_PROCESSES": "2",
        "BENCH_COUNT_REQUESTS": "2",
        "BENCH_JSON": str(results),
    }
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(results.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert tuple(rows) == ROWS
    for name, row in rows.items():
        assert row["rate"] > 0, name
        assert row["failed"] == 0 and row["error"] == "", name
        assert row["answers"] == {} and row["first_failure"] == "", name
        assert row["requests_counted"] == 2, name
        assert name in run.stdout
    for name in ROWS[:-1]:
        assert rows[name]["hello"] > 0
    for name in ("POST /token (refresh)", "POST /token (client credentials)"):
        assert rows[name]["min_rate"] == 1000, name
        assert "/s" in _report_line(run.stdout, name)
    assert rows["POST /introspect"]["goal"] == 0.70
    for name, statements in STATEMENTS.items():
        for start in statements:
            assert any(q.startswith(start) for q in rows[name]["statements"]), (
                name,
                start,
            )
    # A pending poll is one script; the exchange spends the assertion's jti.
    assert rows["POST /token (device, pending)"]["commands"]["evalsha"] == 2
    assert rows["POST /introspect"]["statements"] == {}
    # A flow registers a client and keeps its code in Redis (docs/reference.md).
    flow = rows["flow (4 requests)"]
    assert any(
        q.startswith("WITH added AS (INSERT INTO oauth_clients")
        for q in flow["statements"]
    )
    assert flow["commands"] or flow["script_commands"]
    for name in ("POST /token (code, HS256)", "POST /token (code, RS256)"):
        assert rows[name]["statements"], name
    # The deployed app's master and two workers, each read at rest and at
    # the peak of the burst, with the verdict against the dyno printed.
    memory = report["memory"]
    assert memory["error"] == "" and memory["workers"] == 2 and memory["threads"]
    master, *workers = memory["processes"]
    assert master["name"] == "master" and len(workers) == 2
    figures = ("rest_rss", "rest_pss", "peak_rss", "peak_pss", "after_rss", "end_rss")
    for process in memory["processes"]:
        for figure in figures:
            assert process[figure] > 0, (figure, process)
    assert memory["total_peak_rss"] >= memory["total_peak_pss"] > 0
    assert any(worker["postgres"] and worker["redis"] for worker in workers)
    assert "master + 2 workers" in run.stdout


def _report_line(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(name + " "))


class _StandIn(BaseHTTPRequestHandler):
    """Answers 200 to a body it has not seen, 400 with a JSON error to a repeat."""

    protocol_version = "HTTP/1.1"
    seen: set[bytes] = set()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        repeated = body in self.seen
        self.seen.add(body)
        answer = (
            b'{"error": "invalid_grant", "x": "caf\xc3\xa9"}' if repeated else b"ok"
        )
        self.send_response(400 if repeated else 200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # wrk resets its connections when its time is up


@pytest.fixture
def stand_in() -> Iterator[int]:
    _StandIn.seen = set()
    server = _Quiet(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_wrk_counts_answers_and_repeated_codes(stand_in: int, tmp_path: Path) -> None:
    """Codes that run out repeat; the repeats and what they were answered are told."""
    import bench
    from bench_targets import Endpoint

    endpoint = Endpoint("stand-in", "POST", "/", {}, "code={code}")
    codes = [str(n) for n in range(40)]
    run = bench.wrk(stand_in, endpoint, 1, codes, tmp_path)
    # (Each code is sent once before any repeats; some may be in flight
    # when the run ends.)
    assert 0 < run.answers["200"] <= 40 and set(run.answers) == {"200", "400"}
    assert run.answers["400"] > 0 and run.repeats > 0
    assert run.failed == max(run.answers["400"], run.repeats)
    assert run.first_failure.startswith('400 {"error": "invalid_grant"')
    # Against a server answering 400 as expected, only the repeats fail.
    two = ["fresh-1", "fresh-2"]  # one for each of wrk's threads
    expected_400 = bench.wrk(stand_in, endpoint, 1, two, tmp_path, 400)
    assert expected_400.answers["400"] > 0
    assert expected_400.first_failure.startswith("200 ok")
    assert expected_400.answers["200"] <= 2
    assert expected_400.failed == max(2, expected_400.repeats)
