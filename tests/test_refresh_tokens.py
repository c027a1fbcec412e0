"""Refresh tokens: rotation, a grace window, reuse detection, expiry."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy
from helpers import (
    Browser,
    claims_of,
    client_post,
    get_code,
    obtain_tokens,
    redeem,
    refresh,
    register_client,
    revoke_from_account_page,
    statements,
    token_request,
    whoami,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verify(browser: Browser, token: str) -> int:
    return browser.get("/auth/verify", headers=bearer(token)).status_code


def assert_invalid_grant(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


# Issue ------------------------------------------------------------------------


def test_code_exchange_returns_a_refresh_token_stored_only_hashed(
    browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    _, tokens = obtain_tokens(browser, user)

    assert len(tokens["refresh_token"]) >= 43  # 256 bits, base64url
    assert tokens["access_token"].count(".") == 2
    with engine.connect() as connection:
        stored = connection.execute(
            sqlalchemy.text("SELECT token_hash, sealed FROM refresh_tokens")
        ).all()
    assert len(stored) == 1
    assert tokens["refresh_token"] not in str(stored)


def test_the_remembered_rotation_answer_is_stored_sealed(
    browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()

    with engine.connect() as connection:
        stored = connection.execute(
            sqlalchemy.text("SELECT token_hash, sealed FROM refresh_tokens")
        ).all()
    assert len(stored) == 2
    for secret in (rotated["refresh_token"], rotated["access_token"]):
        assert secret not in str(stored)
        assert secret.split(".")[-1] not in str(stored)


def test_no_refresh_token_for_a_client_without_the_grant(
    browser: Browser, user: dict[str, str]
) -> None:
    _, tokens = obtain_tokens(browser, user, grant_types=["authorization_code"])

    assert "refresh_token" not in tokens


# Use ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["client_secret_basic", "client_secret_post", "none"]
)
def test_refresh_rotates_with_each_client_auth_method(
    browser: Browser, user: dict[str, str], method: str
) -> None:
    client, tokens = obtain_tokens(browser, user, token_endpoint_auth_method=method)

    response = refresh(browser, client, tokens["refresh_token"])

    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["scope"] == "read write"
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["access_token"] != tokens["access_token"]
    assert whoami(browser, body["access_token"]).status_code == 200
    again = refresh(browser, client, body["refresh_token"])
    assert again.status_code == 200, again.text


def test_a_client_must_authenticate_as_it_registered(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)

    wrong = refresh(browser, {**client, "token_endpoint_auth_method": "none"}, "x")
    bad_secret = refresh(
        browser, {**client, "client_secret": "wrong"}, tokens["refresh_token"]
    )

    assert wrong.status_code == 401
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    # The failed attempts did not spend the token.
    assert refresh(browser, client, tokens["refresh_token"]).status_code == 200


def test_unknown_missing_and_foreign_refresh_tokens_are_refused(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)
    other, _ = obtain_tokens(browser, user)

    assert_invalid_grant(refresh(browser, client, "not-a-token"))
    assert_invalid_grant(refresh(browser, client, "x" * 5000))
    assert_invalid_grant(refresh(browser, other, tokens["refresh_token"]))
    missing = token_request(browser, client, {"grant_type": "refresh_token"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    # Another client's attempt neither spent nor ended the chain.
    assert refresh(browser, client, tokens["refresh_token"]).status_code == 200


def test_scope_may_narrow_but_never_widen(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)
    narrow_client, narrow_tokens = obtain_tokens(browser, user, scope="read")

    narrowed = refresh(browser, client, tokens["refresh_token"], scope="read")
    widened = refresh(
        browser, narrow_client, narrow_tokens["refresh_token"], scope="read write"
    )

    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "read"
    # RFC 6749 §6: the new refresh token keeps the scope originally granted.
    full = refresh(browser, client, narrowed.json()["refresh_token"])
    assert full.json()["scope"] == "read write"
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"


def test_a_chain_keeps_no_scope_its_consent_was_approved_again_without(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user, scope="read")
    tokens = redeem(browser, client, code, verifier).json()
    # A step-up widens the consent to `read write`; then the person approves
    # the client again for `write` only: the consent keeps its id (so the
    # chain lives) and no longer holds `read`.
    for scope in ("read write", "write"):
        code, verifier, _ = get_code(browser, client, user, scope=scope)
        assert redeem(browser, client, code, verifier).status_code == 200

    refreshed = refresh(browser, client, tokens["refresh_token"])

    # Nothing of the chain's scope is left: the token carries none, and
    # never the client's whole registered scope in its place.
    assert refreshed.status_code == 200, refreshed.text
    assert "scope" not in refreshed.json()
    assert claims_of(refreshed.json()["access_token"])["scope"] == ""


def test_a_refused_scope_leaves_the_token_as_it_was(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_GRACE_SECONDS="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user, scope="read")

    widened = refresh(browser, client, tokens["refresh_token"], scope="read write")
    unknown = refresh(browser, client, tokens["refresh_token"], scope="admin")
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"
    assert unknown.json()["error"] == "invalid_scope"

    # RFC 6749 §5.2: the error spent nothing, so a retry after the grace
    # window is no reuse and the grant is intact.
    time.sleep(1.5)
    retry = refresh(browser, client, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text
    assert whoami(browser, tokens["access_token"]).status_code == 200
    assert whoami(browser, retry.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("scope", ["read\u00a0write", "read\twrite", "read\nwrite"])
def test_scope_tokens_are_separated_by_spaces_alone(
    make_server: Any, user: dict[str, str], scope: str
) -> None:
    browser = make_server().browser()
    client, tokens = obtain_tokens(browser, user)
    refused = refresh(browser, client, tokens["refresh_token"], scope=scope)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"
    # Repeats and runs of spaces are forgiven; the token names each scope once.
    repeated = refresh(browser, client, tokens["refresh_token"], scope="read  read")
    assert repeated.status_code == 200, repeated.text
    assert claims_of(repeated.json()["access_token"])["scope"] == "read"


def test_a_foreign_resource_is_invalid_target_and_spends_nothing(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_GRACE_SECONDS="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    for resource in ("https://elsewhere.example/mcp", live.issuer, "not a url"):
        foreign = refresh(browser, client, tokens["refresh_token"], resource=resource)
        assert foreign.status_code == 400, foreign.text
        assert foreign.json()["error"] == "invalid_target"

    time.sleep(1.5)
    ours = refresh(
        browser, client, tokens["refresh_token"], resource=live.issuer + "/mcp"
    )
    assert ours.status_code == 200, ours.text
    assert whoami(browser, ours.json()["access_token"]).status_code == 200


def test_offline_access_is_accepted_and_not_needed(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user, scope="read offline_access")
    tokens = redeem(browser, client, code, verifier).json()

    assert tokens["scope"] == "read"
    plain = refresh(browser, client, tokens["refresh_token"])
    assert plain.status_code == 200
    asked = refresh(
        browser, client, plain.json()["refresh_token"], scope="read offline_access"
    )
    assert asked.status_code == 200, asked.text
    assert asked.json()["scope"] == "read"
    only = refresh(
        browser, client, asked.json()["refresh_token"], scope="offline_access"
    )
    assert only.json()["scope"] == "read"


# Grace window and reuse -----------------------------------------------------------


def test_a_repeat_within_the_grace_window_gets_the_same_successor(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)

    first = refresh(browser, client, tokens["refresh_token"])
    repeat = refresh(browser, client, tokens["refresh_token"])

    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["refresh_token"] == first.json()["refresh_token"]
    assert whoami(browser, repeat.json()["access_token"]).status_code == 200
    assert refresh(browser, client, first.json()["refresh_token"]).status_code == 200


def test_ten_simultaneous_refreshes_agree_on_one_successor(
    server: Any, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(server.browser(), user)

    def attempt(_: int) -> Any:
        return refresh(server.browser(), client, tokens["refresh_token"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(attempt, range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    assert len({r.json()["refresh_token"] for r in responses}) == 1
    # One rotation, one access token: a repeat mints nothing new.
    assert len({r.json()["access_token"] for r in responses}) == 1


def test_parallel_repeats_of_a_rotated_token_get_the_one_answer(
    server: Any, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(server.browser(), user)
    first = refresh(server.browser(), client, tokens["refresh_token"]).json()

    def attempt(_: int) -> Any:
        return refresh(server.browser(), client, tokens["refresh_token"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(attempt, range(24)))

    assert [r.status_code for r in responses] == [200] * 24
    assert {r.json()["refresh_token"] for r in responses} == {first["refresh_token"]}
    assert {r.json()["access_token"] for r in responses} == {first["access_token"]}
    assert all(0 < r.json()["expires_in"] <= first["expires_in"] for r in responses)


def test_a_repeat_asking_too_much_is_refused_and_ends_nothing(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user, scope="read")
    first = refresh(browser, client, tokens["refresh_token"]).json()

    widened = refresh(browser, client, tokens["refresh_token"], scope="read write")

    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"
    repeat = refresh(browser, client, tokens["refresh_token"])
    assert repeat.json()["refresh_token"] == first["refresh_token"]
    assert refresh(browser, client, first["refresh_token"]).status_code == 200


def test_a_repeat_after_the_successor_was_used_is_reuse(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)
    first = refresh(browser, client, tokens["refresh_token"]).json()
    second = refresh(browser, client, first["refresh_token"]).json()

    # Well within the grace window, but the client evidently got the successor.
    assert_invalid_grant(refresh(browser, client, tokens["refresh_token"]))

    assert_invalid_grant(refresh(browser, client, second["refresh_token"]))
    for access_token in (first["access_token"], second["access_token"]):
        assert whoami(browser, access_token).status_code == 401


def test_reuse_after_the_grace_window_ends_the_whole_chain(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_GRACE_SECONDS="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    assert whoami(browser, rotated["access_token"]).status_code == 200

    time.sleep(1.5)
    replay = refresh(browser, client, tokens["refresh_token"])

    assert_invalid_grant(replay)
    assert_invalid_grant(refresh(browser, client, rotated["refresh_token"]))
    for access_token in (tokens["access_token"], rotated["access_token"]):
        assert whoami(browser, access_token).status_code == 401
        assert verify(browser, access_token) == 401


def test_an_old_token_of_a_dead_chain_ends_nothing_approved_since(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_TOKEN_IDLE_TTL="1", REFRESH_GRACE_SECONDS="0")
    browser = live.browser()
    client, old = obtain_tokens(browser, user)
    assert refresh(browser, client, old["refresh_token"]).status_code == 200
    time.sleep(1.5)  # that chain dies idle
    # The person approves the application again: a new chain, same consent.
    code, verifier, _ = get_code(browser, client, user)
    today = redeem(browser, client, code, verifier).json()

    # An old, rotated-out token (a backup, a log) is refused, and a chain
    # that could no longer be used has nothing left to protect.
    assert_invalid_grant(refresh(browser, client, old["refresh_token"]))

    assert whoami(browser, today["access_token"]).status_code == 200
    assert refresh(browser, client, today["refresh_token"]).status_code == 200


# Expiry ---------------------------------------------------------------------------


def test_an_idle_refresh_token_dies(make_server: Any, user: dict[str, str]) -> None:
    live = make_server(REFRESH_TOKEN_IDLE_TTL="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    time.sleep(1.5)

    assert_invalid_grant(refresh(browser, client, tokens["refresh_token"]))


def test_a_chain_dies_at_its_absolute_lifetime_however_used(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_TOKEN_TTL="3", REFRESH_TOKEN_IDLE_TTL="60")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    started = time.monotonic()
    current = tokens["refresh_token"]
    while time.monotonic() - started < 2:
        response = refresh(browser, client, current)
        assert response.status_code == 200, response.text
        current = response.json()["refresh_token"]
        time.sleep(0.5)

    time.sleep(max(0.0, 3.5 - (time.monotonic() - started)))

    assert_invalid_grant(refresh(browser, client, current))


# Ending chains ---------------------------------------------------------------------


def test_revoking_on_the_account_page_ends_the_chain(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    page = browser.get("/account").text
    assert "Never" not in page  # it shows when the application last refreshed

    revoke_from_account_page(browser, client["client_id"])

    assert_invalid_grant(refresh(browser, client, rotated["refresh_token"]))
    assert whoami(browser, rotated["access_token"]).status_code == 401


def test_ending_a_long_chain_writes_only_its_head(
    server: Any, browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    client, tokens = obtain_tokens(browser, user)
    chain = [tokens["refresh_token"]]
    for _ in range(30):
        response = refresh(browser, client, chain[-1])
        assert response.status_code == 200, response.text
        chain.append(response.json()["refresh_token"])
    written: list[tuple[str, int]] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE refresh_tokens"):
            written.append((statement, cursor.rowcount))

    db_engine = server.app.extensions["db"].engine
    sqlalchemy.event.listen(db_engine, "after_cursor_execute", count)
    try:
        revoke_from_account_page(browser, client["client_id"])
    finally:
        sqlalchemy.event.remove(db_engine, "after_cursor_execute", count)

    # One UPDATE, of the one token not rotated out; the 30 before it untouched.
    assert [rows for _, rows in written] == [1], written
    with engine.connect() as connection:
        marked, rows = connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FILTER (WHERE revoked_at IS NOT NULL), count(*)"
                " FROM refresh_tokens"
            )
        ).one()
    assert (marked, rows) == (1, 31)
    # Every token of the ended chain is refused: the head, a token rotated out
    # just before it (in the grace window), and the first.
    for token in (chain[-1], chain[-2], chain[0]):
        assert_invalid_grant(refresh(browser, client, token))
    # Nothing was rotated or ended by those attempts.
    with engine.connect() as connection:
        assert (
            connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM refresh_tokens"
                    " WHERE rotated_at IS NULL AND revoked_at IS NOT NULL"
                )
            ).scalar()
            == 1
        )


def test_reuse_after_a_chain_ended_is_refused_and_ends_nothing_else(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_GRACE_SECONDS="0")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    newest = refresh(browser, client, rotated["refresh_token"]).json()
    # Reuse of a rotated-out token ends the chain (only its head is written).
    assert_invalid_grant(refresh(browser, client, tokens["refresh_token"]))
    assert_invalid_grant(refresh(browser, client, newest["refresh_token"]))
    # The person approves the application again: a new consent, a new chain.
    code, verifier, _ = get_code(browser, client, user)
    today = redeem(browser, client, code, verifier).json()

    # The old chain's tokens, rotated out or its head, stay refused, and
    # presenting them (again) ends nothing approved since.
    for token in (rotated["refresh_token"], tokens["refresh_token"]):
        assert_invalid_grant(refresh(browser, client, token))
    revoked = client_post(
        browser, "/revoke", client, {"token": newest["refresh_token"]}
    )
    assert revoked.status_code == 200
    assert whoami(browser, today["access_token"]).status_code == 200
    assert refresh(browser, client, today["refresh_token"]).status_code == 200


def test_disabling_the_person_ends_their_chains(
    server: Any, browser: Browser, user: dict[str, str]
) -> None:
    from app.db import db
    from app.users import disable_user, find_by_email

    client, tokens = obtain_tokens(browser, user)
    with server.app.app_context(), db.transaction():
        person = find_by_email(user["email"])
        assert person is not None
        disable_user(person)

    assert_invalid_grant(refresh(browser, client, tokens["refresh_token"]))


def test_a_replayed_code_ends_the_chain_it_began(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user)
    tokens = redeem(browser, client, code, verifier).json()
    rotated = refresh(browser, client, tokens["refresh_token"]).json()

    assert_invalid_grant(redeem(browser, client, code, verifier))

    assert_invalid_grant(refresh(browser, client, rotated["refresh_token"]))
    assert whoami(browser, rotated["access_token"]).status_code == 401


# Operation -------------------------------------------------------------------------


def test_refresh_tokens_off(make_server: Any, user: dict[str, str]) -> None:
    live = make_server(REFRESH_TOKENS="off")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    metadata = browser.get("/.well-known/oauth-authorization-server").json()
    response = token_request(
        browser, client, {"grant_type": "refresh_token", "refresh_token": "x"}
    )

    assert "refresh_token" not in tokens
    assert metadata["grant_types_supported"] == [
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ]
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_a_restart_in_the_middle_of_a_chain_loses_nothing(
    make_server: Any, user: dict[str, str], redis_client: Any
) -> None:
    first = make_server()
    client, tokens = obtain_tokens(first.browser(), user)
    rotated = refresh(first.browser(), client, tokens["refresh_token"]).json()
    first.stop()
    redis_client.flushdb()  # refresh tokens outlive a Redis restart too

    # Another instance, on another port, with the same database and secret.
    second = make_server(ISSUER=first.url)
    response = refresh(second.browser(), client, rotated["refresh_token"])

    assert response.status_code == 200, response.text
    assert whoami(second.browser(), response.json()["access_token"]).status_code == 200


def _redis_calls(redis_client: Any) -> int:
    """Commands Redis has run, less the denylist views' heartbeats and INFO.

    Every app in this process keeps a subscriber that pings ten times a second,
    so the server-wide total would count other instances' heartbeats.
    """
    stats = redis_client.info("commandstats")
    skipped = {"cmdstat_ping", "cmdstat_info"}
    return sum(v["calls"] for k, v in stats.items() if k not in skipped)


def test_a_refresh_costs_at_most_three_statements_and_two_redis_commands(
    server: Any, browser: Browser, user: dict[str, str], redis_client: Any
) -> None:
    client, tokens = obtain_tokens(browser, user)

    before = _redis_calls(redis_client)
    with statements(server) as cost:
        response = refresh(browser, client, tokens["refresh_token"])
    after = _redis_calls(redis_client)

    assert response.status_code == 200, response.text
    # The client (unless this process already holds it), the token consumed
    # with its consent and person in one UPDATE, then its successor.
    assert len(cost) <= 3, cost
    assert cost.count("SELECT") <= 1, cost
    assert cost[cost.index("UPDATE") + 1 :] in (["INSERT"], ["WITH"]), cost
    assert after - before <= 2


def test_a_code_exchange_with_a_refresh_token_stays_at_three_statements(
    server: Any, browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user)

    with statements(server) as cost:
        response = redeem(browser, client, code, verifier)

    assert "refresh_token" in response.json()
    # The client (unless this process already holds it), the person with
    # their consent and the client's first-use mark in one statement, then
    # the refresh token.
    assert len(cost) <= 3, cost
    assert cost[-2:] == ["WITH", "INSERT"], cost
    assert cost[:-2] in ([], ["SELECT"]), cost
