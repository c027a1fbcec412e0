"""Token revocation (RFC 7009) at POST /revoke (docs/reference.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import (
    Browser,
    get_code,
    obtain_tokens,
    redeem,
    refresh,
    revoke,
    whoami,
)


def assert_empty_200(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert response.content == b""
    # An empty body has no media type (RFC 9110 §8.3).
    assert "Content-Type" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "method", ["client_secret_basic", "client_secret_post", "none"]
)
def test_revoking_an_access_token_stops_it(
    browser: Browser, user: dict[str, str], method: str
) -> None:
    client, tokens = obtain_tokens(browser, user, token_endpoint_auth_method=method)

    response = revoke(
        browser,
        client,
        {"token": tokens["access_token"], "token_type_hint": "access_token"},
    )

    assert_empty_200(response)
    assert whoami(browser, tokens["access_token"]).status_code == 401
    # Only that token: the refresh token still works.
    assert refresh(browser, client, tokens["refresh_token"]).status_code == 200


def test_revoking_a_refresh_token_ends_its_chain(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()

    # The hint is only a hint (RFC 7009 §2.1).
    response = revoke(
        browser,
        client,
        {"token": rotated["refresh_token"], "token_type_hint": "access_token"},
    )

    assert_empty_200(response)
    refused = refresh(browser, client, rotated["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    for access_token in (tokens["access_token"], rotated["access_token"]):
        assert whoami(browser, access_token).status_code == 401


def test_a_long_rotated_refresh_token_revokes_nothing(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_GRACE_SECONDS="1")
    browser = live.browser()
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()
    time.sleep(1.5)

    # An old token from a backup or a log must not end today's grant.
    assert_empty_200(revoke(browser, client, {"token": tokens["refresh_token"]}))

    assert whoami(browser, rotated["access_token"]).status_code == 200
    assert refresh(browser, client, rotated["refresh_token"]).status_code == 200


def test_an_expired_chain_revokes_nothing_of_the_grant_approved_since(
    make_server: Any, user: dict[str, str]
) -> None:
    live = make_server(REFRESH_TOKEN_IDLE_TTL="1")
    browser = live.browser()
    client, old = obtain_tokens(browser, user)
    time.sleep(1.5)  # the old chain dies idle
    # The person approves the application again: a new chain, same consent.
    code, verifier, _ = get_code(browser, client, user)
    today = redeem(browser, client, code, verifier).json()

    assert_empty_200(revoke(browser, client, {"token": old["refresh_token"]}))

    assert whoami(browser, today["access_token"]).status_code == 200
    assert refresh(browser, client, today["refresh_token"]).status_code == 200


def test_a_token_rotated_out_moments_ago_still_ends_its_chain(
    browser: Browser, user: dict[str, str]
) -> None:
    # Its holder may never have received the successor (the grace window).
    client, tokens = obtain_tokens(browser, user)
    rotated = refresh(browser, client, tokens["refresh_token"]).json()

    assert_empty_200(revoke(browser, client, {"token": tokens["refresh_token"]}))

    assert whoami(browser, rotated["access_token"]).status_code == 401
    assert refresh(browser, client, rotated["refresh_token"]).status_code == 400


@pytest.mark.parametrize(
    "token", ["unknown", "a.b.c", "x" * 10000, "\u00e9\u0000", "eyJ.eyJ.sig"]
)
def test_unknown_or_malformed_tokens_get_200(
    browser: Browser, user: dict[str, str], token: str
) -> None:
    client, _ = obtain_tokens(browser, user)

    assert_empty_200(
        revoke(browser, client, {"token": token, "token_type_hint": "made_up"})
    )


def test_another_clients_token_is_left_alone(
    browser: Browser, user: dict[str, str]
) -> None:
    owner, tokens = obtain_tokens(browser, user)
    stranger, _ = obtain_tokens(browser, user)

    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert_empty_200(revoke(browser, stranger, {"token": token}))

    assert whoami(browser, tokens["access_token"]).status_code == 200
    assert refresh(browser, owner, tokens["refresh_token"]).status_code == 200


def test_client_authentication_is_required(
    browser: Browser, user: dict[str, str]
) -> None:
    client, tokens = obtain_tokens(browser, user)

    anonymous = browser.post("/revoke", data={"token": tokens["access_token"]})
    wrong = revoke(
        browser, {**client, "client_secret": "nope"}, {"token": tokens["access_token"]}
    )
    two_methods = browser.post(
        "/revoke",
        data={"token": "x", "client_secret": client["client_secret"]},
        auth=(client["client_id"], client["client_secret"]),
    )
    missing = revoke(browser, client, {})

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert "Basic" in wrong.headers["WWW-Authenticate"]
    assert two_methods.status_code == 400
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    assert whoami(browser, tokens["access_token"]).status_code == 200


def test_revocation_is_advertised_and_open_to_browsers(browser: Browser) -> None:
    metadata = browser.get("/.well-known/oauth-authorization-server").json()
    preflight = browser.options(
        "/revoke",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
        },
    )

    assert metadata["revocation_endpoint"] == browser.server.issuer + "/revoke"
    assert set(metadata["revocation_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
        "private_key_jwt",
    }
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
