"""An application can never give itself more than the person gave it.

Each test is an attack a client with a ``write`` token could make through
``/api-keys``: keys with more scopes than it was given, keys that outlive it,
keys that survive the person withdrawing its access, and other clients' keys.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import requests
import sqlalchemy
from helpers import (
    INVALID_CREDENTIALS,
    MCP_HEADERS,
    Browser,
    attribute,
    bearer,
    create_key,
    create_on_page,
    created_key,
    exchange,
    get_code,
    key_token,
    list_keys,
    new_key,
    parse_time,
    redeem,
    refresh,
    register_client,
    revoke_from_account_page,
    select_one,
    soup,
    whoami_output,
)
from sqlalchemy.exc import IntegrityError

from app.config import ConfigError, load_settings

GATEWAY_SECRET = "gateway-secret-of-some-length"
TOOLS_LIST: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def authorized_token(
    browser: Browser, user: dict[str, str], scope: str = "read write", **metadata: Any
) -> tuple[dict[str, Any], str]:
    """Register a client, have ``user`` approve ``scope`` on the consent page."""
    client = register_client(browser, **metadata)
    code, verifier, _ = get_code(browser, client, user, scope=scope)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == scope
    return client, response.json()["access_token"]


def tools_list(browser: Browser, token: str) -> requests.Response:
    """Any valid token may list tools, whatever its scopes (docs/reference.md)."""
    return browser.post(
        "/mcp", json=TOOLS_LIST, headers={**MCP_HEADERS, **bearer(token)}
    )


def verify(browser: Browser, token: str) -> requests.Response:
    return browser.get("/auth/verify", headers=bearer(token))


def lifetime(created: dict[str, Any]) -> timedelta:
    return parse_time(created["expires_at"]) - parse_time(created["created_at"])


def assert_insufficient_scope(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["Cache-Control"] == "no-store"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')


def test_the_whole_story(
    browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    # The person approves `write` only, through the real consent form.
    _client, token = authorized_token(
        browser, user, scope="write", client_name="Sketchy <Sync>"
    )

    # The application asks for a key with more than it was given.
    assert_insufficient_scope(create_key(browser, token, scopes=["read", "write"]))
    assert_insufficient_scope(create_key(browser, token, scopes=["read"]))
    assert_insufficient_scope(create_key(browser, token))  # the default is read
    assert list_keys(browser, token) == []

    # Within what it was given, it gets a key that expires within the maximum.
    created = new_key(browser, token, scopes=["write"])
    assert created["scopes"] == ["write"]
    assert lifetime(created) == timedelta(days=90)
    key_access = key_token(browser, created["key"])
    assert tools_list(browser, key_access).status_code == 200
    assert verify(browser, key_access).status_code == 200

    # The person sees who made the key, then withdraws the application's access.
    page = browser.get("/account")
    [row] = [r for r in soup(page).select("tbody tr") if created["prefix"] in r.text]
    assert "Sketchy <Sync>" in row.get_text()
    assert "Sketchy &lt;Sync&gt;" in page.text
    revoke_from_account_page(browser)

    refused = exchange(browser, created["key"])
    assert refused.status_code == 401 and refused.json() == INVALID_CREDENTIALS
    assert tools_list(browser, key_access).status_code == 401
    assert verify(browser, key_access).status_code == 401
    with engine.connect() as connection:
        revoked_at = connection.scalar(
            sqlalchemy.text("SELECT revoked_at FROM api_keys WHERE id = :id"),
            {"id": created["id"]},
        )
    assert revoked_at is not None
    assert created["prefix"] not in browser.get("/account").text


@pytest.mark.parametrize(
    "approved, asked, status",
    [
        ("write", ["write"], 201),
        ("write", ["read"], 403),
        ("write", ["read", "write"], 403),
        ("write", None, 403),
        ("read write", ["read"], 201),
        ("read write", ["write"], 201),
        ("read write", ["read", "write"], 201),
        ("read write", None, 201),
    ],
)
def test_a_key_holds_at_most_the_tokens_scopes(
    browser: Browser, user: dict, approved: str, asked: Any, status: int
) -> None:
    _client, token = authorized_token(browser, user, scope=approved)
    body = {} if asked is None else {"scopes": asked}
    response = create_key(browser, token, **body)
    assert response.status_code == status, response.text
    if status == 403:
        assert_insufficient_scope(response)


def test_a_consent_narrowed_later_narrows_what_older_tokens_can_mint(
    browser: Browser, user: dict[str, str]
) -> None:
    client, older = authorized_token(browser, user, scope="read write")
    # The application asks again for less, and the person approves that.
    code, verifier, _ = get_code(browser, client, user, scope="write")
    assert redeem(browser, client, code, verifier).status_code == 200

    assert_insufficient_scope(create_key(browser, older, scopes=["read"]))
    assert new_key(browser, older, scopes=["write"])["scopes"] == ["write"]


def test_approving_again_with_fewer_scopes_narrows_what_the_application_holds(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET}")
    browser = live.browser()
    # The person approves `read write`; the application makes itself a key.
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user, scope="read write")
    tokens = redeem(browser, client, code, verifier).json()
    created = new_key(browser, tokens["access_token"], scopes=["read", "write"])

    # The person approves it again, for `read` only; the account page says so.
    code, verifier, _ = get_code(browser, client, user, scope="read")
    assert redeem(browser, client, code, verifier).status_code == 200
    page = soup(browser.get("/account"))
    [row] = [
        r
        for r in page.select("tbody tr")
        if r.select_one("td.last-refreshed") and client["client_id"] in r.get_text()
    ]
    assert "read" in row.get_text().split()
    assert "write" not in row.get_text().split()
    # So does the key the application made, in the person's list of keys.
    [key_row] = [
        r for r in page.select("tbody tr") if created["prefix"] in r.get_text()
    ]
    shown = key_row.select_one("td.scopes")
    assert shown is not None and shown.get_text().split() == ["read"]

    # The old chain refreshes to `read`, and cannot ask for `write` back.
    refreshed = refresh(browser, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["scope"] == "read"
    wider = refresh(
        browser, client, refreshed.json()["refresh_token"], scope="read write"
    )
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    again = refresh(browser, client, refreshed.json()["refresh_token"])
    assert again.status_code == 200, again.text

    # The key still exchanges, for `read` only.
    exchanged = key_token(browser, created["key"])

    for token in (refreshed.json()["access_token"], exchanged):
        assert whoami_output(browser, token)["scope"] == "read"
        described = browser.post(
            "/introspect", data={"token": token}, auth=("gateway", GATEWAY_SECRET)
        ).json()
        assert described["active"] is True
        assert described["scope"] == "read"
    # A call that needs `write` is refused.
    assert_insufficient_scope(
        create_key(browser, refreshed.json()["access_token"], scopes=["read"])
    )


def test_a_code_issued_before_the_narrowing_yields_only_what_is_left(
    make_server: Any, user: dict[str, str]
) -> None:
    browser = make_server().browser()
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    # Two approvals of `read write`; the second code waits, unredeemed.
    code, verifier, _ = get_code(browser, client, user, scope="read write")
    assert redeem(browser, client, code, verifier).status_code == 200
    waiting, waiting_verifier, _ = get_code(browser, client, user, scope="read write")
    # The person approves the client again, for `read` only.
    code, verifier, _ = get_code(browser, client, user, scope="read")
    assert redeem(browser, client, code, verifier).status_code == 200

    late = redeem(browser, client, waiting, waiting_verifier)
    assert late.status_code == 200, late.text
    assert late.json()["scope"] == "read"
    assert whoami_output(browser, late.json()["access_token"])["scope"] == "read"
    assert_insufficient_scope(
        create_key(browser, late.json()["access_token"], scopes=["read"])
    )


@pytest.mark.parametrize(
    "settings, body, days",
    [
        ({}, {}, 90),
        ({}, {"expires_in_days": None}, 90),
        ({}, {"expires_in_days": 1}, 1),
        ({}, {"expires_in_days": 90}, 90),
        ({"API_KEY_MAX_DAYS": "7"}, {}, 7),
        ({"API_KEY_MAX_DAYS": "7"}, {"expires_in_days": 7}, 7),
        ({"API_KEY_MAX_DAYS": "3650"}, {}, 3650),
    ],
)
def test_every_key_an_application_makes_expires(
    make_server: Any, user: dict, settings: dict, body: dict, days: int
) -> None:
    browser = make_server(**settings).browser()
    _client, token = authorized_token(browser, user)
    created = new_key(browser, token, **body)
    assert created["expires_at"] is not None
    assert lifetime(created) == timedelta(days=days)
    [listed] = list_keys(browser, token)
    assert listed["expires_at"] == created["expires_at"]


@pytest.mark.parametrize(
    "settings, days",
    [({}, 91), ({}, 3650), ({"API_KEY_MAX_DAYS": "7"}, 8)],
)
def test_a_longer_lifetime_is_refused_not_shortened(
    make_server: Any, user: dict, settings: dict, days: int
) -> None:
    browser = make_server(**settings).browser()
    _client, token = authorized_token(browser, user)
    response = create_key(browser, token, expires_in_days=days)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "from 1 to" in response.json()["error_description"]
    assert list_keys(browser, token) == []


@pytest.mark.parametrize("value", ["0", "-1", "3651", "ninety", "9.5"])
def test_api_key_max_days_is_validated(base_env: dict, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**base_env, "API_KEY_MAX_DAYS": value})
    assert raised.value.name == "API_KEY_MAX_DAYS"


def test_postgres_refuses_a_client_key_that_never_expires(
    browser: Browser, user: dict, engine: sqlalchemy.Engine
) -> None:
    _client, token = authorized_token(browser, user)
    created = new_key(browser, token)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE api_keys SET expires_at = NULL WHERE id = :id"),
            {"id": created["id"]},
        )


def test_revoking_one_application_revokes_only_its_keys(
    browser: Browser, user: dict[str, str]
) -> None:
    kept_client, kept_token = authorized_token(browser, user)
    gone_client, gone_token = authorized_token(browser, user)
    kept = new_key(browser, kept_token)
    gone = new_key(browser, gone_token)
    on_page = created_key(create_on_page(browser))

    revoke_from_account_page(browser, gone_client["client_id"])

    assert exchange(browser, gone["key"]).status_code == 401
    assert exchange(browser, kept["key"]).status_code == 200
    assert exchange(browser, on_page).status_code == 200
    assert [k["id"] for k in list_keys(browser, kept_token)] == [kept["id"]]


def test_approving_again_does_not_bring_revoked_keys_back(
    browser: Browser, user: dict[str, str]
) -> None:
    client, token = authorized_token(browser, user)
    old = new_key(browser, token)
    revoke_from_account_page(browser)

    code, verifier, _ = get_code(browser, client, user)
    renewed = redeem(browser, client, code, verifier).json()["access_token"]

    assert exchange(browser, old["key"]).status_code == 401
    assert list_keys(browser, renewed) == []
    fresh = new_key(browser, renewed)
    assert exchange(browser, fresh["key"]).status_code == 200
    # The renewed consent is the same row; withdrawing it again ends the new key.
    revoke_from_account_page(browser)
    assert exchange(browser, fresh["key"]).status_code == 401


def test_no_key_is_made_once_the_consent_is_withdrawn(
    browser: Browser, user: dict, engine: sqlalchemy.Engine
) -> None:
    # The moment between Postgres recording the withdrawal and the token being
    # denied in Redis: the consent itself must stop the key.
    _client, token = authorized_token(browser, user)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE consents SET revoked_at = now()"))
    for response in (
        create_key(browser, token),
        browser.get("/api-keys", headers=bearer(token)),
        browser.delete(f"/api-keys/{uuid.uuid4()}", headers=bearer(token)),
    ):
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    with engine.connect() as connection:
        count = connection.scalar(sqlalchemy.text("SELECT count(*) FROM api_keys"))
    assert count == 0


def test_an_application_sees_and_deletes_only_its_own_keys(
    browser: Browser, user: dict[str, str]
) -> None:
    _a, token_a = authorized_token(browser, user, client_name="App A")
    _b, token_b = authorized_token(browser, user, client_name="App B")
    on_page = created_key(create_on_page(browser, name="from the page"))
    key_a = new_key(browser, token_a, name="a")
    key_b = new_key(browser, token_b, name="b")

    assert [k["id"] for k in list_keys(browser, token_a)] == [key_a["id"]]
    assert [k["id"] for k in list_keys(browser, token_b)] == [key_b["id"]]

    page_key_id = next(
        attribute(form, "action").split("/")[-2]
        for row in soup(browser.get("/account")).select("tr")
        if "from the page" in row.get_text()
        for form in row.select("form[method=post]")
        if "/account/api-keys/" in attribute(form, "action")
    )
    answers = []
    for key_id in (key_b["id"], page_key_id, str(uuid.uuid4())):
        response = browser.delete(f"/api-keys/{key_id}", headers=bearer(token_a))
        assert response.status_code == 404, key_id
        answers.append(response.json())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["error"] == "not_found"
    assert exchange(browser, key_b["key"]).status_code == 200
    assert exchange(browser, on_page).status_code == 200

    deleted = browser.delete(f"/api-keys/{key_a['id']}", headers=bearer(token_a))
    assert deleted.status_code == 204
    assert exchange(browser, key_a["key"]).status_code == 401


def test_the_account_page_manages_every_key_and_names_its_maker(
    browser: Browser, user: dict[str, str]
) -> None:
    _client, token = authorized_token(browser, user, client_name="Editor <b>X</b>")
    by_app = new_key(browser, token, name="made by the app")
    forever = created_key(create_on_page(browser, name="made on the page"))

    page = browser.get("/account")
    rows = {
        select_one(r, "td").get_text(strip=True): r
        for r in soup(page).select("tbody tr")
    }
    app_row, page_row = rows["made by the app"], rows["made on the page"]
    assert "Editor <b>X</b>" in app_row.get_text()  # shown as text, not markup
    assert app_row.select_one("b") is None
    assert "You, on this page" in page_row.get_text()
    assert "Never" in page_row.get_text()

    for row in (app_row, page_row):
        action = attribute(select_one(row, "form"), "action")
        assert browser.post(action, data=browser.form(page)).status_code == 302
    assert exchange(browser, by_app["key"]).status_code == 401
    assert exchange(browser, forever).status_code == 401
