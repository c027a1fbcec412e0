"""Managed Redis and Postgres over TLS: rediss:// and sslmode, verified for real.

The suite starts a TLS-only Postgres (pg_hba refuses plain TCP) and a TLS-only
Redis, with certificates from a throwaway CA made here.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy
from conftest import LiveServer, make_user
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from devservices import TlsFiles, services
from helpers import obtain_token, whoami_output
from sqlalchemy.engine import make_url

from app.config import ConfigError, settings_from_environment


@dataclass(frozen=True)
class Pki:
    tls: TlsFiles  # the servers' certificate, key and the CA that signed them
    untrusted_ca: Path  # a CA that signed nothing the servers use


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    """A CA certificate (no ``issuer``), or a server one for loopback signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
    else:
        names = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = (
            builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            )
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in "abc"
    )
    ca = _write_pem(folder / "ca.pem", _certificate("Test CA", ca_key, None))
    untrusted = _certificate("Untrusted CA", other_key, None)
    server = _certificate("localhost", server_key, ("Test CA", ca_key))
    key = folder / "server.key"
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return Pki(
        TlsFiles(cert=_write_pem(folder / "server.pem", server), key=key, ca=ca),
        _write_pem(folder / "untrusted.pem", untrusted),
    )


@pytest.fixture(scope="module")
def tls_urls(pki: Pki) -> Iterator[dict[str, str]]:
    """A TLS-only Postgres and Redis: their URLs verify against our CA."""
    with tempfile.TemporaryDirectory(prefix="mcp-auth-tls-") as tmp:
        Path(tmp).chmod(0o755)
        with services(Path(tmp), durable=False, tls=pki.tls) as urls:
            yield urls


