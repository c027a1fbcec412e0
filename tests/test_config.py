"""Settings come from the environment only, and bad ones stop start-up with one line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.config import ConfigError, Settings, load_settings

REQUIRED = {
    "DATABASE_URL": "postgresql://u:p@db.example:5432/app",
    "REDIS_URL": "redis://cache.example:6379/0",
    "SECRET_KEY": "s" * 40,
    "JWT_SECRET": "j" * 40,
    "ISSUER": "https://auth.example.com",
}


def settings(**changes: str | None) -> Settings:
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
    assert s.allowed_redirect_schemes is None
    assert s.loopback_aliases is False


@pytest.mark.parametrize("name", sorted(set(REQUIRED) - {"JWT_SECRET"}))
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
        ("REDIS_URL", "redis://localhost:notaport"),
        ("REDIS_URL", "redis://localhost:99999"),
        ("REDIS_URL", "redis://cache.example?socket_timeout=abc"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "unix://"),
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
        ("ALLOWED_REDIRECT_SCHEMES", "javascript"),
        ("ALLOWED_REDIRECT_SCHEMES", "cursor,https"),
        ("ALLOWED_REDIRECT_SCHEMES", "1password"),
        ("ALLOWED_REDIRECT_SCHEMES", "cursor://"),
        ("ALLOWED_REDIRECT_SCHEMES", ", ,"),
        ("LOOPBACK_ALIASES", "yes please"),
    ],
)
def test_malformed_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: value})
    message = str(caught.value.code)
    assert message.startswith(f"configuration error: {name} is malformed")
    assert "\n" not in message


def test_native_redirect_settings_are_read() -> None:
    s = settings(
        ALLOWED_REDIRECT_SCHEMES=" Cursor, com.example.app ", LOOPBACK_ALIASES="ON"
    )
    assert s.allowed_redirect_schemes == frozenset({"cursor", "com.example.app"})
    assert s.loopback_aliases is True
    assert settings(LOOPBACK_ALIASES="off").loopback_aliases is False


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
def test_allowed_origins_are_origins_as_browsers_send_them(
    value: Any, expected: Any
) -> None:
    assert settings(ALLOWED_ORIGINS=value).allowed_origins == expected


def test_without_either_key_the_service_manages_its_own() -> None:
    # Neither JWT_SECRET nor JWT_SIGNING_KEY: keys the service makes (RS256
    # unless SIGNING_KEY_ALGORITHM says otherwise), never HS256 by default.
    s = settings(JWT_SECRET=None)
    assert s.managed_keys and s.signing_key_algorithm == "RS256"
    assert settings(JWT_SECRET=None, SIGNING_KEY_ALGORITHM="EdDSA").managed_keys
    assert not settings().managed_keys
    assert not settings(
        JWT_SECRET=None, JWT_SIGNING_KEY=private_pem(EC_KEY)
    ).managed_keys


@pytest.mark.parametrize("value", ["HS256", "RS512", "rs256", "none"])
def test_only_known_algorithms_are_made(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(JWT_SECRET=None, SIGNING_KEY_ALGORITHM=value)
    assert str(caught.value.code) == (
        "configuration error: SIGNING_KEY_ALGORITHM is malformed:"
        " must be one of RS256, ES256, EdDSA"
    )


def test_secret_key_fallbacks_are_a_list_of_secrets() -> None:
    old, older = "o" * 40, "p" * 40
    s = settings(SECRET_KEY_FALLBACKS=f" {old}, {older} ")
    assert s.secret_key_fallbacks == (old, older)
    assert old not in repr(s)
    with pytest.raises(ConfigError) as caught:
        settings(SECRET_KEY_FALLBACKS=f"{old},short")
    assert "SECRET_KEY_FALLBACKS is malformed" in str(caught.value.code)


#: One provider of each kind, configured as the settings page describes.
PROVIDERS = {
    "SIGN_IN_PROVIDERS": " Acme, github ",
    "ACME_ISSUER": "https://id.acme.example/",
    "ACME_CLIENT_ID": "acme-client",
    "ACME_CLIENT_SECRET": "acme-secret",
    "ACME_ALLOWED_DOMAINS": "Acme.example, 72f988bf-86f1-41af-91ab-2d7cd011db47",
    "GITHUB_ISSUER": "github",
    "GITHUB_CLIENT_ID": "Iv1.0123456789",
    "GITHUB_CLIENT_SECRET": "gh-secret",
    "GITHUB_LABEL": "GitHub (staff)",
}


def test_sign_in_providers_are_read_from_their_own_variables() -> None:
    acme, github = settings(**PROVIDERS).sign_in_providers

    assert (acme.name, acme.kind, acme.label) == ("acme", "oidc", "Acme")
    # Kept as the provider spells it: discovery must answer the very string.
    assert acme.issuer == "https://id.acme.example/"
    assert acme.discovery_url == (
        "https://id.acme.example/.well-known/openid-configuration"
    )
    assert (acme.client_id, acme.client_secret) == ("acme-client", "acme-secret")
    assert acme.scopes == ("openid", "email", "profile")
    assert acme.allowed_domains == {
        "acme.example",
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
    }
    assert (github.kind, github.issuer, github.label) == (
        "github",
        "https://github.com",
        "GitHub (staff)",
    )
    assert github.api_url == "https://api.github.com"
    assert github.scopes == ("read:user", "user:email")
    assert github.allowed_domains == frozenset()
    assert "acme-secret" not in repr(acme)


def test_password_sign_in_is_on_unless_switched_off() -> None:
    assert settings().password_sign_in is True
    assert settings().sign_in_providers == ()
    assert settings(**PROVIDERS, PASSWORD_SIGN_IN="off").password_sign_in is False


def test_github_enterprise_server_is_the_preset_on_another_site() -> None:
    (ghe,) = settings(
        SIGN_IN_PROVIDERS="ghe",
        GHE_ISSUER="github:https://git.corp.example/",
        GHE_CLIENT_ID="id",
        GHE_CLIENT_SECRET="secret",
        GHE_SCOPES="read:user, user:email",
    ).sign_in_providers

    assert (ghe.kind, ghe.issuer) == ("github", "https://git.corp.example")
    assert ghe.api_url == "https://git.corp.example/api/v3"
    assert ghe.scopes == ("read:user", "user:email")
    assert ghe.label == "GitHub"


@pytest.mark.parametrize(
    ("name", "changes", "problem"),
    [
        ("SIGN_IN_PROVIDERS", {"SIGN_IN_PROVIDERS": "acme, ACME"}, "is malformed"),
        ("SIGN_IN_PROVIDERS", {"SIGN_IN_PROVIDERS": "my-idp"}, "is malformed"),
        ("SIGN_IN_PROVIDERS", {"SIGN_IN_PROVIDERS": "1st"}, "is malformed"),
        ("SIGN_IN_PROVIDERS", {"SIGN_IN_PROVIDERS": "link"}, "is malformed"),
        ("SIGN_IN_PROVIDERS", {"SIGN_IN_PROVIDERS": " , "}, "is malformed"),
        ("ACME_ISSUER", {"ACME_ISSUER": None}, "is required but not set"),
        ("ACME_ISSUER", {"ACME_ISSUER": "id.acme.example"}, "is malformed"),
        ("ACME_ISSUER", {"ACME_ISSUER": "http://id.acme.example"}, "is malformed"),
        (
            "ACME_ISSUER",
            {"ACME_ISSUER": "https://id.acme.example/?a=1"},
            "is malformed",
        ),
        ("ACME_ISSUER", {"ACME_ISSUER": "https://u:p@id.acme.example"}, "is malformed"),
        ("ACME_ISSUER", {"ACME_ISSUER": "github:ftp://git.example"}, "is malformed"),
        (
            "ACME_ISSUER",
            {"ACME_ISSUER": "https://id.acme.example/" + "x" * 500},
            "is malformed",
        ),
        ("ACME_CLIENT_ID", {"ACME_CLIENT_ID": None}, "is required but not set"),
        ("ACME_CLIENT_ID", {"ACME_CLIENT_ID": "two words"}, "is malformed"),
        ("ACME_CLIENT_SECRET", {"ACME_CLIENT_SECRET": ""}, "is required but not set"),
        ("ACME_SCOPES", {"ACME_SCOPES": "email profile"}, "is malformed"),
        ("ACME_SCOPES", {"ACME_SCOPES": 'openid "email"'}, "is malformed"),
        (
            "ACME_ALLOWED_DOMAINS",
            {"ACME_ALLOWED_DOMAINS": "@acme.example"},
            "is malformed",
        ),
        ("ACME_ALLOWED_DOMAINS", {"ACME_ALLOWED_DOMAINS": "localhost"}, "is malformed"),
        ("GITHUB_LABEL", {"GITHUB_LABEL": "x" * 65}, "is malformed"),
        ("GITHUB_LABEL", {"GITHUB_LABEL": "Git\tHub"}, "is malformed"),
        ("PASSWORD_SIGN_IN", {"PASSWORD_SIGN_IN": "hidden"}, "is malformed"),
    ],
)
def test_a_broken_provider_setting_is_named_in_one_line(
    name: str, changes: dict[str, str | None], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{**PROVIDERS, **changes})
    message = str(caught.value.code)
    assert message.startswith(f"configuration error: {name} {problem}")
    assert "\n" not in message
    assert PROVIDERS["ACME_CLIENT_SECRET"] not in message


def test_no_way_in_at_all_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(PASSWORD_SIGN_IN="off")
    assert str(caught.value.code) == (
        "configuration error: PASSWORD_SIGN_IN is off but SIGN_IN_PROVIDERS "
        "names no provider"
    )


def test_gunicorn_start_up_with_a_broken_provider_prints_one_line_and_fails() -> None:
    env = {**os.environ, **REQUIRED, **PROVIDERS, "ACME_ISSUER": "acme"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "app:create_app()",
        ],
        env={k: v for k, v in env.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: ACME_ISSUER is malformed: must be an absolute "
        "https URL, or github"
    ]


def test_an_upper_case_https_issuer_still_gets_secure_cookies() -> None:
    assert settings(ISSUER="HTTPS://Auth.Example.com").secure_cookies


# --- Token signing keys (docs/reference.md) -----------------------------------------


def private_pem(key: Any, password: bytes | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )


EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SHORT_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize(
    "key", [EC_KEY, ED_KEY, RSA_KEY], ids=["P-256", "Ed25519", "RSA"]
)
def test_a_signing_key_makes_jwt_secret_optional(key: Any) -> None:
    s = settings(JWT_SECRET=None, JWT_SIGNING_KEY=private_pem(key))
    assert s.jwt_secret is None
    assert "PRIVATE" not in repr(s)


def test_a_signing_key_may_come_with_escaped_newlines() -> None:
    # Platforms whose variables hold one line get the PEM with "\n" escapes.
    pem = private_pem(EC_KEY).replace("\n", "\\n")
    assert "\n" not in pem
    assert settings(JWT_SIGNING_KEY=pem).jwt_signing_key == pem


def test_a_signing_key_from_openssl_ecparam_is_accepted() -> None:
    # `openssl ecparam -name prime256v1 -genkey` writes the curve, then a SEC1 key.
    sec1 = EC_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    curve = (
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----"
    )
    assert settings(JWT_SIGNING_KEY=curve + "\n" + sec1).jwt_signing_key


def test_retired_keys_are_concatenated_pem_blocks_public_or_private() -> None:
    retired = public_pem(ED_KEY) + "\n" + private_pem(EC_KEY) + public_pem(EC_KEY)
    s = settings(JWT_SIGNING_KEY=private_pem(ED_KEY), JWT_VERIFY_KEYS=retired)
    assert s.jwt_verify_keys == retired.strip()


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("JWT_SIGNING_KEY", private_pem(SHORT_RSA_KEY), "2048 bits or more, not 1024"),
        ("JWT_SIGNING_KEY", private_pem(ec.generate_private_key(ec.SECP384R1())), ""),
        ("JWT_SIGNING_KEY", "garbage", "must be PEM blocks"),
        (
            "JWT_SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a readable PEM private key",
        ),
        ("JWT_SIGNING_KEY", public_pem(EC_KEY), "must be one PEM private key"),
        ("JWT_SIGNING_KEY", private_pem(EC_KEY) * 2, "must be one PEM private key"),
        ("JWT_SIGNING_KEY", private_pem(EC_KEY, b"pw"), "must not be encrypted"),
        ("JWT_SIGNING_KEY", private_pem(EC_KEY) + "trailing", "must be PEM blocks"),
        ("JWT_VERIFY_KEYS", public_pem(SHORT_RSA_KEY), "2048 bits or more, not 1024"),
        ("JWT_VERIFY_KEYS", "garbage", "must be PEM blocks"),
        (
            "JWT_VERIFY_KEYS",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "only keys are accepted",
        ),
    ],
)
def test_bad_keys_are_refused_in_one_line_naming_the_setting(
    name: str, value: str, problem: str
) -> None:
    changes = {"JWT_SIGNING_KEY": private_pem(EC_KEY), name: value}
    with pytest.raises(ConfigError) as caught:
        settings(**changes)
    message = str(caught.value.code)
    assert message.startswith(f"configuration error: {name} is malformed: ")
    assert problem in message
    assert "\n" not in message
    assert "BEGIN" not in message  # no key material in logs


def test_retired_keys_without_a_signing_key_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(JWT_VERIFY_KEYS=public_pem(EC_KEY))
    assert str(caught.value.code) == (
        "configuration error: JWT_VERIFY_KEYS is set but JWT_SIGNING_KEY is not"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            private_pem(SHORT_RSA_KEY),
            "must be an RSA key of 2048 bits or more, not 1024",
        ),
        ("not a key", "must be PEM blocks (RFC 7468) and nothing else"),
    ],
    ids=["short RSA", "garbage"],
)
def test_gunicorn_start_up_with_a_bad_signing_key_prints_one_line_and_fails(
    value: str, problem: str
) -> None:
    env = {**os.environ, **REQUIRED, "JWT_SIGNING_KEY": value}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "app:create_app()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"configuration error: JWT_SIGNING_KEY is malformed: {problem}"
    ]


def test_lifetimes_accept_one_second() -> None:
    # docs/reference.md: operators and tests shorten lifetimes to watch expiry happen.
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
    # /auth/verify believes no resource header until the operator says so.
    assert s.verify_resource_headers is False
    assert settings(REFRESH_TOKENS="off").refresh_tokens is False
    secret = "a-resource-server-secret"
    servers = settings(RESOURCE_SERVERS=f"gateway:{secret}").resource_servers
    assert [entry.name for entry in servers] == ["gateway"]
    assert secret not in repr(servers)
    # Each entry may name the resources it is bound to, spelled any way.
    bound = settings(
        RESOURCE_SERVERS=f"a:{secret} HTTPS://X.example:443/git/ https://y.example,"
        f"b:{secret}"
    ).resource_servers
    assert [entry.resources for entry in bound] == [
        ("https://x.example/git", "https://y.example"),
        (),
    ]
    with pytest.raises(ConfigError, match="RESOURCE_SERVERS"):
        settings(RESOURCE_SERVERS=f"a:{secret} http://x.example/mcp")


#: What the configuration may import from app/: its own leaf helpers.
CONFIG_MODULES = {
    "app.config",
    "app.config_keys",
    "app.config_providers",
    "app.config_uris",
    "app.config_values",
}


def _app_imports(module: str) -> set[str]:
    """The app/ modules ``module`` imports, function-level imports included."""
    path = Path(__file__).resolve().parent.parent / (module.replace(".", "/") + ".py")
    package = module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            found |= {name for name in names if name.split(".")[0] == "app"}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "app"}
    return found


@pytest.mark.parametrize("module", sorted(CONFIG_MODULES))
def test_the_configuration_imports_nothing_from_the_domain(module: str) -> None:
    # The arrow runs from the domain to the configuration, never back.
    assert _app_imports(module) <= CONFIG_MODULES
