"""Operator commands, run as a person would: ``flask --app app ...``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy


@pytest.fixture
def flask_cli(base_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            env={**os.environ, **base_env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_create_list_and_disable_a_user(
    flask_cli: Any, engine: sqlalchemy.Engine
) -> None:
    created = flask_cli(
        "users",
        "create",
        "Ada@Example.COM",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert created.returncode == 0, created.stderr
    assert "ada@example.com" in created.stdout

    listed = flask_cli("users", "list")
    assert "ada@example.com" in listed.stdout and "active" in listed.stdout

    disabled = flask_cli("users", "disable", "ADA@example.com")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in flask_cli("users", "list").stdout

    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT password_hash, is_active FROM users WHERE email = 'ada@example.com'"
        ).one()
    assert row.password_hash.startswith("$argon2id$")
    assert "correct horse" not in row.password_hash
    assert row.is_active is False


def test_duplicate_email_is_a_clear_error_whatever_its_case(flask_cli: Any) -> None:
    first = flask_cli(
        "users",
        "create",
        "bob@example.com",
        "--password-stdin",
        stdin="a long password\n",
    )
    assert first.returncode == 0
    again = flask_cli(
        "users",
        "create",
        "BOB@example.com",
        "--password-stdin",
        stdin="another password\n",
    )
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == "Error: a user with email bob@example.com already exists"
    )


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", "a long password", "not a valid email address"),
        ("carol@example.com", "short", "password must be"),
    ],
)
def test_bad_accounts_are_refused(
    flask_cli: Any, email: Any, password: Any, message: Any
) -> None:
    result = flask_cli(
        "users", "create", email, "--password-stdin", stdin=password + "\n"
    )
    assert result.returncode == 1
    assert message in result.stderr


def test_disabling_an_unknown_user_fails(flask_cli: Any) -> None:
    result = flask_cli("users", "disable", "nobody@example.com")
    assert result.returncode == 1
    assert "no user with email nobody@example.com" in result.stderr


@pytest.mark.parametrize(
    ("args", "down"),
    [
        (("users", "list"), "DATABASE_URL"),
        (("users", "create", "ada@example.com", "--password-stdin"), "DATABASE_URL"),
        (("clients", "list-services"), "DATABASE_URL"),
        (("users", "disable", "ada@example.com"), "REDIS_URL"),
    ],
)
def test_a_backend_that_cannot_be_reached_is_one_line(
    flask_cli: Any, args: tuple[str, ...], down: str, base_env: dict[str, str]
) -> None:
    if down == "REDIS_URL":
        made = flask_cli(
            "users", "create", args[-1], "--password-stdin", stdin="a long password\n"
        )
        assert made.returncode == 0, made.stderr
    unreachable = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    run = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        env={**os.environ, **base_env, down: unreachable[down]},
        input="a long password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    store = "Postgres" if down == "DATABASE_URL" else "Redis"
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"Error: {store} is unreachable: "), run.stderr
