"""`make run` stops every server it started, however it is stopped, and keeps data."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from devservices import fallback_data_dir, free_port
from helpers import Browser

ROOT = Path(__file__).resolve().parent.parent


class DevRun:
    """``python tools/devservices.py run`` on a free port, its output in a file."""

    def __init__(self, data_dir: Path, output: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = output
        with output.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "tools/devservices.py", "run", "--data-dir", data_dir],
                env=run_env(self.port),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output.read_text()
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError("make run never became ready:\n" + self.output.read_text())

    def stop(self, signum: int) -> None:
        """Send ``signum`` to the devservices process only; it must clean up."""
        children = descendants(self.process.pid)
        commands = " ".join(children.values())
        for name in ("postgres", "redis-server", "gunicorn"):
            assert name in commands, commands
        self.process.send_signal(signum)
        assert self.process.wait(timeout=120) == 0, self.output.read_text()
        time.sleep(0.5)
        left = {pid: cmd for pid, cmd in children.items() if is_running(pid)}
        assert not left, left

    def browser(self) -> Browser:
        return Browser(self)  # type: ignore[arg-type]


def run_env(port: int) -> dict[str, str]:
    """Our environment, minus what would make `run` skip its own servers."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "ISSUER"):
        env.pop(name, None)
    return {**env, "PORT": str(port)}


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``, with its command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry.name)] = command.replace(b"\0", b" ").decode()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = commands[pid]
                frontier.append(pid)
    return found


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A data folder the postgres account can reach, so no fallback is involved."""
    with tempfile.TemporaryDirectory(prefix="mcp-auth-run-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp) / "devdata"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_every_server(
    reachable_dir: Path, tmp_path: Path, signum: Any
) -> None:
    run = DevRun(reachable_dir, tmp_path / "run.log")

    run.stop(signum)

    assert (reachable_dir / "postgres" / "PG_VERSION").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback is only for root")
def test_data_survives_a_restart_where_postgres_cannot_reach_the_checkout(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir(mode=0o700)
    data_dir = checkout / ".devdata"
    fallback = fallback_data_dir(data_dir)
    try:
        first = DevRun(data_dir, tmp_path / "first.log")
        printed = first.output.read_text()
        password = re.search(r"password:\s+(\S+)", printed)
        assert password, printed
        first.stop(signal.SIGTERM)
        info = fallback.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o711)
        assert (fallback / "postgres" / "PG_VERSION").exists()

        second = DevRun(data_dir, tmp_path / "second.log")
        try:
            assert "password:" not in second.output.read_text()
            login = second.browser().login("demo@example.com", password[1])
            assert login.status_code == 302, login.text
        finally:
            second.stop(signal.SIGTERM)
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback is only for root")
def test_a_fallback_folder_someone_else_planted_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "checkout" / ".devdata"
    fallback = fallback_data_dir(data_dir)
    fallback.symlink_to(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "tools/devservices.py", "run", "--data-dir", data_dir],
            cwd=ROOT,
            env=run_env(free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        fallback.unlink()
    assert result.returncode == 1
    assert f"refusing to use {fallback}" in result.stderr
