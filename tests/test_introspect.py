"""Token introspection (RFC 7662) at POST /introspect, for resource servers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import Browser, obtain_tokens, refresh, revoke

SECRET = "gateway-secret-of-some-length"
GATEWAY = ("gateway", SECRET)


@pytest.fixture
def live(make_server: Any) -> Any:
    return make_server(RESOURCE_SERVERS=f"gateway:{SECRET},other:another-long-secret")


def introspect(browser: Browser, token: str, auth: Any = GATEWAY) -> Any:
    return browser.post("/introspect", data={"token": token}, auth=auth)


def test_an_active_access_token_is_described(live: Any, user: dict[str, str]) -> None:
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    response = introspect(browser, tokens["access_token"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["active"] is True
    assert body["scope"] == "read write"
    assert body["client_id"] == client["client_id"]
    assert body["sub"] == user["id"]
    assert body["iss"] == live.issuer
    assert body["aud"] == live.issuer + "/mcp"
    assert body["token_type"] == "Bearer"
    assert body["iat"] <= time.time() < body["exp"]


def test_a_refresh_token_is_not_for_resource_servers(
    live: Any, user: dict[str, str]
) -> None:
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    response = introspect(browser, tokens["refresh_token"])

    # A resource server has no business with a refresh token; it learns nothing.
    assert response.status_code == 200
    assert response.json() == {"active": False}
    assert refresh(browser, client, tokens["refresh_token"]).status_code == 200


def test_expired_revoked_rotated_and_unknown_tokens_are_inactive(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(RESOURCE_SERVERS=f"gateway:{SECRET}", ACCESS_TOKEN_TTL="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    time.sleep(1.5)
    fresh = refresh(browser, client, rotated["refresh_token"]).json()
    revoke(browser, client, {"token": fresh["access_token"]})

    for token in (
        tokens["access_token"],  # expired
        fresh["access_token"],  # revoked
        rotated["refresh_token"],  # rotated out
        "unknown",
        "a.b.c",
    ):
        assert introspect(browser, token).json() == {"active": False}, token


def test_a_chain_ended_by_reuse_is_inactive_at_once(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(RESOURCE_SERVERS=f"gateway:{SECRET}", REFRESH_GRACE_SECONDS="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    time.sleep(1.5)

    assert refresh(browser, client, tokens["refresh_token"]).status_code == 400

    for token in (rotated["access_token"], rotated["refresh_token"]):
        assert introspect(browser, token).json() == {"active": False}


@pytest.mark.parametrize(
    "auth",
    [None, ("gateway", "wrong-secret-of-some-length"), ("nobody", SECRET)],
)
def test_bad_or_missing_credentials_are_refused(
    live: Any, user: dict[str, str], auth: Any
) -> None:
    browser = live.browser()
    _, tokens = obtain_tokens(browser, user)

    response = introspect(browser, tokens["access_token"], auth=auth)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_an_oauth_client_is_not_a_resource_server(
    live: Any, user: dict[str, str]
) -> None:
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)

    response = introspect(
        browser, tokens["access_token"], (client["client_id"], client["client_secret"])
    )

    assert response.status_code == 401


def test_advertised_only_when_configured(
    live: Any, browser: Browser, user: dict[str, str]
) -> None:
    metadata = live.browser().get("/.well-known/oauth-authorization-server").json()
    plain = browser.get("/.well-known/oauth-authorization-server").json()

    assert metadata["introspection_endpoint"] == live.issuer + "/introspect"
    assert metadata["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "private_key_jwt",
    ]
    assert "introspection_endpoint" not in plain
    unset = browser.post("/introspect", data={"token": "x"}, auth=GATEWAY)
    assert unset.status_code == 404


def test_switched_off_it_answers_json_saying_so(browser: Browser) -> None:
    # No RESOURCE_SERVERS: the endpoint's own JSON, not Werkzeug's text about
    # a mistyped URL, and the setting that turns it on.
    response = browser.post("/introspect", data={"token": "x"}, auth=GATEWAY)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "not_found",
        "error_description": (
            "Token introspection is off on this server: RESOURCE_SERVERS is not set."
        ),
    }
