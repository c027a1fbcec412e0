"""The signing keys the service makes itself (README "Signing keys").

With neither ``JWT_SIGNING_KEY`` nor ``JWT_SECRET`` set, the release makes an
RS256 key, sealed in Postgres under ``SECRET_KEY``, and verifiers nobody here
wrote (PyJWT's ``PyJWKClient``, FastMCP's ``JWTVerifier`` left at its default
algorithm) accept the tokens it signs from the published JWK Set alone;
``keys rotate`` publishes the next key before it signs; ``SECRET_KEY``
rotates through ``SECRET_KEY_FALLBACKS``; a configured key still wins.

Servers here pass ``JWT_SECRET=""``: an empty setting is an unset one, which
turns off the base environment's HS256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import jwt as pyjwt
import pytest
import sqlalchemy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from devservices import free_port
from fastmcp.server.auth.providers.jwt import JWTVerifier
from helpers import (
    ROOT,
    Browser,
    obtain_token,
    procfile,
    run_command,
    start_web,
    whoami,
)

JWKS_PATH = "/.well-known/jwks.json"
AS_METADATA = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION = "/.well-known/openid-configuration"
#: Members of a private JWK (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
#: Seconds from ``keys rotate`` until the new key signs, in the rotation test:
#: long enough to get a token signed by the old key meanwhile.
SWITCH_AFTER = 4


# --- Helpers --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_int(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, no whitespace."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
    members = {
        name: jwk[name] for name in required.get(jwk["kty"], ("crv", "kty", "x"))
    }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def header_of(token: str) -> dict[str, Any]:
    return pyjwt.get_unverified_header(token)


def published(browser: Browser) -> list[dict[str, Any]]:
    """The JWK Set's keys, none with a private member."""
    keys = browser.get(JWKS_PATH).json()["keys"]
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key
    return keys


def kids(browser: Browser) -> set[str]:
    return {key["kid"] for key in published(browser)}


def pyjwt_verify(
    jwks_uri: str, token: str, issuer: str, algorithm: str
) -> dict[str, Any]:
    """Verify as a resource server using PyJWT would: the JWK Set alone."""
    key = pyjwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(token)
    return pyjwt.decode(
        token,
        key,
        algorithms=[algorithm],
        audience=issuer + "/mcp",
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "jti"]},
    )


def stored_keys(engine: sqlalchemy.Engine) -> dict[str, bytes]:
    """The ``signing_keys`` rows: kid to the sealed private key."""
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT kid, sealed_private_key FROM signing_keys")
        )
        return {kid: bytes(sealed) for kid, sealed in rows}


def output_lines(result: Any) -> list[str]:
    """The answer of a command run by the CLI runner: its stdout (its log
    lines go to stderr); neither holds a PEM block."""
    assert "BEGIN" not in result.output, result.output
    return [line for line in result.stdout.splitlines() if line.strip()]


def error_lines(result: Any) -> list[str]:
    """What a command run by the CLI runner said on stderr."""
    assert "BEGIN" not in result.output, result.output
    return [line for line in result.stderr.splitlines() if line.strip()]


