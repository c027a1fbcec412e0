"""Where /authorize may send people: trusted redirects, raw loopback matching,
and ``prompt=none`` (RFC 9700 §4.11.2, RFC 8252 §7.3)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from conftest import LiveServer
from helpers import (
    Browser,
    attribute,
    authorize_params,
    authorize_path,
    consent,
    pkce_pair,
    query_of,
    redeem,
    register_client,
)

#: Anyone can register this; it must not receive people unasked.
PHISHING = "https://phish.example/login"
LOOPBACK = "http://127.0.0.1/cb"


def redirect_query(response: Any, redirect_uri: str) -> dict[str, str]:
    """Assert a 302 to ``redirect_uri`` exactly as requested; return its query."""
    assert response.status_code == 302, (response.status_code, response.text[:300])
    location = response.headers["Location"]
    separator = "&" if "?" in redirect_uri else "?"
    assert location.startswith(redirect_uri + separator), location
    return query_of(location)


def error_link_query(response: Any, redirect_uri: str, host: str) -> dict[str, str]:
    """Assert the 400 page that names the error and host, and return the
    query of its one link to ``redirect_uri``."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    soup = BeautifulSoup(response.text, "html.parser")
    [href] = [h for a in soup.select("a[href]") if host in (h := attribute(a, "href"))]
    assert href.startswith(redirect_uri + "?"), href
    query = query_of(href)
    text = soup.get_text()
    assert query["error"] in text
    assert host in text
    return query


def assert_refused_page(response: Any) -> None:
    """The 400 page for an unregistered redirect URI: no redirect, no link out."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    soup = BeautifulSoup(response.text, "html.parser")
    assert not [a for a in soup.select("a[href]") if "127.0.0.1" in a["href"]]


@pytest.fixture
def phishing(browser: Browser) -> dict[str, Any]:
    return register_client(
        browser, client_name="Totally Legit", redirect_uris=[PHISHING]
    )


def approve_once(browser: Browser, client: Any, scope: str = "read write") -> None:
    """Give ``client`` a live approval from the browser's signed-in person."""
    params = authorize_params(client, pkce_pair()[1], scope=scope)
    assert consent(browser, params).status_code == 302


def revoke_approvals(browser: Browser) -> None:
    page = browser.get("/account")
    soup = BeautifulSoup(page.text, "html.parser")
    for form in soup.select("form[action*='/account/consents/']"):
        response = browser.post(attribute(form, "action"), data=browser.form(page))
        assert response.status_code == 302


# --- Finding 1: no automatic redirect to an untrusted URI ---------------------

#: Errors found before the person has acted, and their error codes.
EARLY_ERRORS = {
    "bad scope": ({"scope": "nope"}, "invalid_scope"),
    "no PKCE": ({"code_challenge": None}, "invalid_request"),
    "plain PKCE": ({"code_challenge_method": "plain"}, "invalid_request"),
    "bad response_type": ({"response_type": "token"}, "unsupported_response_type"),
    "foreign resource": ({"resource": "https://x.example/mcp"}, "invalid_target"),
    "no redirect_uri, bad scope": (
        {"redirect_uri": None, "scope": "nope"},
        "invalid_scope",
    ),
}


@pytest.mark.parametrize(
    ("changes", "error"), EARLY_ERRORS.values(), ids=EARLY_ERRORS.keys()
)
def test_phishing_uri_gets_a_page_not_a_redirect(
    browser: Browser, server: LiveServer, phishing: Any, changes: Any, error: Any
) -> None:
    params = authorize_params(phishing, pkce_pair()[1], **changes)

    query = error_link_query(
        browser.get(authorize_path(params)), PHISHING, "phish.example"
    )

    assert query["error"] == error
    assert query["error_description"]
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    assert "code" not in query


def test_the_link_carries_a_hostile_state_exactly(
    browser: Browser, phishing: Any
) -> None:
    state = '"><script>alert(1)</script>&x=é'
    params = authorize_params(phishing, pkce_pair()[1], scope="nope", state=state)

    response = browser.get(authorize_path(params))

    assert "<script>alert(1)</script>" not in response.text
    assert error_link_query(response, PHISHING, "phish.example")["state"] == state


