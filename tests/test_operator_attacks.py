"""Attacks on issue 24's operator work that succeed: the keys the service
manages itself, the argon2 change, and the settings and driver messages
that reach a log line.

Servers here pass ``JWT_SECRET=""`` for the keys the service makes itself
(tests/test_signing_keys.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from helpers import (
    ROOT,
    claims_for,
    claims_of,
    obtain_token,
    run_command,
    wait_for_current_view,
    whoami,
)

from app.config import ConfigError, settings_from_environment

#: Stands for a password in the URLs below; never to be seen in any output.
PASSWORD_TAIL = "hunter2-tail"


def _kid(token: str) -> str:
    import jwt as pyjwt

    return str(pyjwt.get_unverified_header(token)["kid"])


def _forged(server: Any, token: str, **changes: Any) -> str:
    """``token`` signed again with the service's own key, as one who took
    the ``signing_keys`` rows and ``SECRET_KEY`` could: ``changes`` applied."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from app.db import db
    from app.models import SigningKey
    from app.signing_keys import unseal

    settings = server.app.config["SETTINGS"]
    with server.app.app_context():
        row = db.session.get(SigningKey, _kid(token))
        assert row is not None
        pem, _ = unseal(row, settings)
    header = {"alg": "RS256", "typ": "at+jwt", "kid": row.kid}
    return jwt.encode(header, {**claims_of(token), **changes}, RSAKey.import_key(pem))


# --- A key taken down -------------------------------------------------------------


def test_a_deleted_key_stops_verifying_what_this_process_verified_with_it(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    """The key leaked: an operator deletes its row (no command retires a key
    at once). Every process that verified a token of it before keeps
    accepting that token until its ``exp``, which the forger chose: ten
    years here. The verified-token cache is keyed by the token alone, not by
    the key that verified it, and no ``exp`` is too far."""
    server = make_server(JWT_SECRET="")
    browser = server.browser()
    token = obtain_token(browser, user)
    wait_for_current_view(server)  # the verified-token cache is in use from then
    forged = _forged(server, token, exp=int(time.time()) + 10 * 365 * 86400)
    assert whoami(browser, forged).status_code == 200  # the key is still published

    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DELETE FROM signing_keys"))
    # The ring is rebuilt within RING_TTL (60 s); here at once.
    server.app.extensions["signing_key_ring"].clear()
    assert _kid(obtain_token(browser, user)) != _kid(forged)  # a new key signs

    fresh = make_server(JWT_SECRET="")
    assert whoami(fresh.browser(), forged).status_code == 401
    assert whoami(browser, forged).status_code == 401


def test_a_key_switched_in_at_once_is_accepted_by_every_process_at_once(
    make_server: Callable[..., Any], user: dict[str, str]
) -> None:
    """``keys rotate --switch-after 0`` (what a leaked key calls for) lets a
    process with a fresh ring sign with the new key while every other
    process refuses its tokens until its own ring expires (up to 60 s): each
    gunicorn worker is such a process."""
    first = make_server(JWT_SECRET="")
    old = obtain_token(first.browser(), user)  # the first worker's ring
    rotated = run_command(first, "keys", "rotate", "--switch-after", "0")
    assert rotated.exit_code == 0, rotated.output

    # Another worker of the same deployment (the same issuer), whose ring
    # came later, signs with the new key.
    second = make_server(JWT_SECRET="", ISSUER=first.issuer)
    new = _signed_by(second, claims_for(first, user))
    assert _kid(new) != _kid(old)
    assert whoami(first.browser(), new).status_code == 200


def _signed_by(server: Any, claims: dict[str, Any]) -> str:
    """A token as ``server``'s own process signs it now."""
    from app.oauth.tokens import sign_claims

    with server.app.app_context():
        return sign_claims(claims, server.app.config["SETTINGS"])


# --- Sign-in timing -----------------------------------------------------------------


def _costs_of_a_failed_sign_in(
    live: Any, email: str, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The argon2 parameters (``m=...,t=...,p=...``) of every verification a
    failed sign-in for ``email`` spends, in order."""
    import argon2._password_hasher as hasher

    spent: list[str] = []
    verify = hasher.verify_secret

    def counted(hash: bytes, secret: bytes, type: Any) -> bool:
        spent.append(hash.split(b"$")[3].decode())
        return verify(hash, secret, type)

    monkeypatch.setattr(hasher, "verify_secret", counted)
    browser = live.browser()
    page = browser.get("/login")
    data = {**browser.form(page), "email": email, "password": "not the password"}
    assert browser.post("/login", data=data).status_code == 401
    monkeypatch.setattr(hasher, "verify_secret", verify)
    return spent


def test_an_account_with_a_hash_from_before_the_argon2_change_is_not_told_by_cost(
    make_server: Callable[..., Any],
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every account made before the change keeps a 64 MiB, t=3, p=4 hash
    until its next sign-in, while an unknown email is checked against a
    dummy at 19 MiB, t=2, p=1: a wrong password for such an account would
    take several times as long (about 160 ms against 25 ms), telling its
    email from one with no account. While such hashes remain, every failure
    spends one verification of each cost. Counted, not timed."""
    from argon2 import PasswordHasher
    from argon2.profiles import RFC_9106_LOW_MEMORY

    older = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash(user["password"])
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET password_hash = :h WHERE id = :id"),
            {"h": older, "id": user["id"]},
        )
    # A process started while older hashes remain (each checks every 10 minutes).
    live = make_server()
    known = _costs_of_a_failed_sign_in(live, user["email"], monkeypatch)
    unknown = _costs_of_a_failed_sign_in(live, "nobody-here@example.com", monkeypatch)
    assert sorted(known) == sorted(unknown) == ["m=19456,t=2,p=1", "m=65536,t=3,p=4"]


# --- Secrets in what the operator reads ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # An '@' left unencoded in the password: SQLAlchemy takes what
        # follows it for the host, and psycopg's "failed to resolve host"
        # (a 503's log line, a command's one line) quotes it.
        ("DATABASE_URL", f"postgresql://app:p@{PASSWORD_TAIL}@127.0.0.1:1/mcp"),
        # A '?', '/' or '#' in the password: urllib reads what comes before
        # it as the port, and the configuration error quotes it.
        ("REDIS_URL", f"redis://default:{PASSWORD_TAIL}?x@127.0.0.1:1/0"),
        ("REDIS_URL", f"redis://:{PASSWORD_TAIL}/x@127.0.0.1:1/0"),
    ],
)
def test_a_password_in_a_url_never_reaches_an_error_line(
    base_env: dict[str, str], name: str, value: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "users", "list"],
        env={**os.environ, **base_env, name: value},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    said = run.stdout + run.stderr
    assert PASSWORD_TAIL not in said, said


