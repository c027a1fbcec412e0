"""Real Postgres and Redis, the real app on a real socket, clean state per test."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import devservices
import pytest
import redis
import sqlalchemy
from document_server import DocumentServer
from helpers import Browser, RestartableRedis
from oidc_upstream import OidcProvider, install
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server as make_wsgi_server

from app import create_app
from app.config import settings_from_environment
from app.logs import JsonLinesHandler
from app.migrate import upgrade
from app.models import Base

#: Every table the models declare, emptied before each test.
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    """URLs of the test Postgres and Redis; started here unless `make test` did.

    Each pytest-xdist worker (``gw0``...) has servers of its own, which `make
    test` passes as ``TEST_DATABASE_URL_GW0``...: every test empties the tables
    and Redis, so workers must never share them.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    suffix = f"_{worker.upper()}" if worker else ""
    database_url = os.environ.get(f"TEST_DATABASE_URL{suffix}")
    redis_url = os.environ.get(f"TEST_REDIS_URL{suffix}")
    if database_url and redis_url:
        yield {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        return

    with tempfile.TemporaryDirectory(prefix="mcp-auth-test-") as tmp:
        Path(tmp).chmod(0o755)
        with devservices.services(Path(tmp), durable=False) as urls:
            yield urls


@pytest.fixture(scope="session")
def base_env(service_urls: dict[str, str]) -> dict[str, str]:
    env = {
        **service_urls,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "JWT_SECRET": secrets.token_urlsafe(32),
        "ISSUER": "http://127.0.0.1:8000",
        # Generous limits by default; the rate-limit tests set their own.
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "REGISTRATION_RATE_LIMIT": "1000 per minute",
        "API_KEY_RATE_LIMIT": "1000 per minute",
        "CIMD_FETCH_RATE_LIMIT": "1000 per minute",
        # The proxies the tests run set the resource headers of /auth/verify
        # themselves; tests of the default (off) say so.
        "VERIFY_RESOURCE_HEADERS": "on",
        "LOG_LEVEL": "WARNING",
    }
    upgrade(settings_from_environment(env).database_url)
    return env


@pytest.fixture(scope="session")
def engine(base_env: dict[str, str]) -> Iterator[sqlalchemy.Engine]:
    # Pinged on checkout: tests that cut Postgres's sessions
    # (pg_terminate_backend) may cut the ones pooled here too.
    engine = sqlalchemy.create_engine(
        settings_from_environment(base_env).database_url, pool_pre_ping=True
    )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client(base_env: dict[str, str]) -> Any:
    """A ``redis.Redis`` on the tests' Redis, answering ``str``.

    Typed ``Any``, as ``app.redis_store.get_redis`` is: redis-py annotates each
    command as returning a value or an awaitable, whichever client it is.
    """
    return redis.Redis.from_url(base_env["REDIS_URL"], decode_responses=True)


@pytest.fixture(autouse=True)
def clean_state(engine: sqlalchemy.Engine, redis_client: Any) -> None:
    """Empty every table and Redis before each test."""
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    redis_client.flushdb()


@pytest.fixture(autouse=True)
def app_logs_outlive_captures() -> Iterator[None]:
    """Leave the app's log handler on a stream that is still open.

    An app made during a test with ``capfd``/``capsys`` logs to that fixture's
    stream, closed when the test ends; the next command run in this process
    (``log_to_stderr`` flushes the old stream) would fail on it. Which test
    comes next depends on the order, which pytest-xdist reshuffles.
    """
    yield
    for handler in logging.getLogger().handlers:
        if isinstance(handler, JsonLinesHandler) and handler.stream.closed:
            handler.stream = sys.stdout


class LiveServer:
    """The app served over HTTP on a free loopback port, in a thread."""

    def __init__(
        self, env: dict[str, str], overrides: dict[str, str], prefix: str = ""
    ) -> None:
        self._app: Any = None
        self.httpd = make_wsgi_server(
            "127.0.0.1",
            0,
            lambda environ, start: self._app(environ, start),
            threaded=True,
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_port}{prefix}"
        self.app = create_app({**env, "ISSUER": self.url, **overrides})
        # With a prefix, as behind a proxy that forwards only ``prefix/*``.
        self._app = (
            DispatcherMiddleware(NotFound(), {prefix: self.app}) if prefix else self.app
        )
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    @property
    def issuer(self) -> str:
        return self.app.config["SETTINGS"].issuer

    def browser(self) -> Browser:
        return Browser(self)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        # Its thread may be reading Postgres (a rebuild): done before disposing.
        view = self.app.extensions.get("denylist_view")
        if view is not None:
            view.stop(wait=5.0)
        self.app.extensions["db"].engine.dispose()
        self.app.extensions["redis"].close()


@pytest.fixture(scope="session")
def server(base_env: dict[str, str]) -> Iterator[LiveServer]:
    live = LiveServer(base_env, {})
    yield live
    live.stop()


@pytest.fixture
def make_server(base_env: dict[str, str]) -> Iterator[Callable[..., LiveServer]]:
    """Start extra servers with settings overridden (limits, TTLs, issuer path).

    ``prefix="/prod-api"`` serves the app under that path, the issuer with it.
    """
    started: list[LiveServer] = []

    def start(prefix: str = "", **overrides: str) -> LiveServer:
        live = LiveServer(base_env, overrides, prefix)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def app(server: LiveServer) -> Any:
    return server.app


@pytest.fixture
def browser(server: LiveServer) -> Browser:
    return server.browser()


@pytest.fixture
def user(server: LiveServer) -> dict[str, str]:
    """A person with an account, as ``{"email", "password", "id"}``."""
    return make_user(server, "alice@example.com")


def make_user(server: LiveServer, email: str, password: str | None = None) -> dict:
    from app.db import db
    from app.users import create_user

    password = password or secrets.token_urlsafe(12)
    with server.app.app_context(), db.transaction():
        created = create_user(email, password)
        return {"email": created.email, "password": password, "id": str(created.id)}


@pytest.fixture
def signed_in(browser: Browser, user: dict[str, str]) -> Browser:
    """The browser with ``user`` signed in through the real form."""
    assert browser.login(user["email"], user["password"]).status_code == 302
    return browser


@pytest.fixture
def other_user(server: LiveServer) -> dict[str, str]:
    return make_user(server, "mallory@example.com")


@pytest.fixture
def doomed_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis of our own that the test may stop."""
    tmp_path.chmod(0o755)
    redis_server = devservices.start_redis(tmp_path / "redis", durable=False)
    yield redis_server
    redis_server.stop()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A Redis of our own that the test may restart, empty or from a snapshot."""
    tmp_path.chmod(0o755)
    server = RestartableRedis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def documents() -> Iterator[DocumentServer]:
    served = DocumentServer()
    yield served
    served.stop()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """A real OpenID provider (node-oidc-provider), for the whole session."""
    provider = OidcProvider(install())
    yield provider
    provider.stop()


@pytest.fixture
def provider_server(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> LiveServer:
    """The service, offering sign-in through the provider as "acme"."""
    return make_server(**oidc_provider.settings())
