"""The Procfile runs as a PaaS would run it: release, then web under gunicorn."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import MISSING, fields
from importlib import metadata
from pathlib import Path

import requests
from devservices import free_port
from helpers import procfile
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from app.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_procfile_release_and_web_serve_a_ready_app(base_env: dict[str, str]) -> None:
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
                assert web.poll() is None, web.stderr and web.stderr.read()
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


# --- The lock a buildpack installs from, and the app.json manifest -------------

LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"
#: Set by the platform itself on every dyno, never by the operator.
PLATFORM_SET = {"PORT"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked(path: Path) -> dict[str, Requirement]:
    """The lock's pins that apply to this interpreter, by canonical name."""
    text = path.read_text().replace("\\\n", " ")
    pins: dict[str, Requirement] = {}
    for line in text.splitlines():
        spec = line.split("#", 1)[0].split(" --hash", 1)[0].strip()
        if not spec:
            continue
        requirement = Requirement(spec)
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def pinned_version(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not an exact pin"
    return spec.version


def closure(roots: list[str]) -> set[str]:
    """Every distribution ``roots`` need here, read from installed metadata."""
    needed: set[str] = set()
    pending = [(Requirement(root), "") for root in roots]
    while pending:
        requirement, parent_extra = pending.pop()
        marker = requirement.marker
        if marker is not None and not marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        key_extras = {f"{name}[{extra}]" for extra in extras}
        if name in needed and key_extras <= needed:
            continue
        needed |= {name} | key_extras
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{name} is not locked: run `make lock`") from None
        for extra in ["", *extras]:
            pending += [(Requirement(r), extra) for r in requires]
    return {name for name in needed if "[" not in name}


def test_locks_pin_exactly_what_pyproject_asks_for() -> None:
    project = pyproject()["project"]
    runtime = project["dependencies"]
    dev = runtime + project["optional-dependencies"]["dev"]
    for path, roots in ((LOCK, runtime), (DEV_LOCK, dev)):
        pins = locked(path)
        for root in map(Requirement, roots):
            pin = pins.get(canonicalize_name(root.name))
            assert pin, f"{path.name} lacks {root.name}: run `make lock`"
            version = pinned_version(pin)
            assert root.specifier.contains(version, prereleases=True), (
                f"{path.name} pins {root.name} {version}, outside {root.specifier}"
            )
        # Installed from this lock, the tree walked from pyproject's requirements
        # must be the lock, no more and no less: a stale lock fails here.
        assert closure(roots) == set(pins), path.name
        for name, pin in pins.items():
            assert metadata.version(name) == pinned_version(pin), name


def test_what_is_tested_is_what_is_deployed() -> None:
    dev = locked(DEV_LOCK)
    for name, pin in locked(LOCK).items():
        assert pinned_version(dev[name]) == pinned_version(pin), name


def test_locks_are_hash_pinned_and_name_no_machine_of_ours() -> None:
    for path in (LOCK, DEV_LOCK):
        text = path.read_text()
        entries = re.split(r"\n(?=\S)", text.split("\n", 2)[2].strip())
        for entry in entries:
            if not entry.startswith("#"):
                assert "--hash=sha256:" in entry, entry.splitlines()[0]
        for forbidden in ("file:", "--index-url", "--extra-index-url", "--find-links"):
            assert forbidden not in text, (path.name, forbidden)
        assert not re.search(r"^\s*-e\s|^\s*[./]", text, re.MULTILINE), path.name


def test_python_version_is_what_is_locked_and_allowed() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), "the buildpack wants major.minor"
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(version)
    assert f"--python-version {version}" in (ROOT / "Makefile").read_text()


def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text())


def test_app_json_provides_every_setting_the_config_reads() -> None:
    manifest = app_json()
    env = manifest["env"]
    from_addons = {addon["as"] + "_URL" for addon in manifest["addons"]}
    assert from_addons == {"DATABASE_URL", "REDIS_URL"}
    for field in fields(Settings):
        name = field.name.upper()
        if name in PLATFORM_SET:
            assert name not in env, name
            continue
        assert (name in env) != (name in from_addons), f"app.json lacks {name}"
        if field.default is MISSING and name in env:
            entry = env[name]
            assert entry.get("generator") == "secret" or entry["required"], name
    assert set(env) <= {field.name.upper() for field in fields(Settings)}
    for name, entry in env.items():
        assert entry["description"], name


def test_app_json_values_are_ones_the_config_accepts() -> None:
    env = {
        name: entry["value"]
        for name, entry in app_json()["env"].items()
        if "value" in entry
    }
    required = {
        "DATABASE_URL": "postgres://u:p@db.example/app",
        "REDIS_URL": "rediss://h.example:6380",
        "SECRET_KEY": "s" * 40,
        "JWT_SECRET": "j" * 40,
        "ISSUER": "https://auth.example",
    }
    settings = load_settings({**required, **env})
    # Behind the platform's router, exactly one proxy's headers are believed.
    assert settings.trusted_proxy_hops == 1


def test_app_json_runs_the_release_step_and_a_web_dyno() -> None:
    manifest = app_json()
    assert manifest["scripts"]["postdeploy"] == procfile()["release"]
    assert set(manifest["formation"]) == set(procfile()) - {"release"}
    assert manifest["formation"]["web"]["quantity"] >= 1


def test_gunicorns_own_records_are_json_lines(base_env: dict[str, str]) -> None:
    # A worker that cannot load the app: gunicorn's master says so, and stops.
    web = procfile()["web"].replace("'app:create_app()'", "'app:no_such_factory()'")
    assert "no_such_factory" in web
    port = free_port()
    env = {**os.environ, **base_env, "PORT": str(port), "WEB_CONCURRENCY": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run = subprocess.run(
        shlex.split(web), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    records = [
        json.loads(line)
        for line in (run.stdout + run.stderr).splitlines()
        if "gunicorn" in line
    ]
    assert any(r["name"] == "gunicorn.error" for r in records), run.stderr
    assert any("App failed to load" in r["message"] for r in records), run.stderr
