"""Migrations apply to an empty database, revert to nothing, and apply again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from app.config import settings_from_environment
from app.migrate import current_heads
from app.models import Base


@pytest.fixture
def empty_database(base_env: dict[str, str]) -> Iterator[str]:
    """A brand-new database on the test server, dropped afterwards."""
    url = make_url(settings_from_environment(base_env).database_url)
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def flask_db(base_env: dict[str, str], database_url: str, *args: str) -> None:
    env = {**os.environ, **base_env, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def tables(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(
    base_env: dict[str, str], empty_database: Any
) -> None:
    expected = set(Base.metadata.tables)

    flask_db(base_env, empty_database, "upgrade")
    assert tables(empty_database) == expected
    assert current_heads(empty_database) == {"0015"}

    flask_db(base_env, empty_database, "downgrade", "base")
    assert tables(empty_database) == set()

    flask_db(base_env, empty_database, "upgrade")
    assert tables(empty_database) == expected


def test_models_and_migrations_agree(
    base_env: dict[str, str], empty_database: Any
) -> None:
    """Autogenerate finds nothing to do: the models are fully migrated."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    flask_db(base_env, empty_database, "upgrade")
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_refresh_chains_from_before_resources_are_bound_to_mcp(
    base_env: dict[str, str], empty_database: Any
) -> None:
    """0006 gives every existing chain the one resource tokens were for then."""
    flask_db(base_env, empty_database, "upgrade", "0005")
    with psycopg.connect(empty_database.replace("+psycopg", "")) as connection:
        user_id, consent_id = uuid.uuid4(), uuid.uuid4()
        connection.execute(
            "INSERT INTO users (id, email, password_hash, is_active, created_at)"
            " VALUES (%s, 'old@example.com', 'x', true, now())",
            (user_id,),
        )
        connection.execute(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris,"
            " grant_types, response_types, token_endpoint_auth_method, scope,"
            " registered_from, created_at) VALUES ('old-client', 'Old',"
            " '{http://127.0.0.1/cb}', '{authorization_code,refresh_token}',"
            " '{code}', 'none', 'read write', '127.0.0.1', now())"
        )
        connection.execute(
            "INSERT INTO consents (id, user_id, client_id, scope, approved_at,"
            " created_at) VALUES (%s, %s, 'old-client', 'read', now(), now())",
            (consent_id, user_id),
        )
        connection.execute(
            "INSERT INTO refresh_tokens (id, token_hash, consent_id, client_id,"
            " user_id, scope, issued_at, chain_expires_at) VALUES (%s, 'h',"
            " %s, 'old-client', %s, 'read', now(), now() + interval '1 day')",
            (uuid.uuid4(), consent_id, user_id),
        )

    flask_db(base_env, empty_database, "upgrade")

    with psycopg.connect(empty_database.replace("+psycopg", "")) as connection:
        [(resource,)] = connection.execute(
            "SELECT resource FROM refresh_tokens"
        ).fetchall()
    assert resource == base_env["ISSUER"] + "/mcp"


def _person_without_password(connection: Any) -> uuid.UUID:
    return connection.execute(
        text(
            "INSERT INTO users (id, email, password_hash, is_active)"
            " VALUES (gen_random_uuid(), 'bob@example.com', NULL, true) RETURNING id"
        )
    ).scalar_one()


def _link(connection: Any, user_id: uuid.UUID, subject: str) -> None:
    connection.execute(
        text(
            "INSERT INTO identities (id, user_id, issuer, subject)"
            " VALUES (gen_random_uuid(), :user_id, 'https://idp.example', :subject)"
        ),
        {"user_id": user_id, "subject": subject},
    )


def test_an_identity_is_one_person_s_and_goes_with_them(
    base_env: dict[str, str], empty_database: Any
) -> None:
    flask_db(base_env, empty_database, "upgrade")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as connection:
            person = _person_without_password(connection)
            _link(connection, person, "248289761001")
            _link(connection, person, "another-subject")
        with pytest.raises(IntegrityError), engine.begin() as connection:
            _link(connection, person, "248289761001")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM users"))
            left = connection.execute(text("SELECT count(*) FROM identities"))
            assert left.scalar_one() == 0
    finally:
        engine.dispose()


def test_a_person_without_a_password_survives_a_downgrade_and_back(
    base_env: dict[str, str], empty_database: Any
) -> None:
    flask_db(base_env, empty_database, "upgrade")
    engine = create_engine(empty_database)
    hash_of = text("SELECT password_hash FROM users")
    try:
        with engine.begin() as connection:
            _person_without_password(connection)

        flask_db(base_env, empty_database, "downgrade", "0006")
        with engine.connect() as connection:
            # What the earlier code takes for "no password".
            assert connection.execute(hash_of).scalar_one() == ""

        flask_db(base_env, empty_database, "upgrade")
        with engine.connect() as connection:
            assert connection.execute(hash_of).scalar_one() is None
    finally:
        engine.dispose()
