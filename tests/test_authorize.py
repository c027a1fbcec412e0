"""The authorization endpoint, login round trip and consent page (docs/reference.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from bs4 import BeautifulSoup
from conftest import LiveServer
from helpers import (
    LOOPBACK_REDIRECT,
    Browser,
    attribute,
    authorize_params,
    authorize_path,
    consent,
    pkce_pair,
    query_of,
    redeem,
    register_client,
    select_one,
)

HTTPS_REDIRECT = "https://client.example.com/cb?tenant=a"


@pytest.fixture
def client(browser: Browser) -> dict[str, Any]:
    return register_client(browser, client_name="Inspector")


def redirect_query(response: Any, redirect_uri: str) -> dict[str, str]:
    """Assert a redirect to ``redirect_uri`` (as requested) and return its query."""
    assert response.status_code == 302, response.text[:500]
    location = response.headers["Location"]
    separator = "&" if "?" in redirect_uri else "?"
    assert location.startswith(redirect_uri + separator), location
    return query_of(location)


def assert_error_page(response: Any) -> None:
    """A 400 page for people, never a redirect (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.text[:500]
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")


def page(response: Any) -> BeautifulSoup:
    assert response.status_code == 200, response.text[:500]
    return BeautifulSoup(response.text, "html.parser")


# --- Without a session: log in, then come back to the same request ------------


def test_visitor_without_session_is_sent_to_login(
    browser: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])

    response = browser.get(authorize_path(params))

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(server.issuer + "/login?")
    next_target = query_of(location)["next"]
    assert urlsplit(next_target).path == "/authorize"
    assert query_of(next_target) == params


def test_signing_in_returns_to_the_authorization_request(
    browser: Browser, server: LiveServer, user: dict[str, str], client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    next_target = query_of(browser.get(authorize_path(params)).headers["Location"])[
        "next"
    ]

    response = browser.login(user["email"], user["password"], next_path=next_target)

    assert response.status_code == 302
    assert response.headers["Location"] == server.issuer + next_target
    assert "Inspector" in browser.get(next_target).text


# --- The consent page ---------------------------------------------------------


def test_consent_page_names_client_redirect_host_and_scopes(
    signed_in: Browser, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])

    soup = page(signed_in.get(authorize_path(params)))

    text = soup.get_text()
    assert "Inspector" in text
    assert "127.0.0.1" in text
    assert "read" in text and "write" in text
    buttons = soup.select("form [name=decision]")
    assert {button["value"] for button in buttons} == {"approve", "deny"}
    assert all(button.get("type", "submit") == "submit" for button in buttons)
    assert attribute(
        select_one(soup, "form input[type=hidden][name=csrf_token]"), "value"
    )


def test_consent_page_shows_the_requested_port(signed_in: Browser, client: Any) -> None:
    params = authorize_params(
        client, pkce_pair()[1], redirect_uri="http://127.0.0.1:5555/callback"
    )

    assert "127.0.0.1:5555" in page(signed_in.get(authorize_path(params))).get_text()


@pytest.mark.parametrize(
    ("scope", "shown", "hidden"),
    [(None, ["read", "write"], []), ("read", ["read"], ["write"])],
    ids=["default read write", "read only"],
)
def test_consent_page_lists_requested_scopes(
    signed_in: Browser, client: Any, scope: Any, shown: Any, hidden: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], scope=scope)

    soup = page(signed_in.get(authorize_path(params)))

    names = {tag.get_text(strip=True) for tag in soup.select(".scopes strong")}
    assert names == set(shown)
    for name in hidden:
        assert name not in names


# --- Approve and deny ---------------------------------------------------------


def test_approve_redirects_with_code_state_and_iss(
    signed_in: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])

    query = redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)

    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    # At least 128 random bits: 22 or more URL-safe characters.
    assert len(query["code"]) >= 22
    assert set(query) == {"code", "state", "iss"}


def test_each_approval_issues_a_new_code(signed_in: Browser, client: Any) -> None:
    params = authorize_params(client, pkce_pair()[1])

    first = redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)
    second = redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)

    assert first["code"] != second["code"]


def test_approve_without_state_sends_no_state(
    signed_in: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], state=None)

    query = redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)

    assert "state" not in query
    assert query["iss"] == server.issuer


def test_deny_redirects_with_access_denied(
    signed_in: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])

    query = redirect_query(consent(signed_in, params, "deny"), LOOPBACK_REDIRECT)

    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    assert "code" not in query


def test_consent_is_remembered_but_still_asked(signed_in: Browser, client: Any) -> None:
    params = authorize_params(client, pkce_pair()[1])
    first = page(signed_in.get(authorize_path(params))).get_text().lower()
    redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)

    second = page(signed_in.get(authorize_path(params)))

    assert "approved" not in first
    assert "approved" in second.get_text().lower()
    assert second.select("form [name=decision]")


