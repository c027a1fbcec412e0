"""`make run` stops every server it started, however it is stopped, and keeps
data; after a run killed outright, the next one comes up; the demo password is
printed on every run; the service manages its own signing key."""

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
from devservices import OWNER_FILE, SECRETS_FILE, fallback_data_dir, free_port
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
                # Its own process group, as `make run` in a terminal has.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

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

    def password(self) -> str:
        """The demo user's password, as this run printed it."""
        printed = re.findall(r"password:\s+(\S+)", self.output.read_text())
        assert len(printed) == 1, self.output.read_text()
        return printed[0]

    def close(self) -> None:
        """Stop it if a test left it running (it stops what it started)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)


def run_env(port: int) -> dict[str, str]:
    """Our environment, minus what would make `run` skip its own servers."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "ISSUER"):
        env.pop(name, None)
    for name in ("JWT_SIGNING_KEY", "JWT_SECRET", "SIGNING_KEY_ALGORITHM"):
        env.pop(name, None)  # `make run` as the README shows it: a managed key
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
            assert second.password() == password[1]
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


def test_the_demo_password_is_kept_and_printed_on_every_run(
    reachable_dir: Path, tmp_path: Path
) -> None:
    # A data folder of an earlier version: a JWT_SECRET, no demo password.
    reachable_dir.mkdir()
    secrets_file = reachable_dir / SECRETS_FILE
    secrets_file.write_text(
        "SECRET_KEY=" + "k" * 48 + "\nJWT_SECRET=" + "j" * 48 + "\n"
    )
    secrets_file.chmod(0o644)

    first = DevRun(reachable_dir, tmp_path / "first.log")
    try:
        password = first.password()
        assert f"kept in {secrets_file}" in first.output.read_text()
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        kept = secrets_file.read_text()
        assert f"DEMO_PASSWORD={password}\n" in kept
        assert "SECRET_KEY=" + "k" * 48 in kept and "JWT_SECRET" not in kept
        # The key the service made itself (RS256), as a default deploy's.
        keys = requests.get(first.url + "/.well-known/jwks.json", timeout=30).json()
        assert [(key["kty"], key["alg"]) for key in keys["keys"]] == [("RSA", "RS256")]
        assert not (reachable_dir / "jwt-signing-key.pem").exists()
    finally:
        first.stop(signal.SIGTERM)

    second = DevRun(reachable_dir, tmp_path / "second.log")
    try:
        assert second.password() == password
        login = second.browser().login("demo@example.com", password)
        assert login.status_code == 302, login.text
    finally:
        second.stop(signal.SIGTERM)

    # A demo user an earlier version made, whose password it printed once:
    # it gets the password kept from now on.
    secrets_file.write_text("SECRET_KEY=" + "k" * 48 + "\n")
    third = DevRun(reachable_dir, tmp_path / "third.log")
    try:
        new_password = third.password()
        assert new_password != password
        assert "password that was never kept" in third.output.read_text()
        assert f"DEMO_PASSWORD={new_password}\n" in secrets_file.read_text()
        browser = third.browser()
        assert browser.login("demo@example.com", password).status_code != 302
        login = browser.login("demo@example.com", new_password)
        assert login.status_code == 302, login.text
    finally:
        third.stop(signal.SIGTERM)


def test_a_run_killed_outright_is_followed_by_one_that_comes_up_with_its_data(
    reachable_dir: Path, tmp_path: Path
) -> None:
    first = DevRun(reachable_dir, tmp_path / "first.log")
    password = first.password()
    left = descendants(first.process.pid)
    # kill -9 of `make run`'s whole process group, as a closed terminal's
    # hard kill or an OOM kill of the group does: no clean-up runs.
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    time.sleep(0.5)
    survivors = " ".join(cmd for pid, cmd in left.items() if is_running(pid))
    assert "postgres" in survivors  # its own session: what used to block a rerun

    second = DevRun(reachable_dir, tmp_path / "second.log")
    try:
        printed = second.output.read_text()
        assert "stopping the postgres" in printed and "stopping the redis" in printed
        assert second.password() == password
        login = second.browser().login("demo@example.com", password)
        assert login.status_code == 302, login.text  # the data was kept
    finally:
        second.stop(signal.SIGTERM)
    gone = {pid: cmd for pid, cmd in left.items() if is_running(pid)}
    assert not gone, gone


def test_pid_files_naming_another_process_are_cleared(
    reachable_dir: Path, tmp_path: Path
) -> None:
    first = DevRun(reachable_dir, tmp_path / "first.log")
    first.stop(signal.SIGTERM)
    # As after a reboot: the pid in the files now names another process
    # (here this one, which is alive and neither Postgres nor Redis).
    postgres = reachable_dir / "postgres"
    (postgres / "postmaster.pid").write_text(f"{os.getpid()}\n{postgres}\n")
    (reachable_dir / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")

    second = DevRun(reachable_dir, tmp_path / "second.log")
    try:
        printed = second.output.read_text()
        assert "removing the stale" in printed and "postmaster.pid" in printed
        assert "redis.pid" in printed
    finally:
        second.stop(signal.SIGTERM)


def test_a_folder_another_run_is_using_is_refused_in_one_line(
    reachable_dir: Path, tmp_path: Path
) -> None:
    first = DevRun(reachable_dir, tmp_path / "first.log")
    try:
        result = subprocess.run(
            [sys.executable, "tools/devservices.py", "run"]
            + ["--data-dir", str(reachable_dir)],
            cwd=ROOT,
            env=run_env(free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"{reachable_dir} is in use by another run (pid {first.process.pid});"
            f" stop it first (Ctrl-C there, or kill {first.process.pid})"
        ]
        assert (reachable_dir / OWNER_FILE).read_text().split()[0] == str(
            first.process.pid
        )
        response = requests.get(first.url + "/readyz", timeout=30)
        assert response.status_code == 200
    finally:
        first.stop(signal.SIGTERM)