def _flask_db_upgrade(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tls_env(base_env: dict[str, str], tls_urls: dict[str, str]) -> dict[str, str]:
    """Settings pointing at the TLS servers, migrated the way `release:` does it."""
    env = {**base_env, **tls_urls}
    assert "sslmode=verify-full&sslrootcert=" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("rediss://")
    result = _flask_db_upgrade(env)
    assert result.returncode == 0, result.stderr
    return env


def _redis_port(env: dict[str, str]) -> int:
    return redis.connection.parse_url(env["REDIS_URL"])["port"]


def _with_query(database_url: str, query: str) -> str:
    return database_url.split("?", 1)[0] + "?" + query


@pytest.fixture
def tls_server(tls_env: dict[str, str]) -> Iterator[LiveServer]:
    live = LiveServer(tls_env, {})
    yield live
    live.stop()


def test_plain_tcp_to_the_tls_only_postgres_is_refused(tls_env: dict[str, str]) -> None:
    plain = _with_query(tls_env["DATABASE_URL"], "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain.replace("+psycopg", ""), connect_timeout=5)


def test_migrations_ran_over_tls(tls_env: dict[str, str]) -> None:
    engine = sqlalchemy.create_engine(settings_from_environment(tls_env).database_url)
    try:
        with engine.connect() as connection:
            encrypted = connection.execute(
                sqlalchemy.text(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
            ).scalar_one()
            version = connection.execute(
                sqlalchemy.text("SELECT version_num FROM alembic_version")
            ).scalar_one()
    finally:
        engine.dispose()
    assert encrypted is True
    assert version


@pytest.mark.parametrize(
    "verification", ["ssl_ca_certs", "ssl_cert_reqs=none", "REDIS_TLS_VERIFY=off"]
)
def test_a_whole_flow_over_tls(tls_env: dict[str, str], verification: str) -> None:
    redis_url = tls_env["REDIS_URL"]
    overrides = {}
    if verification == "ssl_cert_reqs=none":
        # As a PaaS with a self-signed certificate hands it out.
        redis_url = f"rediss://127.0.0.1:{_redis_port(tls_env)}/0?ssl_cert_reqs=none"
    if verification == "REDIS_TLS_VERIFY=off":
        # As Heroku's Key-Value Store hands it out: a bare URL nobody can edit.
        overrides["REDIS_URL"] = f"rediss://127.0.0.1:{_redis_port(tls_env)}/0"
        overrides["REDIS_TLS_VERIFY"] = "off"
        redis_url = overrides["REDIS_URL"] + "?ssl_cert_reqs=none"
    live = LiveServer(tls_env, {"REDIS_URL": redis_url, **overrides})
    try:
        store = redis.Redis.from_url(redis_url, decode_responses=True)
        store.flushdb()
        browser = live.browser()
        assert browser.get("/readyz").json() == {
            "status": "ok",
            "checks": {"postgres": "ok", "redis": "ok"},
        }
        # The TLS database is not emptied between tests: one account per case.
        email = f"tls-{verification[:8].lower()}@example.com"
        user = make_user(live, email)

        token = obtain_token(browser, user)
        assert whoami_output(browser, token)["email"] == email
        # flask-limiter's storage counted in the TLS Redis too.
        assert any(key.startswith("LIMITS:") for key in store.scan_iter())
        store.close()
    finally:
        live.stop()


def _not_ready_because(
    live: LiveServer, capfd: pytest.CaptureFixture[str], backend: str
) -> str:
    """Assert /readyz says ``backend`` is unavailable; return what was logged."""
    response = live.browser().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"][backend] == "unavailable"
    return capfd.readouterr().out


def test_an_untrusted_redis_certificate_fails_clearly(
    tls_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    # rediss:// with no options verifies against the system's CAs, as in production.
    default = f"rediss://127.0.0.1:{_redis_port(tls_env)}/0"
    live = LiveServer(tls_env, {"REDIS_URL": default})
    try:
        logged = _not_ready_because(live, capfd, "redis")
        register = live.browser().post(
            "/register", json={"redirect_uris": ["http://127.0.0.1/cb"]}
        )
        refused = capfd.readouterr().out
    finally:
        live.stop()
    assert "redis not ready" in logged
    assert "certificate verify failed" in logged
    assert register.status_code == 503
    assert register.json()["error"] == "temporarily_unavailable"
    # The registration's log line says why, not only "ConnectionError".
    [line] = [x for x in refused.splitlines() if "backing store unavailable" in x]
    assert "certificate verify failed" in line


def test_an_untrusted_postgres_certificate_fails_clearly(
    tls_env: dict[str, str], pki: Pki, capfd: pytest.CaptureFixture[str]
) -> None:
    untrusted = _with_query(
        tls_env["DATABASE_URL"], f"sslmode=verify-full&sslrootcert={pki.untrusted_ca}"
    )
    live = LiveServer(tls_env, {"DATABASE_URL": untrusted})
    try:
        logged = _not_ready_because(live, capfd, "postgres")
    finally:
        live.stop()
    assert "postgres not ready" in logged
    assert "certificate verify failed" in logged

    migration = _flask_db_upgrade({**tls_env, "DATABASE_URL": untrusted})
    assert migration.returncode == 1
    (line,) = migration.stderr.strip().splitlines()
    assert line.startswith("cannot migrate the DATABASE_URL database: ")
    assert "certificate verify failed" in line


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("REDIS_URL", "rediss://h:6380/0?ssl_cert_reqs=None", "ssl_cert_reqs must be"),
        ("REDIS_URL", "redis://h:6379/0?ssl_cert_reqs=none", "needs a rediss:// URL"),
        ("REDIS_URL", "rediss://h/0?ssl_ca_certs=/nonexistent.pem", "not a readable"),
        ("DATABASE_URL", "postgres://u@h/d?sslmode=verify", "sslmode must be one of"),
        ("DATABASE_URL", "postgres://u@h/d?sslrootcert=/no.pem", "not a readable"),
        ("DATABASE_URL", "postgres://u@h/d?sslmode=require&sslmode=disable", "once"),
    ],
)
def test_tls_options_are_checked_at_start_up(
    base_env: dict[str, str], name: Any, value: Any, problem: Any
) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        settings_from_environment({**base_env, name: value})
    assert raised.value.name == name


def test_tls_options_a_provider_hands_out_are_accepted(
    base_env: dict[str, str], pki: Pki
) -> None:
    settings = settings_from_environment(
        {
            **base_env,
            "DATABASE_URL": f"postgres://u@h/d?sslmode=verify-full&sslrootcert={pki.tls.ca}",
            "REDIS_URL": "rediss://:secret@h:6380/0?ssl_cert_reqs=none",
        }
    )
    query = make_url(settings.database_url).query
    assert query == {"sslmode": "verify-full", "sslrootcert": str(pki.tls.ca)}
    assert settings.redis_url.endswith("?ssl_cert_reqs=none")
