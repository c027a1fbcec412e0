"""Registration caps at scale, and a Redis blip during a registration
(docs/reference.md, docs/settings.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import sqlalchemy
from conftest import LiveServer
from helpers import LOOPBACK_REDIRECT


def register_from(live: Any, forwarded_for: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(
        live.url + "/register",
        json={"redirect_uris": [LOOPBACK_REDIRECT]},
        headers=headers,
        timeout=60,
    )


def client_ids(engine: sqlalchemy.Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT client_id FROM oauth_clients")
        )
        return [row.client_id for row in rows]


# --- A Redis blip during POST /register ---------------------------------------


def test_redis_lost_after_the_insert_keeps_and_returns_the_client(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis goes away once the client is inserted: nothing after the commit
    needs Redis, so the client is kept and returned, never a 500 for a
    client that exists but whose credentials nobody received."""
    from app.oauth import registration

    live = make_server(REDIS_URL=doomed_redis.url)
    insert = registration.insert_within_caps

    def insert_then_lose_redis(*args: Any) -> None:
        insert(*args)
        doomed_redis.stop()

    monkeypatch.setattr(registration, "insert_within_caps", insert_then_lose_redis)
    response = register_from(live)

    assert response.status_code == 201, response.text
    assert client_ids(engine) == [response.json()["client_id"]]
    # The rate limit's figures were read before the view, and are still sent.
    assert int(response.headers["X-RateLimit-Remaining"]) >= 0


def test_redis_lost_after_the_rate_limit_is_a_503_and_no_client(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    engine: sqlalchemy.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis goes away between counting the registration and the view: the
    answer is a 503 ``temporarily_unavailable`` and no client is created."""
    live = make_server(REDIS_URL=doomed_redis.url)
    strategy = live.app.extensions["rate_limits"].limiter
    hit = strategy.hit

    def hit_then_lose_redis(*args: Any, **kwargs: Any) -> bool:
        counted = hit(*args, **kwargs)
        doomed_redis.stop()
        return counted

    monkeypatch.setattr(strategy, "hit", hit_then_lose_redis)
    response = register_from(live)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert client_ids(engine) == []


def test_redis_down_before_the_registration_is_a_503_and_no_client(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    engine: sqlalchemy.Engine,
) -> None:
    live = make_server(REDIS_URL=doomed_redis.url)
    doomed_redis.stop()
    response = register_from(live)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert client_ids(engine) == []


# --- The caps count a window of recent registrations --------------------------


def backdate(engine: sqlalchemy.Engine, seconds: int) -> None:
    """Move every registration, and every step of the total's count with
    when it may be pruned, ``seconds`` into the past: as if that much time
    passed."""
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE oauth_clients"
                " SET created_at = created_at - make_interval(secs => :s)"
            ),
            {"s": seconds},
        )
        connection.execute(
            sqlalchemy.text(
                "UPDATE registration_counts"
                " SET starts_at = starts_at - make_interval(secs => :s),"
                "  expires_at = expires_at - make_interval(secs => :s)"
            ),
            {"s": seconds},
        )


def counted(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT coalesce(sum(registrations), 0) FROM registration_counts"
            )
        ).scalar_one()


def assert_capped(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "client_limit_exceeded"


def test_an_address_is_capped_only_within_the_window(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """An office behind one address whose clients all stay in use is not
    refused forever: clients registered before the window do not count."""
    live = make_server(MAX_CLIENTS_PER_ADDRESS="2", REGISTRATION_CAP_WINDOW="3600")
    assert register_from(live).status_code == 201
    assert register_from(live).status_code == 201
    assert_capped(register_from(live))

    backdate(engine, 3601)
    assert register_from(live).status_code == 201
    assert register_from(live).status_code == 201
    assert_capped(register_from(live))
    assert len(client_ids(engine)) == 4


def test_the_total_cap_counts_registrations_within_the_window(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(
        MAX_CLIENTS="2", TRUSTED_PROXY_HOPS="1", REGISTRATION_CAP_WINDOW="600"
    )
    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.2").status_code == 201
    refused = register_from(live, "203.0.113.3")
    assert_capped(refused)
    assert "address" not in refused.json()["error_description"]

    # Refused registrations are not counted.
    assert counted(engine) == 2

    backdate(engine, 601)
    assert register_from(live, "203.0.113.3").status_code == 201
    assert register_from(live, "203.0.113.4").status_code == 201
    assert_capped(register_from(live, "203.0.113.5"))
    assert counted(engine) == 4


def test_the_total_counts_registrations_not_clients_still_held(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    """A client deleted within the window (pruned, or by its person) was
    still registered: the flood guard counts registrations, so deleting what
    a flood made does not let it register again within the window."""
    live = make_server(MAX_CLIENTS="2", TRUSTED_PROXY_HOPS="1")
    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.2").status_code == 201
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DELETE FROM oauth_clients"))

    assert_capped(register_from(live, "203.0.113.3"))


# --- Neither count scans, however many clients there are ----------------------

#: Clients in the table: most registered long ago, many from one busy
#: address, and a day's flood in the window.
ROWS = 200_000
BUSY = "198.51.100.7"


def plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", ()):
        nodes.extend(plan_nodes(child))
    return nodes


def explained_values() -> dict[str, Any]:
    """The registration's parameters, as the busy address sends them now."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return {
        "client_id": "lessie-explained",
        "client_secret_hash": None,
        "client_name": "Explained",
        "redirect_uris": [LOOPBACK_REDIRECT],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "",
        "registered_from": BUSY,
        "created_at": now,
        "last_authorized_at": None,
        "jwks": None,
        "jwks_uri": None,
        "since": now - timedelta(days=1),
        "step_starts_at": now,
        "step_expires_at": now + timedelta(days=1),
        "per_address": 100,
        "cap": 100_000,
    }


