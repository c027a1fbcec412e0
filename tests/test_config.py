"""Settings come from the environment only, and bad ones stop start-up with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import ConfigError, load_settings

REQUIRED = {
    "DATABASE_URL": "postgresql://u:p@db.example:5432/app",
    "REDIS_URL": "redis://cache.example:6379/0",
    "SECRET_KEY": "s" * 40,
    "JWT_SECRET": "j" * 40,
    "ISSUER": "https://auth.example.com",
}


def settings(**changes: str | None):
    env = {**REQUIRED, **changes}
    return load_settings({k: v for k, v in env.items() if v is not None})


def test_defaults_match_the_contract() -> None:
    s = settings()
    assert (s.port, s.web_concurrency, s.trusted_proxy_hops) == (8000, 2, 0)
    assert (s.access_token_ttl, s.auth_code_ttl) == (3600, 600)
    assert s.registration_rate_limit == "20 per hour"
    assert (s.max_clients_per_address, s.max_clients) == (100, 100000)
    assert s.login_rate_limit == "10 per minute"
    assert s.client_id_prefix == "lessie"
    assert s.mcp_resource == "https://auth.example.com/mcp"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_required_setting_is_named_when_missing(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: None})
    assert (
        str(caught.value.code) == f"configuration error: {name} is required but not set"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://cache.example"),
        ("SECRET_KEY", "short"),
        ("JWT_SECRET", "short"),
        ("ISSUER", "ftp://auth.example.com"),
        ("ISSUER", "http://auth.example.com"),
        ("ISSUER", "https://auth.example.com/?x=1"),
        ("ISSUER", "https://auth.example.com/#frag"),
        ("ISSUER", "https://user:pw@auth.example.com"),
        ("ISSUER", "auth.example.com"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "0"),
        ("TRUSTED_PROXY_HOPS", "-1"),
        ("ACCESS_TOKEN_TTL", "0"),
        ("AUTH_CODE_TTL", "3600"),
        ("REFRESH_TOKENS", "maybe"),
        ("REFRESH_TOKEN_TTL", "0"),
        ("REFRESH_TOKEN_IDLE_TTL", "-5"),
        ("REFRESH_GRACE_SECONDS", "soon"),
        ("RESOURCE_SERVERS", "gateway"),
        ("RESOURCE_SERVERS", "gateway:short"),
        ("RESOURCE_SERVERS", ":a-secret-of-enough-length"),
        ("REGISTRATION_RATE_LIMIT", "lots"),
        ("LOGIN_RATE_LIMIT", "10 per fortnight"),
        ("MAX_CLIENTS", "many"),
        ("CLIENT_ID_PREFIX", "bad prefix!"),
        ("ALLOWED_ORIGINS", "app.example"),
        ("ALLOWED_ORIGINS", "https://app.example/"),
        ("ALLOWED_ORIGINS", "https://app.example/path"),
        ("ALLOWED_ORIGINS", "https://app.example:99999"),
        ("ALLOWED_ORIGINS", "https://user@app.example"),
        ("ALLOWED_ORIGINS", "null"),
        ("ALLOWED_ORIGINS", ", ,"),
    ],
)
def test_malformed_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: value})
    message = str(caught.value.code)
    assert message.startswith(f"configuration error: {name} is malformed")
    assert "\n" not in message


def test_paas_postgres_url_is_accepted_and_uses_psycopg() -> None:
    s = settings(DATABASE_URL="postgres://u:p%40ss@db.example:5432/app?sslmode=require")
    assert s.database_url == (
        "postgresql+psycopg://u:p%40ss@db.example:5432/app?sslmode=require"
    )


def test_rediss_url_is_accepted() -> None:
    url = "rediss://:secret@cache.example:6380/0?ssl_cert_reqs=none"
    assert settings(REDIS_URL=url).redis_url == url


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("https://auth.example.com/", "https://auth.example.com"),
        ("https://www.example.com/prod-api/", "https://www.example.com/prod-api"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("HTTPS://Auth.Example.COM/Prod-Api", "https://auth.example.com/Prod-Api"),
    ],
)
def test_issuer_is_one_exact_string_without_trailing_slash(
    issuer: str, expected: str
) -> None:
    assert settings(ISSUER=issuer).issuer == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("*", ()),
        (
            "https://App.Example, http://localhost:6274",
            ("https://app.example", "http://localhost:6274"),
        ),
        (
            "https://app.example:443,http://[::1]:80",
            ("https://app.example", "http://[::1]"),
        ),
        ("vscode-webview://abc123", ("vscode-webview://abc123",)),
    ],
)
def test_allowed_origins_are_origins_as_browsers_send_them(value, expected) -> None:
    assert settings(ALLOWED_ORIGINS=value).allowed_origins == expected


def _run_without(name: str, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **REQUIRED}
    env.pop(name)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_cli_start_up_without_jwt_secret_prints_one_line_and_fails() -> None:
    result = _run_without(
        "JWT_SECRET", sys.executable, "-m", "flask", "--app", "app", "users", "list"
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: JWT_SECRET is required but not set"
    ]


def test_gunicorn_start_up_without_jwt_secret_prints_one_line_and_fails() -> None:
    result = _run_without(
        "JWT_SECRET",
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "app:create_app()",
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: JWT_SECRET is required but not set"
    ]


def test_an_upper_case_https_issuer_still_gets_secure_cookies() -> None:
    assert settings(ISSUER="HTTPS://Auth.Example.com").secure_cookies


def test_lifetimes_accept_one_second() -> None:
    # CONTRACT §9: operators and tests shorten lifetimes to watch expiry happen.
    s = settings(
        ACCESS_TOKEN_TTL="1",
        AUTH_CODE_TTL="1",
        REFRESH_TOKEN_TTL="1",
        REFRESH_TOKEN_IDLE_TTL="1",
    )
    assert (s.access_token_ttl, s.auth_code_ttl) == (1, 1)
    assert (s.refresh_token_ttl, s.refresh_token_idle_ttl) == (1, 1)


def test_refresh_defaults_and_resource_servers_kept_hashed() -> None:
    s = settings()
    assert s.refresh_tokens is True
    assert (s.refresh_token_ttl, s.refresh_token_idle_ttl) == (2592000, 1209600)
    assert s.refresh_grace_seconds == 30
    assert s.resource_servers == ()
    assert settings(REFRESH_TOKENS="off").refresh_tokens is False
    secret = "a-resource-server-secret"
    servers = settings(RESOURCE_SERVERS=f"gateway:{secret}").resource_servers
    assert [name for name, _ in servers] == ["gateway"]
    assert secret not in repr(servers)
