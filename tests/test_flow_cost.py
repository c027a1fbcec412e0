"""What the steps of a signed-in flow cost Postgres: registration and consent."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    get_code,
    pkce_pair,
    query_of,
    register_client,
    statements,
    statements_as,
    wait_for_current_view,
)


def statements_in_transactions(server: Any) -> Any:
    """Each statement the live server runs, and whether a transaction holds it.

    A statement outside a transaction (autocommit) costs no BEGIN and no
    COMMIT or ROLLBACK round trip.
    """
    return statements_as(
        server,
        lambda conn, sql: (
            sql.split()[0].upper(),
            not conn.connection.dbapi_connection.autocommit,
        ),
    )


def _client_cached(server: Any, browser: Browser, user: dict[str, str]) -> dict:
    """A client this process has read once its denylist view caught up."""
    client = register_client(browser)
    get_code(browser, client, user)
    wait_for_current_view(server)
    get_code(browser, client, user)
    return client


def test_a_registration_takes_its_address_lock_then_inserts_within_the_caps(
    server: Any, browser: Browser
) -> None:
    # The first registration starts the denylist view, whose start-up reads
    # run on the same engine; the resource registry is cached per process
    # once the view is current, by the next one.
    register_client(browser)
    wait_for_current_view(server)
    register_client(browser)
    with statements(server) as cost:
        register_client(browser)

    # The lock, then one statement: an INSERT ... SELECT whose WHERE holds
    # both caps, and the increment of the total's count (a WITH).
    assert cost == ["SELECT", "WITH"], cost


def test_the_consent_page_and_the_approval_are_one_statement_each(
    server: Any, browser: Browser, user: dict[str, str]
) -> None:
    client = _client_cached(server, browser, user)
    path = authorize_path(authorize_params(client, pkce_pair()[1]))

    with statements_in_transactions(server) as page_cost:
        page = browser.get(path)
    with statements_in_transactions(server) as approval_cost:
        approved = browser.post(
            path, data={**browser.form(page), "decision": "approve"}
        )

    assert page.status_code == 200 and approved.status_code == 302
    assert "code" in query_of(approved.headers["Location"])
    # The person with their live consent; then the upsert of the consent,
    # which requires the person enabled. Neither needs a transaction.
    assert page_cost == [("SELECT", False)]
    assert approval_cost == [("INSERT", False)]


def _disable(engine: sqlalchemy.Engine, user: dict[str, str]) -> None:
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET is_active = false WHERE id = :id"),
            {"id": user["id"]},
        )


def test_a_disabled_account_neither_sees_the_page_nor_approves(
    server: Any,
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    params = authorize_params(client, pkce_pair()[1])
    path = authorize_path(params)
    page = browser.get(path)
    assert page.status_code == 200
    form = browser.form(page)

    _disable(engine, user)

    again = browser.get(path, allow_redirects=False)
    approved = browser.post(path, data={**form, "decision": "approve"})
    silent = browser.get(
        authorize_path({**params, "prompt": "none"}), allow_redirects=False
    )
    assert again.status_code == 302 and "/login" in again.headers["Location"]
    assert approved.status_code == 302 and "/login" in approved.headers["Location"]
    assert query_of(silent.headers["Location"])["error"] == "login_required"
    with engine.connect() as connection:
        consents = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM consents WHERE client_id = :id"),
            {"id": client["client_id"]},
        ).scalar()
    assert consents == 0