def test_approval_of_fewer_scopes_is_not_remembered_for_more(
    signed_in: Browser, client: Any
) -> None:
    narrow = authorize_params(client, pkce_pair()[1], scope="read")
    redirect_query(consent(signed_in, narrow), LOOPBACK_REDIRECT)

    wide = authorize_params(client, pkce_pair()[1], scope="read write")
    text = page(signed_in.get(authorize_path(wide))).get_text().lower()

    assert "approved" not in text


# --- Error redirects: after client and redirect_uri check out -----------------

#: ``{issuer}`` is replaced by the server's issuer.
ERROR_REDIRECTS = {
    "response_type token": ({"response_type": "token"}, "unsupported_response_type"),
    "response_type code id_token": (
        {"response_type": "code id_token"},
        "unsupported_response_type",
    ),
    "no code_challenge": ({"code_challenge": None}, "invalid_request"),
    "plain PKCE": ({"code_challenge_method": "plain"}, "invalid_request"),
    "no code_challenge_method (plain)": (
        {"code_challenge_method": None},
        "invalid_request",
    ),
    "unknown PKCE method": ({"code_challenge_method": "S512"}, "invalid_request"),
    "unknown scope": ({"scope": "admin"}, "invalid_scope"),
    "one unknown scope": ({"scope": "read admin"}, "invalid_scope"),
    # RFC 6749 §3.3: scope-tokens are separated by spaces alone.
    "no-break space between scopes": ({"scope": "read\u00a0write"}, "invalid_scope"),
    "tab between scopes": ({"scope": "read\twrite"}, "invalid_scope"),
    "foreign resource": ({"resource": "https://other.example/mcp"}, "invalid_target"),
    "issuer as resource": ({"resource": "{issuer}"}, "invalid_target"),
    "resource past a segment": ({"resource": "{issuer}/mcpx"}, "invalid_target"),
    "resource on another path": ({"resource": "{issuer}/api"}, "invalid_target"),
}


@pytest.mark.parametrize(
    ("changes", "error"), ERROR_REDIRECTS.values(), ids=ERROR_REDIRECTS.keys()
)
def test_bad_requests_redirect_with_error_state_and_iss(
    browser: Browser, server: LiveServer, client: Any, changes: Any, error: Any
) -> None:
    # Answered before anyone is asked to sign in: no login needed to see it.
    changes = {
        name: value.format(issuer=server.issuer) if value else value
        for name, value in changes.items()
    }
    params = authorize_params(client, pkce_pair()[1], **changes)

    query = redirect_query(browser.get(authorize_path(params)), LOOPBACK_REDIRECT)

    assert query["error"] == error
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    assert "code" not in query


def test_missing_response_type_redirects_with_error(
    browser: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], response_type=None)

    query = redirect_query(browser.get(authorize_path(params)), LOOPBACK_REDIRECT)

    assert query["error"] in ("invalid_request", "unsupported_response_type")
    assert query["iss"] == server.issuer


def test_our_resource_is_accepted(
    signed_in: Browser, server: LiveServer, client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], resource=server.issuer + "/mcp")

    query = redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)

    assert query["code"]


# --- Redirect URI matching: loopback ports vary, everything else is exact ------

LOOPBACK_PORTS = [
    ("http://127.0.0.1/callback", "http://127.0.0.1:5555/callback"),
    ("http://localhost/callback", "http://localhost:5555/callback"),
    ("http://[::1]/callback", "http://[::1]:5555/callback"),
    ("http://127.0.0.1:8080/callback", "http://127.0.0.1:5555/callback"),
    ("http://127.0.0.1:8080/callback", "http://127.0.0.1/callback"),
    ("http://localhost:3000/cb?x=1", "http://localhost:49152/cb?x=1"),
]


@pytest.mark.parametrize(("registered", "requested"), LOOPBACK_PORTS)
def test_loopback_port_is_ignored_and_the_code_goes_to_the_named_port(
    signed_in: Browser, registered: Any, requested: Any
) -> None:
    client = register_client(signed_in, redirect_uris=[registered])
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, redirect_uri=requested)

    query = redirect_query(consent(signed_in, params), requested)

    response = redeem(signed_in, client, query["code"], verifier, requested)
    assert response.status_code == 200, response.text


LOOPBACK_MISMATCHES = [
    "http://localhost:5555/callback",
    "http://[::1]:5555/callback",
    "http://127.0.0.2/callback",
    "https://127.0.0.1:5555/callback",
    "http://127.0.0.1:5555/callback2",
    "http://127.0.0.1:5555/Callback",
    "http://127.0.0.1:5555/callback/",
    "http://127.0.0.1:5555/",
    "http://127.0.0.1:5555/callback?x=1",
    "http://127.0.0.1:5555/callback#x",
]


@pytest.mark.parametrize("requested", LOOPBACK_MISMATCHES)
def test_loopback_uris_otherwise_match_exactly(
    browser: Browser, client: Any, requested: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], redirect_uri=requested)

    assert_error_page(browser.get(authorize_path(params)))


