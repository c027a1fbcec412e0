"""`make bench` in a very short mode, so that the driver cannot rot unnoticed.

Timings on a shared machine say nothing, so only the shape is checked: every
row is there, every request succeeded, the servers counted something, and
the memory of the app as deployed was read for the master and each worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "POST /mcp whoami",
    "GET /auth/verify",
    "GET /healthz",
    "POST /token (code, HS256)",
    "POST /token (code, RS256)",
    "flow (4 requests)",
)


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
        assert row["requests_counted"] == 2, name
        assert name in run.stdout
    for name in ROWS[:5]:
        assert rows[name]["hello"] > 0
    # A flow registers a client and keeps its code in Redis (docs/reference.md).
    flow = rows["flow (4 requests)"]
    assert any(q.startswith("INSERT INTO oauth_clients") for q in flow["statements"])
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
