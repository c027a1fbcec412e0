"""Memory of the app as deployed while a burst of password sign-ins runs.

``make bench`` serves the app with the Procfile's ``web:`` command, the
deploy's default settings (no ``JWT_SECRET``: the service's own RS256 key)
and ``WEB_CONCURRENCY=2``, and reads the gunicorn master's and each worker's
memory from ``/proc``:

- at rest, once each worker has served pages but no sign-in;
- at the peak of :data:`SIGN_INS` concurrent sign-ins (argon2id takes its
  memory cost per hash, and each of a worker's threads may hash at once):
  each process's high-water mark (``VmHWM``, reset just before the burst
  through ``clear_refs``), and the process tree's PSS sampled meanwhile;
- a second after the burst, when what the allocator kept is left;
- at the end of ``make bench``, once the same server has also served the
  timed RS256 code exchanges, with the connections each process holds open
  to Postgres and Redis by then (:func:`finish`).

RSS counts the pages a worker still shares with the master after the fork in
both; PSS splits each shared page between the processes that map it, so
their sum is what the tree occupies. The verdict against the dyno is taken
on the larger figure: every process at its own peak at once, RSS added.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_flows

#: Concurrent password sign-ins in a burst.
SIGN_INS = 16
#: Memory of the dyno the README sizes for (Heroku's "512 MB"), in MiB.
DYNO_MIB = 512
#: Seconds between samples of the process tree while a burst runs.
SAMPLE_INTERVAL = 0.005
#: Seconds after a burst before "after" is read, and idle before "at rest".
SETTLE = 1.0
_KIB_PER_MIB = 1024


@dataclass
class Process:
    """One process of the gunicorn tree; memory in MiB."""

    name: str
    pid: int
    rest_rss: float = 0.0
    rest_pss: float = 0.0
    peak_rss: float = 0.0
    peak_pss: float = 0.0
    after_rss: float = 0.0
    end_rss: float = 0.0
    #: Established connections to Postgres and to Redis, read at the end.
    postgres: int = 0
    redis: int = 0


@dataclass
class Memory:
    """What one gunicorn tree used during bursts of sign-ins."""

    workers: int
    threads: int
    sign_ins: int
    bursts: int
    master: Process
    worker_processes: list[Process]
    #: Largest sum of the tree's PSS seen in one sample.
    total_peak_pss: float = 0.0
    error: str = ""
    #: How each process's peak was read ("VmHWM" or "sampled VmRSS").
    peak_source: str = "VmHWM"

    @property
    def processes(self) -> list[Process]:
        return [self.master, *self.worker_processes]

    @property
    def total_peak_rss(self) -> float:
        """Master and every worker at their own peaks at once, RSS added."""
        return self.master.peak_rss + sum(w.peak_rss for w in self.worker_processes)

    @property
    def fits(self) -> bool:
        return self.total_peak_rss <= DYNO_MIB


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / _KIB_PER_MIB
    return values


def _pss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / _KIB_PER_MIB
    return 0.0


def _reset_peak(pid: int) -> bool:
    """Set ``VmHWM`` back to the current RSS (Linux ``clear_refs`` value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(master: int) -> list[int]:
    """The gunicorn master's workers, by process id."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            found.append(int(stat.parent.name))
    return sorted(found)


def connections(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` to ``port`` on this host."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            # State 01 is ESTABLISHED; field 9 is the socket's inode.
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


class _Sampler(threading.Thread):
    """Reads the tree's RSS and PSS until stopped; keeps each one's largest."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.rss = dict.fromkeys(pids, 0.0)
        self.pss = dict.fromkeys(pids, 0.0)
        self.total_pss = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            total = 0.0
            for pid in self.pids:
                rss, pss = _status(pid)["VmRSS"], _pss(pid)
                self.rss[pid] = max(self.rss[pid], rss)
                self.pss[pid] = max(self.pss[pid], pss)
                total += pss
            self.total_pss = max(self.total_pss, total)
            self.stopping.wait(SAMPLE_INTERVAL)


def _concurrently(count: int, job: Callable[[int], None]) -> str:
    """Run ``job(i)`` in ``count`` threads; the first error, or ""."""
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            job(index)
        except (bench_flows.FlowError, OSError) as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors[0] if errors else ""


def _warm(port: int) -> str:
    """Have every worker serve pages (no sign-in), from concurrent connections."""

    def pages(_index: int) -> None:
        client = bench_flows.Client(port)
        for path in ("/login", "/healthz", "/.well-known/oauth-authorization-server"):
            status, _, data = client.request("GET", path)
            bench_flows.expect(status, 200, f"GET {path}", data)
        client.connection.close()

    return _concurrently(2 * SIGN_INS, pages)


def _burst(port: int, email: str, password: str) -> str:
    """Open the sign-in page on each connection, then all sign in at once."""
    clients = [bench_flows.Client(port) for _ in range(SIGN_INS)]
    tokens: list[str] = []
    try:
        for client in clients:
            status, _, page = client.request("GET", "/login")
            bench_flows.expect(status, 200, "GET /login", page)
            tokens.append(bench_flows.csrf_token("GET /login", page))
    except (bench_flows.FlowError, OSError) as exc:
        return str(exc)
    barrier = threading.Barrier(SIGN_INS)

    def sign_in(index: int) -> None:
        fields = {"csrf_token": tokens[index], "email": email, "password": password}
        barrier.wait()
        status, _, data = clients[index].form("/login", fields)
        bench_flows.expect(status, 302, "POST /login", data)

    error = _concurrently(SIGN_INS, sign_in)
    for client in clients:
        client.connection.close()
    return error


def measure(
    master: int, port: int, email: str, password: str, bursts: int, threads: int
) -> Memory:
    """Warm the workers, read them at rest, then run ``bursts`` bursts."""
    error = _warm(port)
    pids = children(master)
    time.sleep(SETTLE)
    tree = [master, *pids]
    memory = Memory(
        workers=len(pids),
        threads=threads,
        sign_ins=SIGN_INS,
        bursts=bursts,
        master=Process("master", master),
        worker_processes=[
            Process(f"worker {i + 1}", pid) for i, pid in enumerate(pids)
        ],
    )
    by_pid = {process.pid: process for process in memory.processes}
    for pid, process in by_pid.items():
        process.rest_rss, process.rest_pss = _status(pid)["VmRSS"], _pss(pid)
    exact = all(_reset_peak(pid) for pid in tree)
    if not exact:
        memory.peak_source = "sampled VmRSS"
    for _ in range(bursts):
        if error:
            break
        sampler = _Sampler(tree)
        sampler.start()
        error = _burst(port, email, password)
        sampler.stopping.set()
        sampler.join()
        memory.total_peak_pss = max(memory.total_peak_pss, sampler.total_pss)
        for pid, process in by_pid.items():
            peak = _status(pid)["VmHWM"] if exact else sampler.rss[pid]
            process.peak_rss = max(process.peak_rss, peak, sampler.rss[pid])
            process.peak_pss = max(process.peak_pss, sampler.pss[pid])
    time.sleep(SETTLE)
    for pid, process in by_pid.items():
        process.after_rss = _status(pid)["VmRSS"]
    memory.error = error
    return memory


def finish(memory: Memory, backends: dict[str, int]) -> None:
    """Read RSS and the open connections once the bench is done with the tree."""
    for process in memory.processes:
        process.end_rss = _status(process.pid)["VmRSS"]
        process.postgres = connections(process.pid, backends["postgres"])
        process.redis = connections(process.pid, backends["redis"])


def as_json(memory: Memory) -> dict[str, Any]:
    return {
        "workers": memory.workers,
        "threads": memory.threads,
        "sign_ins": memory.sign_ins,
        "bursts": memory.bursts,
        "processes": [vars(process) for process in memory.processes],
        "total_peak_rss": memory.total_peak_rss,
        "total_peak_pss": memory.total_peak_pss,
        "fits": memory.fits,
        "peak_source": memory.peak_source,
        "error": memory.error,
    }
