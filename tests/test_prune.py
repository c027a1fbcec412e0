"""``flask --app app prune``: every kind of dead row goes once dead long enough,
in batches, and nothing live, nor an approval racing it, is lost."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    backdate,
    client_ids,
    get_code,
    obtain_tokens,
    pkce_pair,
    prune,
    redeem,
    refresh,
    register_client,
    revoke,
    run_command,
    whoami,
)


def test_prune_deletes_only_old_clients_that_never_authorized(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    stale = register_client(browser, client_name="stale")
    used = register_client(browser, client_name="used")
    fresh = register_client(browser, client_name="fresh")
    recent = register_client(browser, client_name="recent")
    code, verifier, _ = get_code(browser, used, user)
    assert redeem(browser, used, code, verifier).status_code == 200
    backdate(engine, stale, 30)
    backdate(engine, used, 30)
    backdate(engine, recent, 3)

    result = prune(base_env, "--older-than-days", "7")

    assert result.returncode == 0, result.stderr
    assert client_ids(engine) == {
        used["client_id"],
        fresh["client_id"],
        recent["client_id"],
    }


def test_prune_respects_the_age_given(
    browser: Browser, engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    month_old = register_client(browser)
    backdate(engine, month_old, 30)

    kept = prune(base_env, "--older-than-days", "40")
    assert kept.returncode == 0, kept.stderr
    assert client_ids(engine) == {month_old["client_id"]}

    pruned = prune(base_env, "--older-than-days", "29")
    assert pruned.returncode == 0, pruned.stderr
    assert client_ids(engine) == set()


def test_a_pruned_client_can_no_longer_authorize(
    browser: Browser, engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    client = register_client(browser)
    backdate(engine, client, 30)

    assert prune(base_env, "--older-than-days", "7").returncode == 0

    params = authorize_params(client, pkce_pair()[1])
    response = browser.get("/authorize", params=params)
    assert response.status_code == 400
    assert "Location" not in response.headers


# Helpers ----------------------------------------------------------------------


def run_sql(engine: sqlalchemy.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(sql), params)


def count_rows(engine: sqlalchemy.Engine, table: str, where: str = "true") -> int:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE {where}")
        ).scalar_one()


def pruned(base_env: dict[str, str], *args: str) -> dict[str, str]:
    """Run the command; return its line for each kind, by kind."""
    result = prune(base_env, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(KIND_NAMES), lines
    return {kind: line for line in lines for kind in KIND_NAMES if kind in line}


KIND_NAMES = (
    "refresh tokens",
    "API keys",
    "consents",
    "clients",
    "denied tokens",
    "spent assertions",
    "registration counts",
)


def add_key(
    engine: sqlalchemy.Engine,
    user: dict[str, str],
    revoked_days: int | None = None,
    expired_days: int | None = None,
) -> str:
    key_id = str(uuid.uuid4())
    run_sql(
        engine,
        "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, scopes,"
        " resource, expires_at, revoked_at, created_at) VALUES (:id, :user, 'k',"
        " :hash, 'pfx', '{}', 'https://r.example', :expires, :revoked, now())",
        id=key_id,
        user=user["id"],
        hash=secrets.token_hex(32),
        expires=None if expired_days is None else ago(expired_days),
        revoked=None if revoked_days is None else ago(revoked_days),
    )
    return key_id


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def ids(engine: sqlalchemy.Engine, table: str, column: str = "id") -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(f"SELECT {column} FROM {table}"))
        return {str(row[0]) for row in rows}


# Refresh tokens ---------------------------------------------------------------


def test_a_live_chain_is_kept_whole_and_reuse_is_still_detected(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    client, tokens = obtain_tokens(browser, user)
    first = tokens["refresh_token"]
    second = refresh(browser, client, first).json()["refresh_token"]
    third = refresh(browser, client, second).json()["refresh_token"]
    # The rotated-out tokens are old; the chain's head is fresh.
    run_sql(
        engine,
        "UPDATE refresh_tokens SET issued_at = now() - interval '40 days',"
        " rotated_at = now() - interval '40 days' WHERE rotated_at IS NOT NULL",
    )

    lines = pruned(base_env, "--older-than-days", "1")

    assert "pruned 0 refresh tokens" in lines["refresh tokens"]
    assert count_rows(engine, "refresh_tokens") == 3
    # The first token, presented again, is reuse: the whole grant ends.
    assert refresh(browser, client, first).status_code == 400
    assert refresh(browser, client, third).status_code == 400
    assert count_rows(engine, "consents", "revoked_at IS NOT NULL") == 1


@pytest.mark.parametrize(
    "ending",
    [
        "UPDATE refresh_tokens SET chain_expires_at = now() - interval '{days} days'",
        # Idle: REFRESH_TOKEN_IDLE_TTL (14 days) and then the days kept.
        "UPDATE refresh_tokens SET issued_at = now() - interval '14 days'"
        " - interval '{days} days'",
        "UPDATE refresh_tokens SET revoked_at = now() - interval '{days} days'",
    ],
    ids=["expired", "idle", "revoked"],
)
def test_a_chain_goes_once_it_ended_long_enough_ago(
    ending: str,
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    client, tokens = obtain_tokens(browser, user)
    refresh(browser, client, tokens["refresh_token"])
    kept, _ = obtain_tokens(browser, user)  # another client's live chain
    live_ids = ids_of_client(engine, kept["client_id"])

    run_sql(
        engine, ending.format(days=5) + " WHERE client_id = :c", c=client["client_id"]
    )
    pruned(base_env, "--older-than-days", "7")
    assert count_rows(engine, "refresh_tokens") == 3

    run_sql(
        engine, ending.format(days=8) + " WHERE client_id = :c", c=client["client_id"]
    )
    lines = pruned(base_env, "--older-than-days", "7")
    assert "pruned 2 refresh tokens" in lines["refresh tokens"]
    assert ids(engine, "refresh_tokens") == live_ids


def ids_of_client(engine: sqlalchemy.Engine, client_id: str) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT id FROM refresh_tokens WHERE client_id = :c"),
            {"c": client_id},
        )
        return {str(row[0]) for row in rows}


# Consents and the denylist rebuild -------------------------------------------


def test_withdrawn_consents_go_after_the_days_and_live_ones_stay(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    old, old_tokens = obtain_tokens(browser, user)
    recent, recent_tokens = obtain_tokens(browser, user)
    live, _ = obtain_tokens(browser, user)
    for client, tokens in ((old, old_tokens), (recent, recent_tokens)):
        data = {"token": tokens["refresh_token"]}
        assert revoke(browser, client, data).status_code == 200
    run_sql(
        engine,
        "UPDATE consents SET revoked_at = now() - interval '8 days'"
        " WHERE client_id = :c",
        c=old["client_id"],
    )

    lines = pruned(base_env, "--older-than-days", "7")

    assert "pruned 1 consents" in lines["consents"]
    assert ids(engine, "consents", "client_id") == {
        recent["client_id"],
        live["client_id"],
    }
    # The client used, with no consent left, stays: it is not unused long.
    assert old["client_id"] in client_ids(engine)


def test_the_denylist_rebuild_still_denies_after_a_prune_and_a_flush(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
    redis_client: Any,
) -> None:
    client, tokens = obtain_tokens(browser, user)
    access = tokens["access_token"]
    assert whoami(browser, access).status_code == 200
    assert (
        revoke(browser, client, {"token": tokens["refresh_token"]}).status_code == 200
    )

    # The smallest --older-than-days still keeps what the rebuild reads.
    pruned(base_env, "--older-than-days", "1")
    redis_client.flushdb()

    assert count_rows(engine, "consents", "revoked_at IS NOT NULL") == 1
    assert whoami(browser, access).status_code == 401


# API keys ---------------------------------------------------------------------


def test_revoked_or_expired_keys_go_after_the_days(
    user: dict[str, str], engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    add_key(engine, user, revoked_days=8)
    add_key(engine, user, expired_days=8)
    kept = {
        add_key(engine, user),
        add_key(engine, user, revoked_days=3),
        add_key(engine, user, expired_days=3),
        add_key(engine, user, expired_days=-30),  # expires in a month
    }

    lines = pruned(base_env, "--older-than-days", "7")

    assert "pruned 2 API keys" in lines["API keys"]
    assert ids(engine, "api_keys") == kept


# Clients ----------------------------------------------------------------------


def test_a_client_unused_for_long_with_no_consent_goes(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    idle = register_client(browser)
    busy, _ = obtain_tokens(browser, user)
    code, verifier, _ = get_code(browser, idle, user)
    assert redeem(browser, idle, code, verifier).status_code == 200
    run_sql(engine, "DELETE FROM consents WHERE client_id = :c", c=idle["client_id"])
    for client in (idle, busy):
        run_sql(
            engine,
            "UPDATE oauth_clients SET created_at = now() - interval '400 days',"
            " last_authorized_at = now() - interval '200 days'"
            " WHERE client_id = :c",
            c=client["client_id"],
        )

    kept = pruned(base_env, "--unused-days", "365")
    assert "pruned 0 clients" in kept["clients"]

    lines = pruned(base_env, "--unused-days", "180")
    assert "pruned 1 clients" in lines["clients"]
    # The one with a live consent stays, however long ago it was authorized.
    assert client_ids(engine) == {busy["client_id"]}


def test_authorizing_again_marks_a_client_used_today(
    browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    client, _ = obtain_tokens(browser, user)
    run_sql(
        engine,
        "UPDATE oauth_clients SET last_authorized_at = now() - interval '200 days'",
    )
    code, verifier, _ = get_code(browser, client, user)
    assert redeem(browser, client, code, verifier).status_code == 200
    assert (
        count_rows(
            engine, "oauth_clients", "last_authorized_at > now() - interval '1 hour'"
        )
        == 1
    )


def test_service_clients_are_never_unused_and_revoked_ones_wait(
    server: Any, engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    made = [
        run_command(
            server,
            "clients",
            "create-service",
            f"job {n}",
            "--resource",
            server.issuer + "/mcp",
        )
        for n in range(3)
    ]
    never, recent, old = (json.loads(m.stdout)["client_id"] for m in made)
    run_sql(engine, "UPDATE oauth_clients SET created_at = now() - interval '999 days'")
    run_sql(
        engine,
        "UPDATE oauth_clients SET revoked_at = now() - interval '1 hour'"
        " WHERE client_id = :c",
        c=recent,
    )
    run_sql(
        engine,
        "UPDATE oauth_clients SET revoked_at = now() - interval '8 days'"
        " WHERE client_id = :c",
        c=old,
    )

    lines = pruned(base_env, "--older-than-days", "7", "--unused-days", "1")

    assert "pruned 1 clients" in lines["clients"]
    assert client_ids(engine) == {never, recent}


# Denials and spent assertions -------------------------------------------------


def test_expired_denials_and_assertions_go_in_batches(
    engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    for n in range(7):
        for table, key in (("denied_tokens", "jti"), ("spent_assertions", "digest")):
            run_sql(
                engine,
                f"INSERT INTO {table} ({key}, expires_at) VALUES (:k, :e)",
                k=f"gone-{n}",
                e=ago(1 / 24),
            )
    for table, key in (("denied_tokens", "jti"), ("spent_assertions", "digest")):
        run_sql(
            engine,
            f"INSERT INTO {table} ({key}, expires_at) VALUES ('kept', :e)",
            e=ago(-1 / 24),
        )

    lines = pruned(base_env, "--batch-size", "2")

    assert lines["denied tokens"] == "pruned 7 denied tokens in 4 batch(es)"
    assert lines["spent assertions"] == "pruned 7 spent assertions in 4 batch(es)"
    assert ids(engine, "denied_tokens", "jti") == {"kept"}
    assert ids(engine, "spent_assertions", "digest") == {"kept"}


def test_the_registration_caps_past_steps_go(
    engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    """A step of the total cap's window goes once the window has passed it;
    the steps the cap still sums stay."""
    for days, expires in ((3, 2), (2, 1 / 24), (1, -1 / 24), (0, -1)):
        run_sql(
            engine,
            "INSERT INTO registration_counts (starts_at, registrations, expires_at)"
            " VALUES (:s, 5, :e)",
            s=ago(days),
            e=ago(expires),
        )

    lines = pruned(base_env)

    assert lines["registration counts"] == "pruned 2 registration counts in 1 batch(es)"
    assert count_rows(engine, "registration_counts") == 2


def test_keys_ordered_by_id_go_in_batches_of_the_size_given(
    user: dict[str, str], engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    for _ in range(7):
        add_key(engine, user, revoked_days=30)
    kept = add_key(engine, user)

    lines = pruned(base_env, "--batch-size", "2")

    assert lines["API keys"] == "pruned 7 API keys in 4 batch(es)"
    assert ids(engine, "api_keys") == {kept}


def test_a_dry_run_counts_and_deletes_nothing(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    stale = register_client(browser)
    backdate(engine, stale, 30)
    add_key(engine, user, revoked_days=30)
    run_sql(
        engine,
        "INSERT INTO denied_tokens (jti, expires_at)"
        " VALUES ('x', now() - interval '1 day')",
    )

    lines = pruned(base_env, "--dry-run")

    assert lines["clients"] == "would prune 1 clients"
    assert lines["API keys"] == "would prune 1 API keys"
    assert lines["denied tokens"] == "would prune 1 denied tokens"
    assert lines["refresh tokens"] == "would prune 0 refresh tokens"
    assert client_ids(engine) == {stale["client_id"]}
    assert count_rows(engine, "api_keys") == 1
    assert count_rows(engine, "denied_tokens") == 1


def test_a_down_backend_is_one_line(base_env: dict[str, str]) -> None:
    env = {**base_env, "DATABASE_URL": "postgresql://127.0.0.1:1/none"}
    result = prune(env)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: Postgres is unreachable")
    )


# An approval racing a prune ---------------------------------------------------


def test_an_approval_racing_a_prune_keeps_its_consent_or_fails_cleanly(
    server: Any,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    clients = [register_client(server.browser()) for _ in range(24)]
    pages = []
    for client in clients:
        person = server.browser()
        assert person.login(user["email"], user["password"]).status_code == 302
        path = authorize_path(authorize_params(client, pkce_pair()[1]))
        page = person.get(path)
        assert page.status_code == 200, page.text
        pages.append((person, path, person.form(page)))
    for client in clients:
        backdate(engine, client, 30)

    def approve(entry: tuple[int, tuple[Browser, str, dict[str, str]]]) -> int:
        n, (person, path, form) = entry
        time.sleep(n * 0.1)  # spread over the command's start and its batches
        return person.post(path, data={**form, "decision": "approve"}).status_code

    with ThreadPoolExecutor(max_workers=len(pages) + 1) as pool:
        pruning = pool.submit(prune, base_env, "--batch-size", "1")
        statuses = list(pool.map(approve, enumerate(pages)))
        result = pruning.result()

    assert result.returncode == 0, result.stderr
    assert set(statuses) <= {302, 400}, statuses
    remaining = client_ids(engine)
    consented = ids(engine, "consents", "client_id")
    for client, status in zip(clients, statuses, strict=True):
        if status == 302:
            # Approved: its consent and its client are both there.
            assert client["client_id"] in consented
            assert client["client_id"] in remaining
        else:
            assert client["client_id"] not in consented


def _clients_kind(server: Any) -> Any:
    from app import prune as prune_rows

    kind = next(k for k in prune_rows.KINDS if k.name == "clients")
    with server.app.app_context():
        h = prune_rows.horizons(timedelta(days=7), timedelta(days=180))
    return prune_rows, kind, h


def test_an_approval_waiting_on_a_batch_that_deletes_its_client_is_a_400(
    server: Any,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    from app.db import db

    client = register_client(server.browser())
    person = server.browser()
    assert person.login(user["email"], user["password"]).status_code == 302
    path = authorize_path(authorize_params(client, pkce_pair()[1]))
    page = person.get(path)
    assert page.status_code == 200
    backdate(engine, client, 30)
    prune_rows, kind, h = _clients_kind(server)

    with ThreadPoolExecutor(max_workers=1) as pool:
        with server.app.app_context(), db.transaction():
            batch = prune_rows._batch(kind, h, None, 10)
            assert batch.deleted == [client["client_id"]]
            # The approval's foreign-key check waits for this batch.
            approval = pool.submit(
                person.post, path, data={**person.form(page), "decision": "approve"}
            )
            time.sleep(0.5)
            assert not approval.done()
        response = approval.result()

    assert response.status_code == 400, response.text
    assert "Location" not in response.headers
    assert count_rows(engine, "consents") == 0
    assert client_ids(engine) == set()


def test_a_batch_skips_a_client_whose_consent_is_being_written(
    server: Any,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    from app.db import db

    client = register_client(server.browser())
    backdate(engine, client, 30)
    prune_rows, kind, h = _clients_kind(server)

    with engine.connect() as approving:
        # An approval's consent, not yet committed: it holds the client's key.
        approving.execute(
            sqlalchemy.text(
                "INSERT INTO consents (id, user_id, client_id, scope, resource,"
                " approved_at) VALUES (:id, :user, :client, 'read', 'r', now())"
            ),
            {
                "id": str(uuid.uuid4()),
                "user": user["id"],
                "client": client["client_id"],
            },
        )
        with server.app.app_context(), db.transaction():
            assert prune_rows._batch(kind, h, None, 10).deleted == []
        approving.commit()

    with server.app.app_context(), db.transaction():
        assert prune_rows._batch(kind, h, None, 10).deleted == []
    assert client_ids(engine) == {client["client_id"]}
    assert count_rows(engine, "consents") == 1
