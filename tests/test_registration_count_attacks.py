"""Attacks on the registration cap's running count (``registration_counts``,
app/oauth/registration_caps.py): many addresses at once, Postgres failing
mid-registration, the window's edges, a window changed between deploys, prune,
and migration 0015 on a database that holds clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import requests
import sqlalchemy
from conftest import LiveServer
from helpers import prune
from test_migrations import empty_database, flask_db  # noqa: F401  (a fixture)
from test_registration_caps import (
    assert_capped,
    counted,
    explained_values,
    filled_at_scale,
    plan_nodes,
    register_from,
)
from test_registration_caps import backdate as pass_time


def scalar(engine: sqlalchemy.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(sqlalchemy.text(sql), params).scalar_one()


def clients(engine: sqlalchemy.Engine) -> int:
    return scalar(engine, "SELECT count(*) FROM oauth_clients")


# --- Many addresses at once ---------------------------------------------------


def test_many_addresses_at_once_are_all_registered_and_all_counted(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """Registrations from many addresses meet on their step's row: none
    deadlocks or fails, and the count is exactly the clients committed."""
    live = make_server(TRUSTED_PROXY_HOPS="1")
    addresses = [f"203.0.113.{n}" for n in range(1, 61)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(
            pool.map(lambda a: register_from(live, a).status_code, addresses)
        )
    assert statuses == [201] * len(addresses)
    assert counted(engine) == clients(engine) == len(addresses)


def test_a_burst_past_the_total_cap_is_refused_and_counted_exactly(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """A burst from many addresses at a small cap: every answer is a 201
    or a 403 (never a 500 nor a 503), the overshoot is at most the
    concurrency, and the count never drifts from the clients committed."""
    live = make_server(TRUSTED_PROXY_HOPS="1", MAX_CLIENTS="5")
    addresses = [f"198.51.100.{n}" for n in range(1, 61)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(
            pool.map(lambda a: register_from(live, a).status_code, addresses)
        )
    assert set(statuses) <= {201, 403}, statuses
    assert 5 <= statuses.count(201) <= 5 + 12
    assert counted(engine) == clients(engine) == statuses.count(201)


def test_one_address_at_once_cannot_race_past_its_cap(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(TRUSTED_PROXY_HOPS="1", MAX_CLIENTS_PER_ADDRESS="3")
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(
            pool.map(lambda _: register_from(live, "192.0.2.9").status_code, range(30))
        )
    assert statuses.count(201) == 3
    assert statuses.count(403) == 27
    assert counted(engine) == clients(engine) == 3


# --- Postgres failing mid-registration -----------------------------------------


def _backends_waiting_on_a_lock(engine: sqlalchemy.Engine) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sqlalchemy.text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    "  AND query LIKE '%registration_counts%'"
                )
            ).scalars()
        )


def test_postgres_failing_while_waiting_on_the_step_is_a_503_and_nothing_half_stored(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """A registration waits on its step's row (another registration holds
    it until its commit); its connection is then cut. The answer is a 503
    ``temporarily_unavailable``; neither a client nor a count is left of
    it, and the next registration goes through."""
    live = make_server(TRUSTED_PROXY_HOPS="1")
    assert register_from(live, "203.0.113.1").status_code == 201

    holder = engine.connect()
    try:
        transaction = holder.begin()
        # As a registration holds its step's row from its increment to its
        # commit (the whole table here: the next one may start a new step).
        holder.execute(
            sqlalchemy.text("LOCK TABLE registration_counts IN EXCLUSIVE MODE")
        )
        answers: list[requests.Response] = []
        thread = threading.Thread(
            target=lambda: answers.append(register_from(live, "203.0.113.2"))
        )
        thread.start()
        deadline = time.monotonic() + 20
        waiting: list[int] = []
        while not waiting and time.monotonic() < deadline:
            time.sleep(0.05)
            waiting = _backends_waiting_on_a_lock(engine)
        assert waiting, "the registration never waited on its step's row"
        with engine.connect() as connection:
            for pid in waiting:
                connection.execute(
                    sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                )
        thread.join(30)
        transaction.rollback()
    finally:
        holder.close()

    [answer] = answers
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert counted(engine) == clients(engine) == 1
    assert register_from(live, "203.0.113.3").status_code == 201
    assert counted(engine) == clients(engine) == 2


def test_postgres_lost_after_the_insert_is_a_503_and_nothing_half_stored(
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inserting statement ran (client and count); the connection is
    cut before the commit. 503, and neither the client nor its count."""
    from app.db import db
    from app.oauth import registration

    live = make_server(TRUSTED_PROXY_HOPS="1")
    insert = registration.insert_within_caps

    def insert_then_lose_postgres(*args: Any) -> None:
        insert(*args)
        pid = db.session.connection().exec_driver_sql("SELECT pg_backend_pid()")
        with engine.connect() as connection:
            connection.execute(
                sqlalchemy.text("SELECT pg_terminate_backend(:pid)"),
                {"pid": pid.scalar_one()},
            )

    monkeypatch.setattr(registration, "insert_within_caps", insert_then_lose_postgres)
    answer = register_from(live, "203.0.113.1")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert counted(engine) == clients(engine) == 0

    monkeypatch.setattr(registration, "insert_within_caps", insert)
    assert register_from(live, "203.0.113.1").status_code == 201
    assert counted(engine) == clients(engine) == 1