def signs_from(server: Any, kid: str) -> datetime:
    listed = run_command(server, "keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (key,) = [key for key in json.loads(listed.stdout) if key["kid"] == kid]
    return datetime.fromisoformat(key["signs_from"])


class AuditEvents(logging.Handler):
    """The ``(event, kid)`` of each signing key audit line of this process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", "")
        if event.startswith("signing_key_"):
            self.seen.append((event, getattr(record, "kid", "")))


@pytest.fixture
def audit_events() -> Iterator[AuditEvents]:
    handler = AuditEvents()
    logger = logging.getLogger("app.audit")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# --- A default deploy -----------------------------------------------------------------


def test_a_default_deploy_publishes_a_key_it_made_and_default_verifiers_accept_it(
    base_env: dict[str, str],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    tmp_path: Path,
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    # Neither JWT_SIGNING_KEY nor JWT_SECRET, as app.json and the README deploy.
    env = {
        **os.environ,
        **base_env,
        "ISSUER": issuer,
        "LOG_LEVEL": "DEBUG",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("JWT_SECRET")
    env.pop("JWT_SIGNING_KEY", None)
    release = subprocess.run(
        shlex.split(procfile()["release"]),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert release.returncode == 0, release.stderr
    ((kid, sealed),) = stored_keys(engine).items()
    assert release.stdout.splitlines() == [f"signing key {kid} (RS256)"]
    created = [
        json.loads(line)
        for line in release.stderr.splitlines()
        if '"signing_key_created"' in line
    ]
    assert [(e["kid"], e["algorithm"]) for e in created] == [(kid, "RS256")]
    assert b"PRIVATE KEY" not in sealed and b"BEGIN" not in sealed

    log = tmp_path / "web.log"
    web = start_web(base_env, port, log, JWT_SECRET="", LOG_LEVEL="DEBUG")
    try:
        browser = Browser(cast(Any, SimpleNamespace(url=issuer)))
        token = obtain_token(browser, user)
        metadata = browser.get(AS_METADATA).json()
        openid = browser.get(OPENID_CONFIGURATION).json()
        (key,) = published(browser)
        at_mcp = whoami(browser, token).status_code
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        verifier = JWTVerifier(
            jwks_uri=metadata["jwks_uri"], issuer=issuer, audience=issuer + "/mcp"
        )
        accepted = anyio.run(verifier.verify_token, token)
        refused = anyio.run(verifier.verify_token, tampered)
        claims = pyjwt_verify(metadata["jwks_uri"], token, issuer, "RS256")
    finally:
        web.terminate()
        web.wait(timeout=60)

    assert metadata["jwks_uri"] == issuer + JWKS_PATH
    assert openid["id_token_signing_alg_values_supported"] == ["RS256"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert key["kid"] == kid == thumbprint(key)
    assert header_of(token) == {"alg": "RS256", "typ": "at+jwt", "kid": kid}
    assert claims["sub"] == user["id"]
    # FastMCP's JWTVerifier, told no algorithm, assumes RS256: ours.
    assert verifier.algorithm == "RS256"
    assert accepted is not None and accepted.subject == user["id"]
    assert refused is None
    assert at_mcp == 200
    # Neither the release nor the web process ever wrote the key in plain.
    for text in (release.stdout, release.stderr, log.read_text()):
        assert "BEGIN" not in text and "PRIVATE KEY" not in text


@pytest.mark.parametrize(("algorithm", "kty"), [("ES256", "EC"), ("EdDSA", "OKP")])
def test_signing_key_algorithm_chooses_the_kind_of_key_made(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    algorithm: str,
    kty: str,
) -> None:
    server = make_server(JWT_SECRET="", SIGNING_KEY_ALGORITHM=algorithm)
    browser = server.browser()

    # No release ran: the first token makes the key.
    token = obtain_token(browser, user)
    (key,) = published(browser)

    assert (key["kty"], key["alg"]) == (kty, algorithm)
    assert key["kid"] == thumbprint(key) == header_of(token)["kid"]
    assert header_of(token)["alg"] == algorithm
    assert set(stored_keys(engine)) == {key["kid"]}
    issuer = server.issuer
    assert (
        pyjwt_verify(issuer + JWKS_PATH, token, issuer, algorithm)["sub"] == user["id"]
    )
    assert whoami(browser, token).status_code == 200


# --- keys rotate ----------------------------------------------------------------------


def test_keys_rotate_publishes_first_switches_later_and_retires_what_expired(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    audit_events: AuditEvents,
) -> None:
    server = make_server(JWT_SECRET="")
    browser = server.browser()
    first = obtain_token(browser, user)
    old = header_of(first)["kid"]

    rotated = run_command(server, "keys", "rotate", "--switch-after", str(SWITCH_AFTER))
    assert rotated.exit_code == 0, rotated.output
    (line,) = output_lines(rotated)
    new, rest = line.split(" ", 1)
    assert new != old and rest.startswith("(RS256) signs from ")
    switch = signs_from(server, new)

    again = run_command(server, "keys", "rotate", "--switch-after", "0")
    assert again.exit_code == 0, again.output
    assert output_lines(again) == [
        f"a rotation is under way: {new} signs from {switch:%Y-%m-%d %H:%M:%S} UTC"
    ]
    sealed = stored_keys(engine)
    assert set(sealed) == {old, new}
    assert sealed[old] != sealed[new]
    assert not any(b"PRIVATE KEY" in blob for blob in sealed.values())

    # Published at once. Each process keeps its ring up to 60 s (RING_TTL)
    # and until the next change it knows of; a rotation made elsewhere is
    # none it knows of, so this process's ring is dropped here, as its
    # expiry would drop it, rather than waiting a minute. Not a fresh
    # server: the same process must then switch at `signs_from` unaided.
    server.app.extensions["signing_key_ring"].clear()
    assert kids(browser) == {old, new}
    before = obtain_token(browser, user)
    assert pyjwt.decode(before, options={"verify_signature": False})["iat"] < (
        switch.timestamp()
    ), "too slow: the switch came before the second token"
    assert header_of(before)["kid"] == old

    time.sleep(max(0.0, switch.timestamp() - time.time()) + 0.2)
    after = obtain_token(browser, user)
    assert header_of(after)["kid"] == new
    # Tokens of the old key still verify, here and from the published set.
    assert whoami(browser, first).status_code == 200
    for token, kid in ((first, old), (after, new)):
        claims = pyjwt_verify(server.url + JWKS_PATH, token, server.issuer, "RS256")
        assert claims["sub"] == user["id"] and header_of(token)["kid"] == kid

    # A daily schedule: a young key is kept.
    kept = run_command(server, "keys", "rotate", "--older-than-days", "30")
    assert kept.exit_code == 0, kept.output
    assert output_lines(kept) == [
        f"kept {new}: it has signed since {switch:%Y-%m-%d %H:%M:%S} UTC"
    ]

    # Once the old key's tokens have expired, the next rotate deletes it.
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE signing_keys SET published_until = now() - interval '1 second'"
                " WHERE kid = :kid"
            ),
            {"kid": old},
        )
    tidied = run_command(server, "keys", "rotate", "--older-than-days", "30")
    assert tidied.exit_code == 0, tidied.output
    assert output_lines(tidied)[-1] == ("deleted 1 retired key(s) whose tokens expired")
    listed = run_command(server, "keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [key["kid"] for key in json.loads(listed.stdout)] == [new]
    assert set(stored_keys(engine)) == {new}
    server.app.extensions["signing_key_ring"].clear()
    assert kids(browser) == {new}
    with pytest.raises(pyjwt.PyJWKClientError):
        pyjwt_verify(server.url + JWKS_PATH, first, server.issuer, "RS256")

    assert audit_events.seen == [
        ("signing_key_created", old),
        ("signing_key_rotated", new),
    ]


# --- SECRET_KEY rotation --------------------------------------------------------------


def test_secret_key_rotates_through_its_fallbacks(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    old_secret = base_env["SECRET_KEY"]
    new_secret, stranger = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    before = make_server(JWT_SECRET="")
    made = run_command(before, "db", "upgrade")
    assert made.exit_code == 0, made.output
    ((kid, sealed_before),) = stored_keys(engine).items()
    assert output_lines(made) == [f"signing key {kid} (RS256)"]
    signed_in = before.browser()
    assert signed_in.login(user["email"], user["password"]).status_code == 302

    during = make_server(
        JWT_SECRET="", SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=old_secret
    )
    browser = during.browser()
    browser.cookies.update(signed_in.cookies)
    # The session signed under the old SECRET_KEY is still one.
    assert browser.get("/account").status_code == 200
    token = obtain_token(browser, user)
    assert header_of(token)["kid"] == kid

    resealed = run_command(during, "db", "upgrade")
    assert resealed.exit_code == 0, resealed.output
    assert output_lines(resealed) == [
        f"signing key {kid} (RS256)",
        "sealed 1 signing key(s) under the current SECRET_KEY",
    ]
    sealed_after = stored_keys(engine)[kid]
    assert sealed_after != sealed_before

    after = make_server(JWT_SECRET="", SECRET_KEY=new_secret)
    assert header_of(obtain_token(after.browser(), user))["kid"] == kid
    again = run_command(after, "db", "upgrade")
    assert again.exit_code == 0, again.output
    assert output_lines(again) == [f"signing key {kid} (RS256)"]

    # A SECRET_KEY that opens nothing: the release says what to set, in one line.
    env = {**os.environ, **base_env, "SECRET_KEY": stranger}
    env.pop("JWT_SECRET")
    release = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert release.returncode == 1, release.stderr
    lines = [line for line in release.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, release.stderr
    assert lines[0].startswith("Error: ") and "SECRET_KEY_FALLBACKS" in lines[0]
    assert release.stdout == ""
    assert stored_keys(engine) == {kid: sealed_after}


def test_a_form_served_under_the_old_secret_key_is_loaded_again_during_rotation(
    server: Any,
    make_server: Callable[..., Any],
    user: dict[str, str],
    base_env: dict[str, str],
) -> None:
    # docs/settings.md: under SECRET_KEY_FALLBACKS the session stays valid,
    # but a form loaded before the change is refused (its CSRF token is
    # checked under SECRET_KEY alone) and loads again without signing out.
    before = server.browser()
    page = before.get("/login")
    assert page.status_code == 200
    during = make_server(
        SECRET_KEY=secrets.token_urlsafe(32),
        SECRET_KEY_FALLBACKS=base_env["SECRET_KEY"],
    )
    browser = during.browser()
    browser.cookies.update(before.cookies)
    credentials = {"email": user["email"], "password": user["password"]}

    stale = browser.post("/login", data={**before.form(page), **credentials})
    assert stale.status_code == 400, (stale.status_code, stale.text[:300])
    again = browser.get("/login")
    sent = browser.post("/login", data={**browser.form(again), **credentials})
    assert sent.status_code == 302, (sent.status_code, sent.text[:300])


# --- A configured key wins ------------------------------------------------------------


def test_a_configured_rsa_key_wins_and_the_service_makes_none(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    numbers = private.public_key().public_numbers()
    kid = thumbprint({"kty": "RSA", "n": b64_int(numbers.n), "e": b64_int(numbers.e)})
    # JWT_SECRET stays set too (the base environment's): the key wins over it.
    server = make_server(JWT_SIGNING_KEY=pem)
    browser = server.browser()

    token = obtain_token(browser, user)

    assert header_of(token) == {"alg": "RS256", "typ": "at+jwt", "kid": kid}
    assert [key["kid"] for key in published(browser)] == [kid]
    claims = pyjwt_verify(server.url + JWKS_PATH, token, server.issuer, "RS256")
    assert claims["sub"] == user["id"]
    upgraded = run_command(server, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert output_lines(upgraded) == []
    for args in (("keys", "rotate"), ("keys", "list")):
        refused = run_command(server, *args)
        assert refused.exit_code == 1, refused.output
        assert output_lines(refused) == []
        (line,) = error_lines(refused)
        assert line.startswith("Error: tokens are signed with JWT_SIGNING_KEY"), line
    assert stored_keys(engine) == {}


def test_jwt_secret_set_on_purpose_signs_hs256_and_publishes_nothing(
    server: Any, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    browser = server.browser()

    token = obtain_token(browser, user)

    assert header_of(token) == {"alg": "HS256", "typ": "at+jwt"}
    assert browser.get(JWKS_PATH).json() == {"keys": []}
    assert "jwks_uri" not in browser.get(AS_METADATA).json()
    refused = run_command(server, "keys", "rotate")
    assert refused.exit_code == 1, refused.output
    assert output_lines(refused) == []
    (line,) = error_lines(refused)
    assert line.startswith("Error: tokens are signed with JWT_SECRET"), line
    assert stored_keys(engine) == {}