HTTPS_MISMATCHES = {
    "no query": "https://client.example.com/cb",
    "other query value": "https://client.example.com/cb?tenant=b",
    "extra query": "https://client.example.com/cb?tenant=a&x=1",
    "trailing slash": "https://client.example.com/cb/?tenant=a",
    "path case": "https://client.example.com/CB?tenant=a",
    "host case": "https://CLIENT.example.com/cb?tenant=a",
    "explicit default port": "https://client.example.com:443/cb?tenant=a",
    "other port": "https://client.example.com:8443/cb?tenant=a",
    "http": "http://client.example.com/cb?tenant=a",
    "suffixed host": "https://client.example.com.evil.example/cb?tenant=a",
    "other host": "https://evil.example/cb?tenant=a",
    "dot segments": "https://client.example.com/x/../cb?tenant=a",
    "fragment": "https://client.example.com/cb?tenant=a#x",
    "percent-encoded": "https://client.example.com/%63b?tenant=a",
}


@pytest.mark.parametrize(
    "requested", HTTPS_MISMATCHES.values(), ids=HTTPS_MISMATCHES.keys()
)
def test_https_uris_match_exactly(browser: Browser, requested: Any) -> None:
    client = register_client(browser, redirect_uris=[HTTPS_REDIRECT])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=requested)

    assert_error_page(browser.get(authorize_path(params)))


def test_https_uri_registered_is_accepted(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=[HTTPS_REDIRECT])
    params = authorize_params(client, pkce_pair()[1])

    query = redirect_query(consent(signed_in, params), HTTPS_REDIRECT)

    assert query["tenant"] == "a"
    assert query["code"]


def test_single_registered_uri_is_the_default(signed_in: Browser, client: Any) -> None:
    params = authorize_params(client, pkce_pair()[1], redirect_uri=None)

    assert redirect_query(consent(signed_in, params), LOOPBACK_REDIRECT)["code"]


def test_several_registered_uris_require_one_to_be_named(browser: Browser) -> None:
    client = register_client(browser, redirect_uris=[LOOPBACK_REDIRECT, HTTPS_REDIRECT])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=None)

    assert_error_page(browser.get(authorize_path(params)))


# --- CSRF on the consent form -------------------------------------------------


def code_keys(redis_client: Any) -> list[str]:
    return list(redis_client.scan_iter("oauth:code:*"))


@pytest.mark.parametrize(
    "csrf_token",
    [None, "not-a-token", "IjEyMyI.ZzZzZw.aaaaaaaaaaaaaaaaaaaaaaaaaaa"],
    ids=["missing", "garbage", "well-formed but forged"],
)
def test_consent_without_a_valid_csrf_token_issues_no_code(
    signed_in: Browser, client: Any, redis_client: Any, csrf_token: str | None
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    page(signed_in.get(authorize_path(params)))
    form = {"decision": "approve"}
    if csrf_token is not None:
        form["csrf_token"] = csrf_token

    response = signed_in.post(authorize_path(params), data=form)

    assert_error_page(response)
    assert code_keys(redis_client) == []


def test_consent_with_another_sessions_csrf_token_issues_no_code(
    server: LiveServer,
    signed_in: Browser,
    other_user: dict[str, str],
    client: Any,
    redis_client: Any,
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    other = server.browser()
    other.login(other_user["email"], other_user["password"])
    foreign = other.form(other.get(authorize_path(params)))

    response = signed_in.post(
        authorize_path(params), data={**foreign, "decision": "approve"}
    )

    assert_error_page(response)
    assert code_keys(redis_client) == []


@pytest.mark.parametrize("decision", [None, "maybe", "APPROVE"])
def test_consent_needs_an_explicit_decision(
    signed_in: Browser, client: Any, redis_client: Any, decision: str | None
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    form = signed_in.form(signed_in.get(authorize_path(params)))
    if decision is not None:
        form["decision"] = decision

    response = signed_in.post(authorize_path(params), data=form)

    assert_error_page(response)
    assert code_keys(redis_client) == []


@pytest.mark.parametrize("repeated", ["scope", "response_type", "state"])
def test_repeated_parameters_redirect_once_the_client_is_known(
    browser: Browser, server: LiveServer, client: Any, repeated: str
) -> None:
    params = authorize_params(client, pkce_pair()[1], scope="read")
    path = authorize_path(params) + "&" + urlencode({repeated: params[repeated]})

    query = redirect_query(browser.get(path), LOOPBACK_REDIRECT)

    assert query["error"] == "invalid_request"
    assert query["iss"] == server.issuer
    assert query["state"] == params["state"]


@pytest.mark.parametrize("repeated", ["client_id", "redirect_uri"])
def test_repeated_client_or_redirect_uri_is_a_page(
    browser: Browser, client: Any, repeated: str
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    path = authorize_path(params) + "&" + urlencode({repeated: params[repeated]})

    response = browser.get(path)

    assert response.status_code == 400
    assert "Location" not in response.headers