# --- Settings that pass and fail later ----------------------------------------------


@pytest.mark.parametrize("option", ["socket_timeout=-5", "socket_connect_timeout=nan"])
def test_a_redis_timeout_no_socket_takes_is_refused_at_start(
    base_env: dict[str, str], option: str
) -> None:
    """Accepted today; then every request that reaches Redis raises
    ``ValueError`` from ``socket.settimeout`` (not a ``RedisError``): a 500
    and a traceback, not the one line at start-up the issue asked for."""
    with pytest.raises(ConfigError, match="REDIS_URL"):
        settings_from_environment(
            {**base_env, "REDIS_URL": f"redis://h:6379/0?{option}"}
        )


def test_a_row_publishes_only_the_key_sealed_for_it(
    make_server: Callable[..., Any], user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    """Someone able to write rows cannot publish a key of their own: a
    row's public key is derived from the private key sealed for its kid,
    and a sealed key moved to another row does not open."""
    live = make_server(JWT_SECRET="")
    token = obtain_token(live.browser(), user)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO signing_keys (kid, algorithm, sealed_private_key,"
                " public_jwk, signs_from) SELECT 'planted', algorithm,"
                " sealed_private_key, public_jwk, now() - interval '1 second'"
                " FROM signing_keys"
            )
        )
    live.app.extensions["signing_key_ring"].evict("ring")
    kids = [
        key["kid"]
        for key in live.browser().get("/.well-known/jwks.json").json()["keys"]
    ]
    assert kids == [_kid(token)]
    assert whoami(live.browser(), token).status_code == 200