# --- The window's edges -------------------------------------------------------


def test_the_longest_window_counts_a_registration_for_23_24ths_of_it(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(
        TRUSTED_PROXY_HOPS="1", MAX_CLIENTS="1", REGISTRATION_CAP_WINDOW="31622400"
    )
    assert register_from(live, "203.0.113.1").status_code == 201
    assert_capped(register_from(live, "203.0.113.2"))
    pass_time(engine, 350 * 86400)
    assert_capped(register_from(live, "203.0.113.2"))
    pass_time(engine, 16 * 86400 + 1)
    assert register_from(live, "203.0.113.2").status_code == 201


def test_the_shortest_window_counts_a_registration_for_a_minute_at_most(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(
        TRUSTED_PROXY_HOPS="1", MAX_CLIENTS="1", REGISTRATION_CAP_WINDOW="60"
    )
    assert register_from(live, "203.0.113.1").status_code == 201
    assert_capped(register_from(live, "203.0.113.2"))
    pass_time(engine, 50)
    assert_capped(register_from(live, "203.0.113.2"))
    pass_time(engine, 11)
    assert register_from(live, "203.0.113.2").status_code == 201


# --- A window changed between deploys, and prune ------------------------------


def test_prune_keeps_the_steps_a_lengthened_window_still_counts(
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    """Deployed with an hour's window, then a day's: the registrations of
    the hour before still fall within the day. Prune, run with the day's
    window two hours later, must not delete their steps (each row says it
    may go an hour after its step), or the flood guard reopens."""
    hourly = make_server(
        TRUSTED_PROXY_HOPS="1", MAX_CLIENTS="2", REGISTRATION_CAP_WINDOW="3600"
    )
    assert register_from(hourly, "203.0.113.1").status_code == 201
    assert register_from(hourly, "203.0.113.2").status_code == 201

    daily_settings = {
        "TRUSTED_PROXY_HOPS": "1",
        "MAX_CLIENTS": "2",
        "REGISTRATION_CAP_WINDOW": "86400",
    }
    daily = make_server(**daily_settings)
    pass_time(engine, 2 * 3600)
    result = prune({**base_env, **daily_settings})
    assert result.returncode == 0, result.stderr

    assert counted(engine) == 2
    assert_capped(register_from(daily, "203.0.113.3"))


def test_a_step_counted_under_a_longer_window_keeps_the_longer_expiry(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """A step's row made under a short window is incremented after the
    window was lengthened (the steps coincide): the row must then be kept
    as long as the longer window needs it, not as the first registration
    said."""
    from app.oauth.registration_caps import _step

    now = datetime.now(UTC)
    starts_at, _ = _step(now, timedelta(seconds=86400))
    if starts_at + timedelta(seconds=3600) - now < timedelta(seconds=10):
        # Too near the step's end: the registration would count in the next.
        time.sleep(10)
        now = datetime.now(UTC)
        starts_at, _ = _step(now, timedelta(seconds=86400))
    # The row the hour's window made at the same instant: kept an hour.
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO registration_counts (starts_at, registrations, expires_at)"
                " VALUES (:s, 1, :e)"
            ),
            {"s": starts_at, "e": starts_at + timedelta(seconds=150 + 3600)},
        )
    daily = make_server(TRUSTED_PROXY_HOPS="1", REGISTRATION_CAP_WINDOW="86400")
    assert register_from(daily, "203.0.113.1").status_code == 201

    expires_at = scalar(
        engine,
        "SELECT expires_at FROM registration_counts WHERE starts_at = :s",
        s=starts_at,
    )
    assert expires_at >= starts_at + timedelta(seconds=3600 + 86400)
    assert counted(engine) == 2


def test_prune_deletes_steps_the_window_has_left(
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    settings = {"TRUSTED_PROXY_HOPS": "1", "REGISTRATION_CAP_WINDOW": "3600"}
    live = make_server(**settings)
    assert register_from(live, "203.0.113.1").status_code == 201
    pass_time(engine, 3600 + 150 + 1)
    assert register_from(live, "203.0.113.2").status_code == 201
    result = prune({**base_env, **settings})
    assert result.returncode == 0, result.stderr
    assert counted(engine) == 1


# --- Migration 0015 on a database that holds clients --------------------------


def test_migration_0015_carries_the_window_over_and_reverts(
    base_env: dict[str, str],
    empty_database: str,  # noqa: F811
) -> None:
    """Clients registered here within the last year are counted by their
    hour; metadata-document and service clients, and older ones, are not.
    Downgrade brings the index back; upgrading again counts the same."""
    flask_db(base_env, empty_database, "upgrade", "0014")
    engine = sqlalchemy.create_engine(empty_database)
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO oauth_clients (client_id, client_secret_hash,"
                    " client_name, redirect_uris, grant_types, response_types,"
                    " token_endpoint_auth_method, scope, registered_from, created_at)"
                    " SELECT 'c-' || n, NULL, 'x', ARRAY['http://127.0.0.1/cb'],"
                    " ARRAY['authorization_code'], ARRAY['code'], 'none', '',"
                    " CASE WHEN n % 10 = 0 THEN 'client-id-metadata-document'"
                    "  ELSE '10.0.0.' || (n % 200) END,"
                    " now() - n * interval '1 hour'"
                    " FROM generate_series(0, 9999) AS n"
                )
            )
        flask_db(base_env, empty_database, "upgrade")

        def carried() -> tuple[int, int]:
            with engine.connect() as connection:
                return tuple(
                    connection.execute(
                        sqlalchemy.text(
                            "SELECT coalesce(sum(registrations), 0),"
                            " count(*) FILTER (WHERE expires_at"
                            "  < starts_at + interval '366 days')"
                            " FROM registration_counts"
                        )
                    ).one()
                )

        # Hours 0..8783 lie within 366 days; every tenth is a document's.
        within = sum(1 for n in range(10000) if n < 366 * 24 and n % 10)
        assert carried() == (within, 0)

        flask_db(base_env, empty_database, "downgrade", "0014")
        with engine.connect() as connection:
            indexes = set(
                connection.execute(
                    sqlalchemy.text(
                        "SELECT indexname FROM pg_indexes"
                        " WHERE tablename = 'oauth_clients'"
                    )
                ).scalars()
            )
        assert "ix_oauth_clients_registered_created_at" in indexes
        flask_db(base_env, empty_database, "upgrade")
        assert carried() == (within, 0)
    finally:
        engine.dispose()


# --- The plan psycopg's prepared statement settles on -------------------------


def test_the_generic_plan_reads_only_the_window_from_the_indexes(
    engine: sqlalchemy.Engine,
) -> None:
    """psycopg prepares a statement after its fifth execution on a
    connection, and Postgres may then settle on a plan for any values.
    EXPLAIN with parameters plans for the values; here the statement is
    prepared and explained under ``force_generic_plan``, over 50,000
    clients and a year of hourly steps: still no table is scanned."""
    import re

    import psycopg

    from app.oauth.registration_caps import _insert_statement

    values = explained_values()
    statement = _insert_statement().compile(dialect=engine.dialect)
    parameters = statement.construct_params(values)
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", numbered, str(statement))
    with filled_at_scale(engine, rows=50_000):
        with engine.connect() as connection, connection.begin() as transaction:
            connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            connection.exec_driver_sql("PREPARE registering AS " + prepared)
            # Values written into the EXECUTE, typed by the PREPARE.
            cursor = psycopg.ClientCursor(
                cast(psycopg.Connection, connection.connection.driver_connection)
            )
            arguments = ", ".join(f"%({name})s" for name in names)
            cursor.execute(
                f"EXPLAIN (FORMAT JSON) EXECUTE registering({arguments})",
                {name: parameters[name] for name in names},
            )
            [[explained]] = cursor.fetchall()
            # A prepared statement outlives the transaction, not the session.
            connection.exec_driver_sql("DEALLOCATE registering")
            transaction.rollback()

    nodes = plan_nodes(explained[0]["Plan"])
    # Generic: the bounds are parameters, not the values.
    scans = [
        n for n in nodes if "Scan" in n["Node Type"] and "CTE" not in n["Node Type"]
    ]
    assert all("$" in n.get("Index Cond", "") for n in scans), explained
    assert {n["Node Type"] for n in scans} <= {"Index Only Scan", "Index Scan"}, (
        explained
    )
    assert {n["Index Name"] for n in scans} == {
        "ix_oauth_clients_registered_from_created_at",
        "pk_registration_counts",
    }, explained


# --- A registration stalled after its increment --------------------------------


def _stall_one_registration(
    live: LiveServer, engine: sqlalchemy.Engine, monkeypatch: pytest.MonkeyPatch
) -> tuple[requests.Response, float, requests.Response]:
    """Register from 203.0.113.1, whose process stalls 20 s between the
    inserting statement and the commit, then from 203.0.113.2: the second's
    answer, how long it took, and the stalled one's answer."""
    from app.oauth import registration, registration_caps

    monkeypatch.setattr(registration_caps, "IDLE_IN_REGISTRATION", "2s")
    insert = registration.insert_within_caps

    def insert_then_stall(values: dict[str, Any], settings: Any) -> None:
        insert(values, settings)
        if values["registered_from"] == "203.0.113.1":
            time.sleep(STALL)

    monkeypatch.setattr(registration, "insert_within_caps", insert_then_stall)
    stalled: list[requests.Response] = []
    thread = threading.Thread(
        target=lambda: stalled.append(register_from(live, "203.0.113.1"))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not _holding_the_count(engine) and time.monotonic() < deadline:
        time.sleep(0.05)

    started = time.monotonic()
    answer = register_from(live, "203.0.113.2")
    waited = time.monotonic() - started
    thread.join(STALL + 10)
    [late] = stalled
    return answer, waited, late


#: How long the stalled registration's process stalls, in seconds.
STALL = 20.0


def _holding_the_count(engine: sqlalchemy.Engine) -> bool:
    """Another session has written ``registration_counts`` and not ended."""
    return bool(
        scalar(
            engine,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE c.relname = 'registration_counts' AND l.pid <> pg_backend_pid()"
            "  AND l.mode = 'RowExclusiveLock' AND l.granted",
        )
    )


def test_a_registration_stalled_after_its_count_does_not_hold_up_everyone(
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registrations from every address meet on their step's row, from the
    increment to the commit. One whose process stalls in between (paused,
    or cut off from Postgres, which then waits hours for a COMMIT, until
    keepalives give up) must not keep every other registration waiting:
    Postgres ends its session once idle that long, which stores neither
    its client nor its count, and the others go through."""
    live = make_server(TRUSTED_PROXY_HOPS="1")
    answer, waited, late = _stall_one_registration(live, engine, monkeypatch)

    assert answer.status_code == 201, answer.text
    assert waited < STALL / 2, waited
    assert late.status_code >= 500, late.text
    assert counted(engine) == clients(engine) == 1
    # The pool dropped the ended session: the next registration is served.
    assert register_from(live, "203.0.113.3").status_code == 201
    assert counted(engine) == clients(engine) == 2


def test_the_stalled_registration_is_answered_as_unavailable(
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = make_server(TRUSTED_PROXY_HOPS="1")
    _, _, late = _stall_one_registration(live, engine, monkeypatch)
    assert late.status_code == 503, late.text
    assert late.json()["error"] == "temporarily_unavailable"
