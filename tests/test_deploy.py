"""The Procfile runs as a PaaS would run it: release, then web under gunicorn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from devservices import free_port

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_release_and_web_serve_a_ready_app(base_env) -> None:
    port = free_port()
    env = {
        **os.environ,
        **base_env,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "ISSUER": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "INFO",
        # As on a PaaS, the project's installed commands are on PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    commands = procfile()
    assert set(commands) == {"web", "release"}
    release = subprocess.run(
        commands["release"],
        shell=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert release.returncode == 0, release.stderr

    web = subprocess.Popen(
        commands["web"],
        shell=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(
                    f"http://127.0.0.1:{port}/readyz",
                    headers={"X-Request-ID": "deploy-check"},
                    timeout=5,
                )
                break
            except requests.ConnectionError:
                assert web.poll() is None, web.stderr.read()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        metadata = requests.get(
            f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=5
        ).json()
        assert metadata["issuer"] == f"http://127.0.0.1:{port}"
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        out, _ = web.communicate(timeout=30)
    logged = [json.loads(line) for line in out.splitlines() if "deploy-check" in line]
    assert logged and logged[0]["path"] == "/readyz" and logged[0]["status"] == 200
