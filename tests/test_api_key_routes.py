"""API keys over HTTP: the key API, the exchange, and use at /mcp."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import devservices
import pytest
import sqlalchemy
from helpers import (
    INVALID_CREDENTIALS,
    Browser,
    bearer,
    create_key,
    create_on_page,
    created_key,
    exchange,
    get_code,
    key_token,
    list_keys,
    new_key,
    obtain_token,
    parse_time,
    redeem,
    register_client,
    whoami,
    whoami_output,
)

from app.oauth.resources import default_resource
from app.oauth.tokens import decode_access_token

JSON_HEADERS = {"Content-Type": "application/json"}
GET_FIELDS = {
    "id",
    "name",
    "prefix",
    "scopes",
    "created_at",
    "expires_at",
    "last_used_at",
}
POST_FIELDS = {"id", "name", "key", "prefix", "scopes", "created_at", "expires_at"}


@pytest.fixture
def manager(browser: Browser, user: dict[str, str]) -> str:
    """An OAuth access token of ``user`` with ``read write``: it manages keys."""
    return obtain_token(browser, user)


def test_the_life_of_a_key(browser: Browser, manager: str, user: dict) -> None:
    created = create_key(browser, manager, name="laptop")
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    body = created.json()
    assert set(body) == POST_FIELDS
    key = body["key"]
    assert key.startswith("lsk_") and len(key) >= 4 + 43  # 256 bits, base64url
    assert key.startswith(body["prefix"]) and len(body["prefix"]) < 16
    assert body["name"] == "laptop" and body["scopes"] == ["read"]
    assert abs(parse_time(body["created_at"]) - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    # A key an application makes lives API_KEY_MAX_DAYS unless it asks for less.
    lifetime = parse_time(body["expires_at"]) - parse_time(body["created_at"])
    assert lifetime == timedelta(days=90)

    listing = browser.get("/api-keys", headers=bearer(manager))
    assert listing.status_code == 200
    [listed] = listing.json()["api_keys"]
    assert set(listed) == GET_FIELDS
    assert {k: listed[k] for k in POST_FIELDS - {"key"}} == {
        k: body[k] for k in POST_FIELDS - {"key"}
    }
    assert listed["last_used_at"] is None
    assert key not in listing.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listing.text

    exchanged = exchange(browser, key)
    assert exchanged.status_code == 200
    assert exchanged.headers["Cache-Control"] == "no-store"
    assert set(exchanged.json()) == {"token", "expiresIn"}
    assert exchanged.json()["expiresIn"] == 3600
    token = exchanged.json()["token"]
    output = whoami_output(browser, token)
    assert output["sub"] == user["id"] and output["api_key_id"] == body["id"]

    deleted = browser.delete(f"/api-keys/{body['id']}", headers=bearer(manager))
    assert deleted.status_code == 204 and deleted.content == b""
    # RFC 9110 §8.3: an empty answer claims no media type.
    assert "Content-Type" not in deleted.headers
    assert deleted.headers["Cache-Control"] == "no-store"
    assert list_keys(browser, manager) == []

    again = exchange(browser, key)
    unknown = exchange(browser, "lsk_" + "A" * 43)
    assert again.status_code == unknown.status_code == 401
    assert again.json() == unknown.json() == INVALID_CREDENTIALS
    assert whoami(browser, token).status_code == 401
    gone = browser.delete(f"/api-keys/{body['id']}", headers=bearer(manager))
    assert gone.status_code == 404


def test_exchanged_token_claims(
    server: Any, browser: Browser, manager: str, user: dict
) -> None:
    created = new_key(browser, manager, scopes=["write", "read"])
    assert created["scopes"] == ["read", "write"]
    token = key_token(browser, created["key"])
    with server.app.app_context():
        claims = decode_access_token(
            token, default_resource()
        )  # checks signature, iss and aud too
    assert claims["sub"] == user["id"]
    assert claims["scope"] == "read write"
    assert claims["via"] == "api_key"
    assert claims["api_key_id"] == created["id"]
    assert claims["iss"] == server.issuer
    assert claims["aud"] == server.issuer + "/mcp"
    assert claims["exp"] - claims["iat"] == 3600
    assert "client_id" not in claims


def test_read_only_key_token_works_at_mcp(browser: Browser, manager: str) -> None:
    token = key_token(browser, new_key(browser, manager)["key"])
    assert whoami(browser, token).status_code == 200


def test_write_only_key_token_lacks_read_at_mcp(browser: Browser, manager: str) -> None:
    token = key_token(browser, new_key(browser, manager, scopes=["write"])["key"])
    assert whoami(browser, token).status_code == 403


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},
        {"data": "not json", "headers": JSON_HEADERS},
        {"data": "apiKey=lsk_x"},
        {"json": []},
        {"json": "lsk_x"},
        {"json": {}},
        {"json": {"apiKey": None}},
        {"json": {"apiKey": 42}},
        {"json": {"apiKey": ["lsk_x"]}},
        {"json": {"apiKey": ""}},
        {"json": {"apiKey": "lsk_" + "A" * 43}},
        {"json": {"apiKey": "not a key at all"}},
        {"json": {"apiKey": "lsk_" + "A" * 20000}},
        {"json": {"apiKey": "\ud800"}},
        {"json": {"api_key": "lsk_x"}},
        {"data": "[" * 30000, "headers": JSON_HEADERS},
        {"data": '{"apiKey":' + "[" * 30000, "headers": JSON_HEADERS},
    ],
)
def test_every_failed_exchange_gets_the_same_401(
    browser: Browser, server: Any, request_kwargs: dict[str, Any]
) -> None:
    response = browser.post("/auth/token", **request_kwargs)
    assert response.status_code == 401
    assert response.json() == INVALID_CREDENTIALS
    assert response.headers["Cache-Control"] == "no-store"
    # RFC 9110 §15.5.2: a 401 names the credential it wants.
    assert response.headers["WWW-Authenticate"] == f'ApiKey realm="{server.issuer}"'


def test_an_oversized_chunked_body_is_refused_with_413(
    browser: Browser, manager: str
) -> None:
    body = json.dumps({"name": "x" * 70_000}).encode()
    # Sent chunked, without a Content-Length: the size shows only as it arrives.
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))

    response = browser.post(
        "/api-keys", data=chunks, headers={**bearer(manager), **JSON_HEADERS}
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "request_entity_too_large"


def test_hash_of_the_key_is_not_a_key(
    browser: Browser, manager: str, engine: sqlalchemy.Engine
) -> None:
    created = new_key(browser, manager)
    digest = hashlib.sha256(created["key"].encode()).hexdigest()
    response = exchange(browser, digest)
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS


def test_expired_key_is_refused(
    browser: Browser, manager: str, engine: sqlalchemy.Engine
) -> None:
    created = new_key(browser, manager, expires_in_days=1)
    lifetime = parse_time(created["expires_at"]) - parse_time(created["created_at"])
    assert lifetime == timedelta(days=1)
    assert exchange(browser, created["key"]).status_code == 200
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE api_keys SET expires_at = now() - interval '1 second' "
                "WHERE id = :id"
            ),
            {"id": created["id"]},
        )
    response = exchange(browser, created["key"])
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS
    # Expired keys stay listed (so people see why) until revoked.
    assert [k["id"] for k in list_keys(browser, manager)] == [created["id"]]


def test_disabled_owner_cannot_exchange_nor_use_tokens(
    server: Any, browser: Browser, manager: str, user: dict
) -> None:
    created = new_key(browser, manager)
    token = key_token(browser, created["key"])
    assert whoami(browser, token).status_code == 200
    result = server.app.test_cli_runner().invoke(
        args=["users", "disable", user["email"]]
    )
    assert result.exit_code == 0, result.output
    response = exchange(browser, created["key"])
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS
    assert whoami(browser, token).status_code == 401


def test_owner_disabled_in_the_database_cannot_exchange(
    browser: Browser, manager: str, user: dict, engine: sqlalchemy.Engine
) -> None:
    created = new_key(browser, manager)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET is_active = false WHERE id = :id"),
            {"id": user["id"]},
        )
    response = exchange(browser, created["key"])
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS


def eventually(
    fetch: Any, field: str, ok: Any = lambda value: value is not None
) -> dict:
    """Fetch until ``field`` satisfies ``ok`` (for writes made after a response)."""
    deadline = time.monotonic() + 5
    while True:
        item = fetch()
        if ok(item[field]) or time.monotonic() > deadline:
            return item
        time.sleep(0.05)


def test_last_used_at_is_recorded_at_most_once_a_minute(
    browser: Browser,
    manager: str,
    engine: sqlalchemy.Engine,
    redis_client: Any,
) -> None:
    created = new_key(browser, manager)
    key_token(browser, created["key"])
    # Written just after the answer goes out, so allow it a moment.
    listed = eventually(lambda: list_keys(browser, manager)[0], "last_used_at")
    first_use = parse_time(listed["last_used_at"])
    assert abs(first_use - datetime.now(UTC)) < timedelta(minutes=1)

    # Put the recorded time far back: an exchange within the minute leaves it.
    sentinel = "UPDATE api_keys SET last_used_at = '2000-01-01T00:00:00Z'"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(sentinel))
    key_token(browser, created["key"])
    time.sleep(0.3)  # a write, were one made, would follow the answer by now
    [listed] = list_keys(browser, manager)
    assert listed["last_used_at"] == "2000-01-01T00:00:00Z"

    # Once the minute's gate lapses, the next exchange records the time again.
    for gate in redis_client.scan_iter("api_key:last_used:*"):
        redis_client.delete(gate)
    key_token(browser, created["key"])
    listed = eventually(
        lambda: list_keys(browser, manager)[0],
        "last_used_at",
        lambda value: not value.startswith("2000"),
    )
    assert parse_time(listed["last_used_at"]).year == datetime.now(UTC).year


def test_rate_limit_on_the_exchange(make_server: Any, user: dict) -> None:
    browser = make_server(API_KEY_RATE_LIMIT="2 per minute").browser()
    for _ in range(2):
        assert exchange(browser, "lsk_unknown").status_code == 401
    response = exchange(browser, "lsk_unknown")
    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "too_many_requests"
    assert int(response.headers["Retry-After"]) > 0


def test_tokens_from_keys_cannot_manage_keys(browser: Browser, manager: str) -> None:
    created = new_key(browser, manager, scopes=["read", "write"])
    token = key_token(browser, created["key"])
    for method, path in (
        ("GET", "/api-keys"),
        ("POST", "/api-keys"),
        ("DELETE", f"/api-keys/{created['id']}"),
    ):
        response = browser.request(
            method, path, json={"name": "more"}, headers=bearer(token)
        )
        assert response.status_code == 403, (method, response.text)
        assert response.json()["error"] == "forbidden"
    assert [k["id"] for k in list_keys(browser, manager)] == [created["id"]]


def test_read_only_key_token_is_refused_for_lack_of_write(
    browser: Browser, manager: str
) -> None:
    token = key_token(browser, new_key(browser, manager)["key"])
    response = browser.get("/api-keys", headers=bearer(token))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_oauth_token_without_write_cannot_manage_keys(
    browser: Browser, user: dict
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user, scope="read")
    token = redeem(browser, client, code, verifier).json()["access_token"]
    for method in ("GET", "POST"):
        response = browser.request(
            method, "/api-keys", json={"name": "x"}, headers=bearer(token)
        )
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}],
)
def test_key_api_needs_a_valid_token(browser: Browser, headers: dict[str, str]) -> None:
    for method in ("GET", "POST"):
        response = browser.request(
            method, "/api-keys", json={"name": "x"}, headers=headers
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    delete = browser.delete(f"/api-keys/{uuid.uuid4()}", headers=headers)
    assert delete.status_code == 401


def test_keys_are_isolated_between_people(
    server: Any, browser: Browser, manager: str, other_user: dict
) -> None:
    mine = new_key(browser, manager)
    intruder = server.browser()
    theirs = obtain_token(intruder, other_user)
    assert list_keys(intruder, theirs) == []
    own = new_key(intruder, theirs, name="theirs")
    assert [k["id"] for k in list_keys(browser, manager)] == [mine["id"]]

    not_found = []
    for key_id in (mine["id"], str(uuid.uuid4()), "not-a-uuid", "1", "%00"):
        response = intruder.delete(f"/api-keys/{key_id}", headers=bearer(theirs))
        assert response.status_code == 404, key_id
        not_found.append(response.json())
    assert all(body == not_found[0] for body in not_found)
    assert not_found[0]["error"] == "not_found"

    assert exchange(browser, mine["key"]).status_code == 200
    output = whoami_output(intruder, key_token(intruder, own["key"]))
    assert output["sub"] == other_user["id"]


def test_an_application_cannot_use_up_the_persons_key_quota(
    make_server: Any, user: dict
) -> None:
    # The attack: an application with write makes as many keys as the person
    # may hold, so the person could make none on the account page.
    server = make_server(MAX_API_KEYS_PER_USER="6")
    browser = server.browser()
    token = obtain_token(browser, user)

    statuses = [create_key(browser, token, name=f"k{n}").status_code for n in range(6)]

    assert statuses == [201] * 5 + [403]  # API_KEY_MAX_PER_APP defaults to 5
    refused = create_key(browser, token, name="one more")
    assert refused.status_code == 403
    assert refused.json()["error"] == "api_key_limit_exceeded"
    assert "5" in refused.json()["error_description"]
    assert len(list_keys(browser, token)) == 5
    # The person's own quota is untouched: all six keys, then the page's limit.
    made = [create_on_page(browser, name=f"mine {n}").status_code for n in range(7)]
    assert made == [201] * 6 + [403]


def test_each_application_has_a_quota_of_its_own(make_server: Any, user: dict) -> None:
    server = make_server(API_KEY_MAX_PER_APP="2", MAX_API_KEYS_PER_USER="1")
    browser = server.browser()
    first, second = obtain_token(browser, user), obtain_token(browser, user)
    assert created_key(create_on_page(browser)).startswith("lsk_")

    keys = [new_key(browser, first, name="one"), new_key(browser, first, name="two")]
    assert create_key(browser, first, name="three").status_code == 403
    # Neither the person's keys nor the first application's count for another.
    assert create_key(browser, second, name="one").status_code == 201
    assert create_key(browser, second, name="two").status_code == 201
    assert create_key(browser, second, name="three").status_code == 403

    deleted = browser.delete(f"/api-keys/{keys[0]['id']}", headers=bearer(first))
    assert deleted.status_code == 204
    assert create_key(browser, first, name="three").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        [],
        "laptop",
        None,
        {},
        {"name": None},
        {"name": ""},
        {"name": "   "},
        {"name": 5},
        {"name": ["laptop"]},
        {"name": "x" * 101},
        {"name": "nul\x00byte"},
        {"name": "bell\x07"},
        {"name": "lone \ud800 surrogate"},
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": "read"},
        {"name": "k", "scopes": ["admin"]},
        {"name": "k", "scopes": ["read", "admin"]},
        {"name": "k", "scopes": [1]},
        {"name": "k", "scopes": {"read": True}},
        {"name": "k", "expires_in_days": 0},
        {"name": "k", "expires_in_days": -1},
        {"name": "k", "expires_in_days": 91},
        {"name": "k", "expires_in_days": 3651},
        {"name": "k", "expires_in_days": "30"},
        {"name": "k", "expires_in_days": 30.5},
        {"name": "k", "expires_in_days": 30.0},
        {"name": "k", "expires_in_days": True},
        {"name": "k", "expires_in_days": 10**100},
    ],
)
def test_bad_bodies_are_refused(browser: Browser, manager: str, body: Any) -> None:
    response = browser.post("/api-keys", json=body, headers=bearer(manager))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert list_keys(browser, manager) == []


@pytest.mark.parametrize(
    "data, content_type",
    [
        ("{not json", "application/json"),
        ("name=laptop", None),
        ("", None),
        ('{"name": "k", "scopes": ' + "[" * 30000, "application/json"),
    ],
)
def test_bodies_that_are_not_json_are_refused(
    browser: Browser, manager: str, data: str, content_type: str | None
) -> None:
    headers = bearer(manager)
    if content_type:
        headers["Content-Type"] = content_type
    response = browser.post("/api-keys", data=data, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "body, name, scopes",
    [
        ({"name": " padded "}, "padded", ["read"]),
        ({"name": "x" * 100}, "x" * 100, ["read"]),
        (
            {"name": "钥匙", "scopes": ["write", "read", "write"]},
            "钥匙",
            ["read", "write"],
        ),
        ({"name": "k", "scopes": None, "expires_in_days": None}, "k", ["read"]),
        ({"name": "k", "expires_in_days": 90, "extra": 1}, "k", ["read"]),
    ],
)
def test_good_bodies_at_the_edges(
    browser: Browser, manager: str, body: dict, name: str, scopes: list[str]
) -> None:
    created = browser.post("/api-keys", json=body, headers=bearer(manager))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name
    assert created.json()["scopes"] == scopes


def test_no_secret_is_stored_anywhere_in_the_database(
    browser: Browser, user: dict, engine: sqlalchemy.Engine
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    token = redeem(browser, client, code, verifier).json()["access_token"]
    key = new_key(browser, token)["key"]
    key_token(browser, key)

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(
        [devservices.find_postgres_binary("pg_dump"), "--data-only", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    # The dump is of the right database: the key's hash and the client are in it.
    assert hashlib.sha256(key.encode()).hexdigest() in dump
    assert client["client_id"] in dump
    assert key not in dump
    assert key[len("lsk_") + 8 :] not in dump
    assert client["client_secret"] not in dump