def test_signed_in_person_without_approval_gets_the_page(
    signed_in: Browser, phishing: Any
) -> None:
    params = authorize_params(phishing, pkce_pair()[1], scope="nope")

    response = signed_in.get(authorize_path(params))

    assert error_link_query(response, PHISHING, "phish.example")["error"] == (
        "invalid_scope"
    )


def test_another_persons_approval_does_not_count(
    server: LiveServer, signed_in: Browser, other_user: dict[str, str], phishing: Any
) -> None:
    other = server.browser()
    other.login(other_user["email"], other_user["password"])
    approve_once(other, phishing)
    params = authorize_params(phishing, pkce_pair()[1], scope="nope")

    response = signed_in.get(authorize_path(params))

    error_link_query(response, PHISHING, "phish.example")


def test_person_who_approved_the_client_is_redirected(
    signed_in: Browser, server: LiveServer, phishing: Any
) -> None:
    approve_once(signed_in, phishing, scope="read")
    params = authorize_params(phishing, pkce_pair()[1], scope="nope")

    query = redirect_query(signed_in.get(authorize_path(params)), PHISHING)

    assert query["error"] == "invalid_scope"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_a_revoked_approval_is_no_longer_trusted(
    signed_in: Browser, phishing: Any
) -> None:
    approve_once(signed_in, phishing)
    revoke_approvals(signed_in)
    params = authorize_params(phishing, pkce_pair()[1], scope="nope")

    error_link_query(signed_in.get(authorize_path(params)), PHISHING, "phish.example")


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1/cb", "http://localhost:3000/cb", "http://[::1]/cb?x=1"],
)
def test_loopback_errors_still_redirect_without_a_session(
    browser: Browser, server: LiveServer, redirect_uri: str
) -> None:
    client = register_client(browser, redirect_uris=[redirect_uri])
    params = authorize_params(client, pkce_pair()[1], code_challenge=None)

    query = redirect_query(browser.get(authorize_path(params)), redirect_uri)

    assert query["error"] == "invalid_request"
    assert query["iss"] == server.issuer


#: Private-use redirect URIs, and the scheme the error page names for each.
APP_REDIRECTS = {
    "com.example.app:/callback": "com.example.app:",
    "cursor://anysphere.cursor/cb": "cursor://",
}


