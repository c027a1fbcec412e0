"""The servers ``make bench`` measures: the app and hello-world under gunicorn.

Both are started with the Procfile's ``web:`` command line; only the app
module differs, so workers, worker class and threads (``gunicorn.conf.py``)
are the same for both.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import devservices
from bench_flows import REDIRECT_URI

ROOT = devservices.ROOT
APP_MODULE = "app:create_app()"
HELLO_MODULE = "tools.bench_hello:create_app()"
EMAIL = "bench@example.com"


@dataclass(frozen=True)
class Served:
    """Both servers' ports, the app's settings and the signed-in person."""

    app_port: int
    hello_port: int
    env: dict[str, str]
    password: str
    user_id: str
    #: Process group of each port's gunicorn (master and workers).
    groups: dict[int, int]


def web_command(app_module: str) -> list[str]:
    """The Procfile's ``web:`` command with ``app_module`` as the app to serve."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = shlex.split(line.removeprefix("web:"))
            break
    else:
        raise SystemExit("the Procfile has no web: line")
    if APP_MODULE not in command:
        raise SystemExit(f"the Procfile's web: line does not serve {APP_MODULE}")
    command[command.index(APP_MODULE)] = app_module
    # The gunicorn of this interpreter's environment (.venv), not one on PATH.
    local = Path(sys.executable).parent / command[0]
    command[0] = str(local) if local.exists() else shutil.which(command[0]) or ""
    return command


def app_env(urls: dict[str, str], port: int) -> dict[str, str]:
    """Settings for the bench: limits that a load of sign-ups would trip, lifted."""
    return {
        **urls,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "JWT_SECRET": secrets.token_urlsafe(32),
        "ISSUER": f"http://127.0.0.1:{port}",
        "REGISTRATION_RATE_LIMIT": "1000000 per second",
        "LOGIN_RATE_LIMIT": "1000000 per second",
        "MAX_CLIENTS_PER_ADDRESS": "1000000000",
        "MAX_CLIENTS": "1000000000",
    }


@contextlib.contextmanager
def gunicorn(
    app_module: str, env: dict[str, str], port: int, log: Path
) -> Iterator[subprocess.Popen]:
    """Start the web command serving ``app_module``; it may still be booting."""
    full_env = {**_base_environ(), **env, "PORT": str(port)}
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            web_command(app_module),
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        # Nothing to save, and a graceful stop can wait out keep-alive
        # connections for the whole graceful_timeout: kill master and workers.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _base_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}


def prepare_database(env: dict[str, str]) -> tuple[str, str]:
    """Migrate and create the signed-in person; return their password and id."""
    from app.db import db
    from app.migrate import upgrade
    from app.users import create_user

    upgrade(env["DATABASE_URL"])
    password = secrets.token_urlsafe(12)
    with _app_context(env), db.transaction():
        user = create_user(EMAIL, password)
    return password, str(user.id)


@contextlib.contextmanager
def _app_context(env: dict[str, str]) -> Iterator[None]:
    from app import create_app

    app = create_app(env)
    try:
        with app.app_context():
            yield
    finally:
        app.extensions["db"].engine.dispose()
        app.extensions["redis"].close()


@contextlib.contextmanager
def code_minter(
    env: dict[str, str], client_id: str, user_id: str, challenge: str
) -> Iterator[Callable[[int], list[str]]]:
    """Yield ``mint(count)``, which saves fresh codes for one approved client.

    Going through consent for each code would take longer than the timed run
    itself; the store the app keeps its own codes in makes them exactly as
    the consent step would.
    """
    import uuid

    from app.config import current_settings
    from app.oauth.codes import AuthorizationCode
    from app.oauth.consent import find_consent
    from app.oauth.grants.authorization_code import code_store
    from app.oauth.resources import builtin_resource
    from app.oauth.tokens import new_jti

    def mint(count: int) -> list[str]:
        store = code_store()
        resource = builtin_resource(current_settings()).uri
        consent = find_consent(uuid.UUID(user_id), client_id, resource)
        assert consent is not None, "the bench client went through consent"
        codes = [secrets.token_urlsafe(32) for _ in range(count)]
        for code in codes:
            data = AuthorizationCode(
                client_id=client_id,
                redirect_uri=REDIRECT_URI,
                scope="read write",
                user_id=user_id,
                code_challenge=challenge,
                code_challenge_method="S256",
                resource=builtin_resource(current_settings()).uri,
                auth_time=int(time.time()),
                consent_id=str(consent.id),
                token_jti=new_jti(),
            )
            store.save(code, data)
        return codes

    with _app_context(env):
        yield mint


@contextlib.contextmanager
def serve(urls: dict[str, str], logs: Path) -> Iterator[Served]:
    """Serve the app and hello-world side by side; prepare the database meanwhile."""
    app_port, hello_port = devservices.free_port(), devservices.free_port()
    env = app_env(urls, app_port)
    with (
        gunicorn(APP_MODULE, env, app_port, logs / "app.log") as app,
        gunicorn(HELLO_MODULE, env, hello_port, logs / "hello.log") as hello,
    ):
        password, user_id = prepare_database(env)
        devservices.wait_for_port(app_port, app, "gunicorn serving the app")
        devservices.wait_for_port(hello_port, hello, "gunicorn serving hello-world")
        groups = {app_port: app.pid, hello_port: hello.pid}
        yield Served(app_port, hello_port, env, password, user_id, groups)
