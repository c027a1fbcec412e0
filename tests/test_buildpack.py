"""Build and run the service as a Python buildpack does, from the committed tree.

The buildpack clones the pushed commit, installs ``requirements.txt`` with pip
into a fresh Python, and runs the Procfile's commands from the checkout; the
project itself is not installed. The test does the same with the settings a
PaaS hands out (``postgres://`` from the add-on, ``$PORT``, app.json's
values), so a dependency missing from the lock, or one the app needs only
through the dev extras, fails here.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
import requests
from devservices import free_port
from helpers import Browser, obtain_token, whoami_output

if TYPE_CHECKING:
    from conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
#: What a router puts in front of every request (one hop: TRUSTED_PROXY_HOPS=1).
ROUTER_HEADERS = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"}


def run(command: list[str] | str, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, **kwargs
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def slug(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean checkout of HEAD with only the locked runtime packages installed."""
    build = tmp_path_factory.mktemp("buildpack")
    source = build / "app"
    head = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).stdout.strip()
    run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(source)])
    run(["git", "-C", str(source), "checkout", "--quiet", "--detach", head])
    python = build / "python" / "bin" / "python"
    # The test's own pip installs into the new interpreter (pip --python), which
    # spares the slow ensurepip step; bytecode is compiled lazily at first import.
    run([sys.executable, "-m", "venv", "--without-pip", str(python.parent.parent)])
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    run(
        [*pip, "--quiet", "--no-compile", "--require-hashes", "-r", "requirements.txt"],
        cwd=source,
    )
    return source


def procfile(source: Path) -> dict[str, str]:
    lines = (source / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


@pytest.fixture
def dyno_env(slug: Path, base_env: dict[str, str]) -> dict[str, str]:
    """A dyno's environment: app.json's values, add-on URLs, $PORT, no dev tools."""
    manifest = json.loads((slug / "app.json").read_text())
    port = free_port()
    database = base_env["DATABASE_URL"].split("://", 1)[1]
    return {
        "PATH": f"{slug.parent / 'python' / 'bin'}:/usr/bin:/bin",
        "HOME": str(slug),
        **{k: v["value"] for k, v in manifest["env"].items() if "value" in v},
        "DATABASE_URL": f"postgres://{database}",
        "REDIS_URL": base_env["REDIS_URL"],
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET": secrets.token_hex(32),
        "ISSUER": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }


@pytest.fixture
def web(slug: Path, dyno_env: dict[str, str]) -> Iterator[str]:
    """The release step, then the web process; yields its URL once it is ready."""
    commands = procfile(slug)
    run(commands["release"], shell=True, cwd=slug, env=dyno_env)
    process = subprocess.Popen(
        commands["web"],
        shell=True,
        cwd=slug,
        env=dyno_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dyno_env['PORT']}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = requests.get(f"{url}/readyz", timeout=5)
            assert response.status_code == 200, response.text
            return
        except requests.ConnectionError:
            assert process.poll() is None, process.stderr and process.stderr.read()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)


def test_a_buildpack_build_serves_a_whole_authorization(
    slug: Path, dyno_env: dict[str, str], web: str
) -> None:
    password = secrets.token_urlsafe(16)
    created = run(
        [
            "flask",
            "--app",
            "app",
            "users",
            "create",
            "ops@example.com",
            "--password-stdin",
        ],
        cwd=slug,
        env=dyno_env,
        input=password + "\n",
    )
    assert "ops@example.com" in created.stdout

    # A Browser reads only its server's url.
    browser = Browser(cast("LiveServer", SimpleNamespace(url=web)))
    browser.headers.update(ROUTER_HEADERS)
    token = obtain_token(browser, {"email": "ops@example.com", "password": password})
    caller = whoami_output(browser, token)
    assert caller["email"] == "ops@example.com"
    assert caller["scope"] == "read write"


def test_the_build_has_no_development_packages(slug: Path) -> None:
    python = slug.parent / "python" / "bin" / "python"
    listed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"]
    ).stdout
    installed = {package["name"].lower() for package in json.loads(listed)}
    # requests is Authlib's HTTP client for signing in through a provider.
    assert {"gunicorn", "authlib", "h11", "requests"} <= installed
    assert not installed & {"pytest", "selenium", "mcp", "ruff", "mcp-auth-server"}