def app_link_query(response: Any, redirect_uri: str, scheme: str) -> dict[str, str]:
    """Assert the 400 page naming the app scheme; return its one link's query."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    soup = BeautifulSoup(response.text, "html.parser")
    hrefs = [attribute(a, "href") for a in soup.select("a[href]")]
    [href] = [h for h in hrefs if h.startswith(scheme)]
    assert href.startswith(redirect_uri + "?"), href
    text = soup.get_text()
    assert f"sent to the {scheme} app on this device" in text
    query = query_of(href)
    assert query["error"] in text
    return query


@pytest.mark.parametrize("redirect_uri", APP_REDIRECTS, ids=APP_REDIRECTS.values())
def test_private_use_scheme_gets_a_page_before_any_approval(
    browser: Browser, server: LiveServer, redirect_uri: Any
) -> None:
    # The app scheme may be claimed by anything on the device, a browser
    # launcher among them: before the person approved the client, no redirect.
    client = register_client(browser, redirect_uris=[redirect_uri])
    params = authorize_params(client, pkce_pair()[1], scope="nope")

    response = browser.get(authorize_path(params))

    query = app_link_query(response, redirect_uri, APP_REDIRECTS[redirect_uri])
    assert query["error"] == "invalid_scope"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_private_use_scheme_gets_a_page_when_signed_in_without_approval(
    signed_in: Browser,
) -> None:
    redirect_uri = "com.example.app:/cb"
    client = register_client(signed_in, redirect_uris=[redirect_uri])
    params = authorize_params(client, pkce_pair()[1], scope="nope")

    response = signed_in.get(authorize_path(params))

    assert app_link_query(response, redirect_uri, "com.example.app:")["error"] == (
        "invalid_scope"
    )


def test_private_use_scheme_is_redirected_once_approved(
    signed_in: Browser, server: LiveServer
) -> None:
    redirect_uri = "com.example.app:/cb"
    client = register_client(signed_in, redirect_uris=[redirect_uri])
    approve_once(signed_in, client, scope="read")
    params = authorize_params(client, pkce_pair()[1], scope="nope")

    query = redirect_query(signed_in.get(authorize_path(params)), redirect_uri)

    assert query["error"] == "invalid_scope"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_deny_on_the_consent_page_still_redirects(
    signed_in: Browser, server: LiveServer, phishing: Any
) -> None:
    params = authorize_params(phishing, pkce_pair()[1])

    query = redirect_query(consent(signed_in, params, "deny"), PHISHING)

    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_unknown_client_is_still_the_plain_page(browser: Browser) -> None:
    params = {"client_id": "lessie-nobody", "redirect_uri": PHISHING, "scope": "nope"}

    response = browser.get(authorize_path(params))

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "phish.example" not in response.text


# --- Finding 2: loopback URIs match as raw strings, only the port may vary ----

RAW_STRING_TRICKS = {
    "CRLF in path": "http://127.0.0.1:5555/c\r\nb",
    "tab in path": "http://127.0.0.1:5555/c\tb",
    "tab, no port": "http://127.0.0.1/c\tb",
    "newline, no port": "http://127.0.0.1/c\nb",
    "leading space": " http://127.0.0.1:5555/cb",
    "leading NUL": "\x00http://127.0.0.1:5555/cb",
    "leading control": "\x1fhttp://127.0.0.1/cb",
    "tab in scheme": "htt\tp://127.0.0.1:5555/cb",
    "tab in host": "http://127.0.\t0.1:5555/cb",
    "tab in port": "http://127.0.0.1:55\t55/cb",
    "scheme case": "HTTP://127.0.0.1:5555/cb",
    "full-width port": "http://127.0.0.1:\uff15\uff15\uff15\uff15/cb",
    "port with sign": "http://127.0.0.1:+5555/cb",
    "port with space": "http://127.0.0.1: 5555/cb",
    "port zero": "http://127.0.0.1:0/cb",
    "zeros only": "http://127.0.0.1:000/cb",
    "port too large": "http://127.0.0.1:65536/cb",
    "port too large, zero-padded": "http://127.0.0.1:0065536/cb",
    "two ports": "http://127.0.0.1:5555:80/cb",
    "hex port": "http://127.0.0.1:0x15b3/cb",
    "encoded path": "http://127.0.0.1:5555/%63b",
    "encoded slash": "http://127.0.0.1:5555%2Fcb",
    "encoded colon": "http://127.0.0.1%3A5555/cb",
    "encoded host": "http://%31%32%37.0.0.1:5555/cb",
    "encoded CRLF": "http://127.0.0.1:5555/c%0d%0ab",
    "encoded scheme": "http%3A//127.0.0.1:5555/cb",
    "userinfo": "http://127.0.0.1:5555@127.0.0.1/cb",
    "other loopback name": "http://localhost:5555/cb",
}


@pytest.mark.parametrize(
    "requested", RAW_STRING_TRICKS.values(), ids=RAW_STRING_TRICKS.keys()
)
def test_loopback_uri_differing_beyond_the_port_is_refused(
    signed_in: Browser, redis_client: Any, requested: Any
) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=requested)

    assert_refused_page(signed_in.get(authorize_path(params)))
    assert list(redis_client.scan_iter("oauth:code:*")) == []


def test_a_registered_localhost_is_matched_as_spelled(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=["http://localhost/cb"])
    params = authorize_params(
        client, pkce_pair()[1], redirect_uri="http://LOCALHOST:5555/cb"
    )

    assert_refused_page(signed_in.get(authorize_path(params)))


PORT_SPELLINGS = {
    "port": "http://127.0.0.1:5555/cb",
    "empty port": "http://127.0.0.1:/cb",
    "leading zeros": "http://127.0.0.1:05555/cb",
    "highest port": "http://127.0.0.1:65535/cb",
    "lowest port": "http://127.0.0.1:1/cb",
}


@pytest.mark.parametrize(
    "requested", PORT_SPELLINGS.values(), ids=PORT_SPELLINGS.keys()
)
def test_port_spellings_match_and_the_code_goes_where_asked(
    signed_in: Browser, requested: Any
) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, redirect_uri=requested)

    response = consent(signed_in, params)

    # Werkzeug writes the Location's port in its shortest spelling
    # (RFC 3986 §6.2.3); it is the port the request named.
    assert response.status_code == 302, response.text[:300]
    sent, wanted = urlsplit(response.headers["Location"]), urlsplit(requested)
    assert (sent.scheme, sent.hostname, sent.port, sent.path) == (
        wanted.scheme,
        wanted.hostname,
        wanted.port,
        wanted.path,
    )
    code = query_of(response.headers["Location"])["code"]
    assert redeem(signed_in, client, code, verifier, requested).ok


# --- Finding 3: prompt=none -----------------------------------------------------


def prompt_none(client: Any, **extra: str) -> dict[str, str]:
    return authorize_params(client, pkce_pair()[1], prompt="none", **extra)


def test_prompt_none_without_a_session_is_login_required(
    browser: Browser, server: LiveServer
) -> None:
    client = register_client(browser, redirect_uris=[LOOPBACK])
    params = prompt_none(client)

    query = redirect_query(browser.get(authorize_path(params)), LOOPBACK)

    assert query["error"] == "login_required"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_prompt_none_without_approval_is_consent_required(
    signed_in: Browser, server: LiveServer
) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    params = prompt_none(client)

    query = redirect_query(signed_in.get(authorize_path(params)), LOOPBACK)

    assert query["error"] == "consent_required"
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer


def test_prompt_none_with_a_narrower_approval_is_consent_required(
    signed_in: Browser,
) -> None:
    client = register_client(signed_in, redirect_uris=[PHISHING])
    approve_once(signed_in, client, scope="read")
    params = prompt_none(client, scope="read write")

    query = redirect_query(signed_in.get(authorize_path(params)), PHISHING)

    assert query["error"] == "consent_required"


def test_prompt_none_after_revocation_is_consent_required(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    approve_once(signed_in, client)
    revoke_approvals(signed_in)

    response = signed_in.get(authorize_path(prompt_none(client)))

    assert redirect_query(response, LOOPBACK)["error"] == "consent_required"


@pytest.mark.parametrize(
    ("sign_in", "error"),
    [(False, "login_required"), (True, "consent_required")],
    ids=["no session", "no approval"],
)
def test_prompt_none_errors_to_an_https_uri_are_a_page(
    browser: Browser, user: dict[str, str], phishing: Any, sign_in: Any, error: Any
) -> None:
    if sign_in:
        browser.login(user["email"], user["password"])
    params = prompt_none(phishing)

    response = browser.get(authorize_path(params))

    query = error_link_query(response, PHISHING, "phish.example")
    assert query["error"] == error
    assert query["state"] == params["state"]


@pytest.mark.parametrize("scope", ["read", "read write", None])
def test_prompt_none_with_a_covering_approval_issues_a_code(
    signed_in: Browser, server: LiveServer, phishing: Any, scope: str | None
) -> None:
    approve_once(signed_in, phishing)
    verifier, challenge = pkce_pair()
    params = authorize_params(phishing, challenge, prompt="none", scope=scope)

    query = redirect_query(signed_in.get(authorize_path(params)), PHISHING)

    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    assert redeem(signed_in, phishing, query["code"], verifier).ok


@pytest.mark.parametrize(
    "path_suffix",
    ["prompt=none+login", "prompt=none&prompt=none"],
    ids=["combined", "repeated"],
)
def test_prompt_none_must_stand_alone(signed_in: Browser, path_suffix: str) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    approve_once(signed_in, client)
    params = authorize_params(client, pkce_pair()[1])

    response = signed_in.get(authorize_path(params) + "&" + path_suffix)

    assert redirect_query(response, LOOPBACK)["error"] == "invalid_request"


def test_other_prompt_values_show_the_consent_page(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    approve_once(signed_in, client)
    params = authorize_params(client, pkce_pair()[1], prompt="consent")

    response = signed_in.get(authorize_path(params))

    assert response.status_code == 200
    assert "decision" in response.text


def test_deny_wins_over_prompt_none(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=[LOOPBACK])
    approve_once(signed_in, client)
    params = authorize_params(client, pkce_pair()[1])
    form = signed_in.form(signed_in.get(authorize_path(params)))

    response = signed_in.post(
        authorize_path({**params, "prompt": "none"}), data={**form, "decision": "deny"}
    )

    query = redirect_query(response, LOOPBACK)
    assert query["error"] == "access_denied"
    assert "code" not in query
