"""The servers ``make bench`` measures: the app and hello-world under gunicorn.

All are started with the Procfile's ``web:`` command line; only the app
module differs, so workers, worker class and threads (``gunicorn.conf.py``)
are the same for all. The app is served twice: signing with HS256
(``JWT_SECRET``), as the bench always has, and as a default deploy runs it,
with the service's own RS256 key and ``WEB_CONCURRENCY=2``.
"""

from __future__ import annotations

import ast
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
from typing import Any
from urllib.parse import urlsplit

import devservices
from bench_flows import REDIRECT_URI

ROOT = devservices.ROOT
APP_MODULE = "app:create_app()"
HELLO_MODULE = "tools.bench_hello:create_app()"
EMAIL = "bench@example.com"
#: Workers of the deployed app, whose memory the bench reads (README's dyno).
DEPLOYED_WORKERS = 2
#: The resource server that introspects tokens (``RESOURCE_SERVERS``).
RESOURCE_SERVER = "bench-resource"


@dataclass(frozen=True)
class Served:
    """The servers' ports, the apps' settings and the signed-in person."""

    app_port: int
    hello_port: int
    env: dict[str, str]
    password: str
    user_id: str
    #: Process group of each port's gunicorn (master and workers); the
    #: master's process id too, since it leads its group.
    groups: dict[int, int]
    #: The app as deployed: its own RS256 key, ``DEPLOYED_WORKERS`` workers.
    deployed_port: int
    deployed_env: dict[str, str]

    @property
    def introspection_secret(self) -> str:
        """The secret :data:`RESOURCE_SERVER` introspects with."""
        return self.env["RESOURCE_SERVERS"].partition(":")[2]

    def backend_ports(self) -> dict[str, int]:
        """The TCP ports of Postgres and Redis."""
        return {
            "postgres": urlsplit(self.env["DATABASE_URL"]).port or 5432,
            "redis": urlsplit(self.env["REDIS_URL"]).port or 6379,
        }


def gunicorn_setting(name: str) -> int:
    """An integer ``gunicorn.conf.py`` sets, read without running the file."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == [name]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, int)
        ):
            return node.value.value
    raise SystemExit(f"gunicorn.conf.py sets no integer {name}")


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
    """Settings for the bench: limits that a load of sign-ups would trip,
    lifted (every request comes from 127.0.0.1); a resource server that may
    introspect; key sets and identity issuers on loopback (the bench serves
    an issuer's JWK Set itself)."""
    return {
        **urls,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "JWT_SECRET": secrets.token_urlsafe(32),
        "ISSUER": f"http://127.0.0.1:{port}",
        "REGISTRATION_RATE_LIMIT": "1000000 per second",
        "DEVICE_AUTHORIZATION_RATE_LIMIT": "1000000 per second",
        "LOGIN_RATE_LIMIT": "1000000 per second",
        "MAX_CLIENTS_PER_ADDRESS": "1000000000",
        "MAX_CLIENTS": "1000000000",
        "RESOURCE_SERVERS": f"{RESOURCE_SERVER}:{secrets.token_urlsafe(24)}",
        "CIMD_ALLOW_LOOPBACK": "on",
    }


def deployed_env(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` as a default deploy has it: no ``JWT_SECRET``, so the service
    signs with the RS256 key it made (README, "Signing keys"), and the
    default number of workers. The same ``SECRET_KEY`` opens the same keys."""
    deployed = {k: v for k, v in env.items() if k != "JWT_SECRET"}
    deployed["ISSUER"] = f"http://127.0.0.1:{port}"
    deployed["WEB_CONCURRENCY"] = str(DEPLOYED_WORKERS)
    return deployed


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


def prepare_database(env: dict[str, str], deployed: dict[str, str]) -> tuple[str, str]:
    """Migrate, make the signing key as the first release does, and create the
    signed-in person; return their password and id."""
    from app import signing_keys
    from app.config import current_settings
    from app.db import db
    from app.migrate import upgrade
    from app.users import create_user

    upgrade(env["DATABASE_URL"])
    with app_for(deployed) as app, app.app_context():
        signing_keys.ensure(current_settings())
    password = secrets.token_urlsafe(12)
    with app_for(env) as app, app.app_context(), db.transaction():
        user = create_user(EMAIL, password)
    return password, str(user.id)


@contextlib.contextmanager
def app_for(env: dict[str, str]) -> Iterator[Any]:
    """The app made from ``env``, its connections closed at the end."""
    from app import create_app
    from app.logs import log_to_stderr

    app = create_app(env)
    # As a CLI command's: the records this process makes (the signing key's
    # audit event) go to stderr with the bench's own, not into the report.
    log_to_stderr()
    try:
        yield app
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
        with app.app_context():
            return _mint(count)

    def _mint(count: int) -> list[str]:
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

    # Each call enters its own app's context: minters for both apps can be
    # open at once.
    with app_for(env) as app:
        yield mint


@contextlib.contextmanager
def serve(urls: dict[str, str], logs: Path) -> Iterator[Served]:
    """Serve the app (twice) and hello-world side by side.

    The database is prepared meanwhile; the deployed app may make its key at
    its first token if it gets there first, as a deploy without a release
    step would.
    """
    app_port, hello_port = devservices.free_port(), devservices.free_port()
    deployed_port = devservices.free_port()
    env = app_env(urls, app_port)
    deployed = deployed_env(env, deployed_port)
    with (
        gunicorn(APP_MODULE, env, app_port, logs / "app.log") as app,
        gunicorn(HELLO_MODULE, env, hello_port, logs / "hello.log") as hello,
        gunicorn(
            APP_MODULE, deployed, deployed_port, logs / "deployed.log"
        ) as deployed_app,
    ):
        password, user_id = prepare_database(env, deployed)
        devservices.wait_for_port(app_port, app, "gunicorn serving the app")
        devservices.wait_for_port(hello_port, hello, "gunicorn serving hello-world")
        devservices.wait_for_port(
            deployed_port, deployed_app, "gunicorn serving the app as deployed"
        )
        groups = {
            app_port: app.pid,
            hello_port: hello.pid,
            deployed_port: deployed_app.pid,
        }
        yield Served(
            app_port,
            hello_port,
            env,
            password,
            user_id,
            groups,
            deployed_port,
            deployed,
        )