@contextlib.contextmanager
def filled_at_scale(engine: sqlalchemy.Engine, rows: int = ROWS) -> Iterator[None]:
    """``rows`` clients, every tenth from the busy address, one in five
    registered within the last day, the rest over the past year; and a
    year of the total's hourly steps. Emptied again after the block."""
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO oauth_clients (client_id, client_secret_hash,"
                " client_name, redirect_uris, grant_types, response_types,"
                " token_endpoint_auth_method, scope, registered_from, created_at)"
                " SELECT 'lessie-' || n, NULL, 'Filler', ARRAY['http://127.0.0.1/cb'],"
                " ARRAY['authorization_code'], ARRAY['code'], 'none', '',"
                " CASE WHEN n % 10 = 0 THEN :busy"
                "  ELSE '10.' || (n / 65536) || '.' || (n / 256 % 256) || '.'"
                "   || (n % 256) END,"
                " CASE WHEN n % 5 = 0 THEN now() - (n % 86400) * interval '1 second'"
                "  ELSE now() - interval '1 day' - (n % 365) * interval '1 day' END"
                " FROM generate_series(1, :rows) AS n"
            ),
            {"busy": BUSY, "rows": rows},
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO registration_counts (starts_at, registrations, expires_at)"
                " SELECT date_trunc('hour', now()) - n * interval '1 hour', 25,"
                "  date_trunc('hour', now()) - n * interval '1 hour' + interval '1 day'"
                " FROM generate_series(0, 8759) AS n"
            )
        )
    try:
        # As autovacuum leaves a table: statistics, and the visibility map
        # that lets a count read the index alone.
        with engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            connection.exec_driver_sql("VACUUM ANALYZE registration_counts")
            # It may mark nothing all-visible, while another session (an
            # autovacuum the fill woke) holds an older snapshot: the plan must
            # keep to the index then too (registration_caps._from_source).
            connection.exec_driver_sql("VACUUM ANALYZE oauth_clients")
        yield
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql("TRUNCATE oauth_clients CASCADE")
            connection.exec_driver_sql("TRUNCATE registration_counts")


def test_the_caps_are_counted_from_their_indexes_at_scale(
    engine: sqlalchemy.Engine,
) -> None:
    """EXPLAIN the registration's INSERT over 200,000 clients and a year of
    the total's steps, planned for its values (its first executions): both
    counts read only the window, from their indexes; no table is scanned.
    The generic plan a prepared statement may settle on is checked in
    tests/test_registration_count_attacks.py."""
    from app.oauth.registration_caps import _insert_statement

    statement = _insert_statement().compile(dialect=engine.dialect)
    parameters = statement.construct_params(explained_values())
    with (
        filled_at_scale(engine),
        engine.connect() as connection,
        connection.begin() as transaction,
    ):
        [[explained]] = connection.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + str(statement), parameters
        ).all()
        transaction.rollback()

    nodes = plan_nodes(explained[0]["Plan"])
    # What the statement reads of its own WITH is not a table.
    scans = [
        node
        for node in nodes
        if "Scan" in node["Node Type"] and node["Node Type"] != "CTE Scan"
    ]
    # No table is scanned: the per-address count reads its window from its
    # index (index-only once autovacuum has passed; a bitmap of the window's
    # entries while the visibility map lags, as it may here), the total the
    # window's steps by their key.
    assert {node["Node Type"] for node in scans} <= {
        "Index Only Scan",
        "Index Scan",
        "Bitmap Index Scan",
        "Bitmap Heap Scan",
    }, [(n["Node Type"], n.get("Relation Name"), n.get("Filter")) for n in scans]
    assert {node["Index Name"] for node in scans if "Index Name" in node} == {
        "ix_oauth_clients_registered_from_created_at",
        "pk_registration_counts",
    }, explained
    for node in scans:
        bound = node.get("Index Cond", node.get("Recheck Cond", ""))
        assert "created_at >=" in bound or "starts_at >" in bound, explained
    # The per-address count stops at its cap.
    assert sum(node["Node Type"] == "Limit" for node in nodes) == 1
