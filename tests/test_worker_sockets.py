"""Each gunicorn worker listens on its own socket, so new connections are
dealt among the workers; a port already taken stops the start with one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests
from devservices import free_port
from helpers import start_web

ROOT = Path(__file__).resolve().parent.parent


def tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of the sockets on local ``port`` in ``state`` (01 established,
    0A listening), from the kernel's tables."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


@contextmanager
def served(
    base_env: dict[str, str], port: int, log: Path, workers: str
) -> Iterator[subprocess.Popen]:
    web = start_web(base_env, port, log, WEB_CONCURRENCY=workers)
    try:
        yield web
    finally:
        web.send_signal(signal.SIGQUIT)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


def held_open(port: int, count: int) -> ExitStack:
    """``count`` keep-alive connections opened at once, each answered once."""
    stack = ExitStack()
    connections = [
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(count)
    ]
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for connection in connections:
        connection.sendall(request)
    for connection in connections:
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
    return stack


def test_each_worker_listens_on_its_own_socket_and_gets_its_share(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    with served(base_env, port, tmp_path / "web.log", workers="2") as web:
        # /readyz answered from the first worker to boot; the second may be
        # booting still.
        deadline = time.monotonic() + 30
        while len(tcp_sockets(port, "0A")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(web.pid)
        assert len(workers) == 2, workers
        listening = tcp_sockets(port, "0A")
        assert not socket_inodes(web.pid) & listening, "the master listens"
        own = [socket_inodes(pid) & listening for pid in workers]
        assert all(len(inodes) == 1 for inodes in own), own
        assert own[0] != own[1], "the workers share one socket"
        # On one shared socket, the worker awake first could take a whole
        # burst; dealt by the kernel, a worker misses all 32 once in 2**31.
        for _ in range(5):
            with held_open(port, 32):
                established = tcp_sockets(port, "01")
                shares = [len(socket_inodes(pid) & established) for pid in workers]
            assert sum(shares) == 32, shares
            assert min(shares) > 0, shares


def start_up_error(env: dict[str, str], port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "app:create_app()",
        ],
        env={
            **os.environ,
            **env,
            "PORT": str(port),
            "ISSUER": f"http://127.0.0.1:{port}",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_another_program_listens_on_stops_the_start_with_one_line(
    base_env: dict[str, str],
) -> None:
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = start_up_error(base_env, port)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"cannot listen on 0.0.0.0:{port}: Address already in use"
    ]


def test_a_second_copy_on_the_same_port_stops_with_one_line_and_the_first_serves_on(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    with served(base_env, port, tmp_path / "web.log", workers="1"):
        result = start_up_error(base_env, port)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"cannot listen on 0.0.0.0:{port}: Address already in use"
        ]
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok


def test_connections_an_earlier_run_closed_do_not_block_the_start(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    with served(base_env, port, tmp_path / "first.log", workers="1"):
        # The server closes this one first: its side waits out TIME_WAIT on the port.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(
                f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
    assert tcp_sockets(port, "06"), "no connection of the first run waits"
    with served(base_env, port, tmp_path / "second.log", workers="1"):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
