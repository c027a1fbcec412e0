"""Hostile use: crafted input, racing and replayed codes, open redirects, XSS."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from bs4 import BeautifulSoup
from conftest import LiveServer
from helpers import (
    LOOPBACK_REDIRECT,
    Browser,
    authorize_params,
    authorize_path,
    consent,
    get_code,
    pkce_pair,
    query_of,
    redeem,
    register_client,
)

HTTPS_REDIRECT = "https://client.example.com/cb"
EVIL = "https://evil.example/cb"


@pytest.fixture
def client(browser: Browser) -> dict[str, Any]:
    return register_client(browser, redirect_uris=[LOOPBACK_REDIRECT])


def assert_error_page(response: Any) -> None:
    """A 400 page for people, never a redirect anywhere."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")


def assert_no_crash(response: Any) -> None:
    assert response.status_code < 500, response.text[:500]
    assert "Traceback" not in response.text


# --- Open redirects at /authorize ---------------------------------------------

#: Parameter changes to a valid request for a client registered with
#: ``http://127.0.0.1/callback``; none of them may lead to a redirect.
OPEN_REDIRECTS = {
    "unknown client": {"client_id": "lessie-doesnotexist00000", "redirect_uri": EVIL},
    "unknown client, registered uri": {"client_id": "lessie-doesnotexist00000"},
    "no client_id": {"client_id": None, "redirect_uri": EVIL},
    "oversized client_id": {"client_id": "x" * 5000, "redirect_uri": EVIL},
    "unregistered https": {"redirect_uri": EVIL},
    "loopback-looking host": {"redirect_uri": "http://127.0.0.1.evil.example/callback"},
    "userinfo": {"redirect_uri": "http://127.0.0.1@evil.example/callback"},
    "userinfo with port": {"redirect_uri": "http://127.0.0.1:80@evil.example/callback"},
    "backslash": {"redirect_uri": "http://evil.example\\@127.0.0.1/callback"},
    "protocol-relative": {"redirect_uri": "//evil.example/callback"},
    "javascript:": {"redirect_uri": "javascript:alert(document.domain)"},
    "javascript: disguised": {
        "redirect_uri": "javascript://127.0.0.1/callback%0aalert(1)"
    },
    "data:": {"redirect_uri": "data:text/html,<script>alert(1)</script>"},
    "dot segments": {"redirect_uri": "http://127.0.0.1/callback/../../evil"},
    "fragment": {"redirect_uri": "http://127.0.0.1/callback#@evil.example"},
    "bad response_type, evil uri": {"response_type": "token", "redirect_uri": EVIL},
    "no response_type, evil uri": {"response_type": None, "redirect_uri": EVIL},
    "unknown client, bad response_type": {
        "client_id": "lessie-doesnotexist00000",
        "response_type": "token",
        "redirect_uri": EVIL,
    },
    "no PKCE, evil uri": {"code_challenge": None, "redirect_uri": EVIL},
    "plain PKCE, evil uri": {"code_challenge_method": "plain", "redirect_uri": EVIL},
    "bad scope, evil uri": {"scope": "admin", "redirect_uri": EVIL},
    "bad resource, evil uri": {"resource": "https://x.example", "redirect_uri": EVIL},
}


@pytest.mark.parametrize("changes", OPEN_REDIRECTS.values(), ids=OPEN_REDIRECTS.keys())
def test_authorize_never_redirects_to_an_unvalidated_uri(
    browser: Browser, client: Any, changes: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], **changes)

    assert_error_page(browser.get(authorize_path(params)))


HTTPS_OPEN_REDIRECTS = [
    "https://client.example.com:8443/cb",
    "https://client.example.com.evil.example/cb",
    "https://evil.example/cb",
    "http://client.example.com/cb",
    "https://evil.example/client.example.com/cb",
]


@pytest.mark.parametrize("redirect_uri", HTTPS_OPEN_REDIRECTS)
def test_https_client_gets_no_redirect_to_another_host_or_port(
    browser: Browser, redirect_uri: Any
) -> None:
    client = register_client(browser, redirect_uris=[HTTPS_REDIRECT])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=redirect_uri)

    assert_error_page(browser.get(authorize_path(params)))


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uri": EVIL},
        {"redirect_uri": EVIL, "response_type": "token"},
        {"redirect_uri": EVIL, "scope": "admin"},
    ],
    ids=["evil uri", "evil uri, bad response_type", "evil uri, bad scope"],
)
def test_signed_in_person_gets_no_redirect_to_an_unvalidated_uri(
    signed_in: Browser, client: Any, changes: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], **changes)

    assert_error_page(signed_in.get(authorize_path(params)))


def test_approving_with_a_swapped_redirect_uri_issues_nothing(
    signed_in: Browser, client: Any, redis_client: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1])
    page = signed_in.get(authorize_path(params))
    swapped = {**params, "redirect_uri": EVIL}

    response = signed_in.post(
        authorize_path(swapped), data={**signed_in.form(page), "decision": "approve"}
    )

    assert_error_page(response)
    assert list(redis_client.scan_iter("oauth:code:*")) == []


# --- Open redirects at /login -------------------------------------------------

HOSTILE_NEXT = [
    "//evil.example",
    "///evil.example",
    "https://evil.example",
    "http://evil.example/authorize",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "\t//evil.example",
    " //evil.example",
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https:evil.example",
    "evil.example",
    "/%0d%0aLocation:%20https://evil.example",
    "/\r\nLocation: https://evil.example",
]


def assert_stays_on_issuer(location: str, issuer: str) -> None:
    assert location.startswith(issuer + "/"), location
    rest = location[len(issuer) :]
    assert not rest.startswith("//"), location
    assert "\\" not in rest, location
    assert not any(ord(c) < 0x20 for c in location), location
    assert urlsplit(location).netloc == urlsplit(issuer).netloc


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_login_next_never_leaves_the_issuer(
    browser: Browser, server: LiveServer, user: dict[str, str], target: Any
) -> None:
    response = browser.login(user["email"], user["password"], next_path=target)

    assert response.status_code == 302
    assert_stays_on_issuer(response.headers["Location"], server.issuer)


def test_signed_in_login_page_next_never_leaves_the_issuer(
    signed_in: Browser, server: LiveServer
) -> None:
    for target in HOSTILE_NEXT:
        response = signed_in.get("/login", params={"next": target})
        assert response.status_code == 302, target
        assert_stays_on_issuer(response.headers["Location"], server.issuer)


# --- Escaping: a client picks its own name ------------------------------------

HOSTILE_NAME = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def test_hostile_client_name_is_escaped_on_the_consent_page(signed_in: Browser) -> None:
    client = register_client(signed_in, client_name=HOSTILE_NAME)
    params = authorize_params(client, pkce_pair()[1])

    response = signed_in.get(authorize_path(params))

    assert response.status_code == 200
    assert HOSTILE_NAME not in response.text
    assert "&lt;script&gt;" in response.text
    soup = BeautifulSoup(response.text, "html.parser")
    assert not [s for s in soup.find_all("script") if "pwned" in s.get_text()]
    assert soup.find("img", attrs={"onerror": True}) is None
    assert HOSTILE_NAME in soup.get_text()


def test_hostile_state_is_echoed_exactly_and_escaped(
    signed_in: Browser, client: Any
) -> None:
    state = '"><script>alert(1)</script>&x=é'
    params = authorize_params(client, pkce_pair()[1], state=state)

    page = signed_in.get(authorize_path(params))
    response = consent(signed_in, params)

    assert "<script>alert(1)</script>" not in page.text
    assert query_of(response.headers["Location"])["state"] == state


# --- Crafted input never makes a 500 ------------------------------------------

CRAFTED_AUTHORIZE = {
    "quote in redirect_uri": {"redirect_uri": 'http://127.0.0.1/call"back'},
    "backslash in redirect_uri": {"redirect_uri": "http://127.0.0.1\\callback"},
    "NUL in redirect_uri": {"redirect_uri": "http://127.0.0.1/callback\x00"},
    "CRLF in redirect_uri": {"redirect_uri": "http://127.0.0.1/callback\r\nX: y"},
    "tab in redirect_uri": {"redirect_uri": "http://127.0.0.1/call\tback"},
    "non-ASCII redirect_uri": {"redirect_uri": "http://127.0.0.1/cällback"},
    "non-ASCII host": {"redirect_uri": "https://exämple.com/callback"},
    "port out of range": {"redirect_uri": "http://127.0.0.1:99999/callback"},
    "negative port": {"redirect_uri": "http://127.0.0.1:-1/callback"},
    "port zero": {"redirect_uri": "http://127.0.0.1:0/callback"},
    "non-numeric port": {"redirect_uri": "http://127.0.0.1:abc/callback"},
    "broken IPv6": {"redirect_uri": "http://[::1/callback"},
    "very long redirect_uri": {"redirect_uri": LOOPBACK_REDIRECT + "x" * 6000},
    "quoted response_type": {"response_type": 'code"'},
    "HTML response_type": {"response_type": '"><script>alert(1)</script>'},
    "NUL response_type": {"response_type": "code\x00"},
    "quoted client_id": {"client_id": 'lessie-"abc'},
    "non-ASCII client_id": {"client_id": "lessie-ünïcødé"},
    "NUL client_id": {"client_id": "lessie-\x00"},
    "quoted scope": {"scope": 'read"'},
    "control chars in scope": {"scope": "read\x01write"},
    "very long scope": {"scope": "read " * 1500},
    "quoted code_challenge": {"code_challenge": 'abc"def'},
    "very long code_challenge": {"code_challenge": "a" * 6000},
    "quoted method": {"code_challenge_method": 'S256"'},
    "very long state": {"state": "s" * 6000},
    "control chars in state": {"state": "a\x00b\x1bc"},
    "quoted resource": {"resource": 'https://x"y'},
}


@pytest.mark.parametrize(
    "changes", CRAFTED_AUTHORIZE.values(), ids=CRAFTED_AUTHORIZE.keys()
)
def test_crafted_authorization_requests_never_crash(
    browser: Browser, server: LiveServer, client: Any, changes: Any
) -> None:
    params = authorize_params(client, pkce_pair()[1], **changes)

    response = browser.get(authorize_path(params))

    assert_no_crash(response)
    location = response.headers.get("Location")
    if location is not None:
        assert location.startswith(
            (server.issuer + "/login?", LOOPBACK_REDIRECT + "?")
        ), location


def test_repeated_parameters_never_crash(browser: Browser, client: Any) -> None:
    params = list(authorize_params(client, pkce_pair()[1]).items())
    params += [("client_id", "lessie-other"), ("redirect_uri", EVIL)]

    response = browser.get("/authorize?" + urlencode(params))

    assert_no_crash(response)
    assert "evil.example" not in response.headers.get("Location", "")


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


CRAFTED_BASIC = {
    "not base64": "Basic !!!not-base64!!!",
    "truncated base64": "Basic YWJj=",
    "not UTF-8": basic(b"\xff\xfe:\xfd\xfc"),
    "no colon": basic(b"lessie-client"),
    "empty": "Basic ",
    "scheme only": "Basic",
    "other scheme": "Bearer abc.def.ghi",
    "NUL bytes": basic(b"\x00:\x00"),
    "bad percent-escapes": basic(b"%ZZ%:%00%"),
    "non-ASCII": basic("lessie-ü:sk-ü".encode()),
    "very long": basic(b"a" * 5000 + b":" + b"b" * 5000),
}


@pytest.mark.parametrize(
    "authorization", CRAFTED_BASIC.values(), ids=CRAFTED_BASIC.keys()
)
def test_crafted_basic_headers_are_invalid_client(
    browser: Browser, authorization: Any
) -> None:
    response = browser.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": LOOPBACK_REDIRECT,
            "code_verifier": "v" * 43,
        },
        headers={"Authorization": authorization},
    )

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


CRAFTED_TOKEN_FORMS = {
    "NUL in code": {"code": "abc\x00def"},
    "non-ASCII code": {"code": "cödé"},
    "very long code": {"code": "c" * 20000},
    "quoted grant_type": {"grant_type": 'authorization_code"'},
    "NUL grant_type": {"grant_type": "\x00"},
    "quoted redirect_uri": {"redirect_uri": 'http://127.0.0.1/"'},
    "control chars in redirect_uri": {"redirect_uri": "http://127.0.0.1/\r\n"},
    "non-ASCII verifier": {"code_verifier": "vérifier" * 8},
    "quoted resource": {"resource": '"'},
}


@pytest.mark.parametrize(
    "changes", CRAFTED_TOKEN_FORMS.values(), ids=CRAFTED_TOKEN_FORMS.keys()
)
def test_crafted_token_requests_are_clean_400s(
    browser: Browser, client: Any, changes: Any
) -> None:
    data = {
        "grant_type": "authorization_code",
        "code": "never-issued",
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_verifier": "v" * 43,
        **changes,
    }

    response = browser.post(
        "/token", data=data, auth=(client["client_id"], client["client_secret"])
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"grant_type": "authorization_code"}'),
        ("application/x-www-form-urlencoded", b"grant_type=%ZZ&code=%"),
        ("application/x-www-form-urlencoded", b"\xff\xfe\xfd=\xfc"),
        ("application/x-www-form-urlencoded", b"code=" + b"c" * 70000),
        ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
    ],
    ids=["JSON", "bad escapes", "not UTF-8", "over 64 KiB", "broken multipart"],
)
def test_malformed_token_bodies_are_clean_errors(
    browser: Browser, client: Any, content_type: Any, body: Any
) -> None:
    response = browser.post(
        "/token",
        data=body,
        headers={"Content-Type": content_type},
        auth=(client["client_id"], client["client_secret"]),
    )

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


CRAFTED_REGISTRATIONS = {
    "quote in redirect_uri": {"redirect_uris": ['https://client.example.com/"x']},
    "backslash in redirect_uri": {"redirect_uris": ["https://client.example.com\\x"]},
    "NUL in redirect_uri": {"redirect_uris": ["https://client.example.com/\x00"]},
    "CRLF in redirect_uri": {"redirect_uris": ["https://client.example.com/\r\nX: y"]},
    "non-ASCII path": {"redirect_uris": ["https://client.example.com/cällback"]},
    "non-ASCII host": {"redirect_uris": ["https://exämple.com/callback"]},
    "port out of range": {"redirect_uris": ["https://client.example.com:99999/"]},
    "broken IPv6": {"redirect_uris": ["http://[::1/callback"]},
    "very long redirect_uri": {"redirect_uris": [HTTPS_REDIRECT + "x" * 10000]},
    "thousand redirect_uris": {
        "redirect_uris": [f"{HTTPS_REDIRECT}/{n}" for n in range(1000)]
    },
    "NUL in client_name": {"client_name": "evil\x00name"},
    "very long client_name": {"client_name": "n" * 5000},
    "deeply nested field": {"software_statement": [[[[[[[[[[[[1]]]]]]]]]]]]},
    "huge number": {"client_id_issued_at": 10**400},
}


@pytest.mark.parametrize(
    "changes", CRAFTED_REGISTRATIONS.values(), ids=CRAFTED_REGISTRATIONS.keys()
)
def test_crafted_registrations_never_crash(
    browser: Browser, server: LiveServer, changes: Any
) -> None:
    response = browser.post(
        "/register", json={"redirect_uris": [LOOPBACK_REDIRECT], **changes}
    )

    assert_no_crash(response)
    assert response.status_code in (201, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"] in (
            "invalid_redirect_uri",
            "invalid_client_metadata",
        )
        return
    # Whatever was accepted must also survive an authorization request.
    client = response.json()
    for uri in client["redirect_uris"]:
        params = authorize_params(client, pkce_pair()[1], redirect_uri=uri)
        assert_no_crash(browser.get(authorize_path(params)))


def test_oversized_registration_body_is_refused(browser: Browser) -> None:
    body = {"redirect_uris": [LOOPBACK_REDIRECT], "padding": "p" * 100_000}

    response = browser.post("/register", json=body)

    assert response.status_code in (400, 413)
    assert response.json()["error"]


def test_deeply_nested_registration_body_never_crashes(browser: Browser) -> None:
    body = "[" * 50_000 + "]" * 50_000

    response = browser.post(
        "/register", data=body, headers={"Content-Type": "application/json"}
    )

    assert_no_crash(response)
    assert 400 <= response.status_code < 500


CRAFTED_LOGINS = {
    "NUL in email": ("alice\x00@example.com", "password-123"),
    "NUL in password": ("alice@example.com", "pass\x00word"),
    "control chars in email": ("\x1b[31malice@example.com", "password-123"),
    "non-ASCII email": ("ålice@exämple.com", "pässwörd-123"),
    "very long email": ("a" * 20_000 + "@example.com", "password-123"),
    "very long password": ("alice@example.com", "p" * 20_000),
    "empty": ("", ""),
}


@pytest.mark.parametrize(
    ("email", "password"), CRAFTED_LOGINS.values(), ids=CRAFTED_LOGINS.keys()
)
def test_crafted_login_forms_are_ordinary_failures(
    browser: Browser, user: dict[str, str], email: Any, password: Any
) -> None:
    page = browser.get("/login")
    form = {**browser.form(page), "email": email, "password": password}

    response = browser.post("/login", data=form)

    assert_no_crash(response)
    assert 400 <= response.status_code < 500
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "client_id", ["\x00", "lessie-\x00abc", "lessie-ü", 'lessie-"', "x" * 5000]
)
def test_crafted_client_ids_in_the_token_form_are_invalid_client(
    browser: Browser, client_id: Any
) -> None:
    data = {
        "grant_type": "authorization_code",
        "code": "x",
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_verifier": "v" * 43,
        "client_id": client_id,
    }

    response = browser.post("/token", data=data)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


# --- Racing and replayed codes ------------------------------------------------


def test_twenty_concurrent_redemptions_of_one_code_succeed_once(
    server: LiveServer, browser: Browser, user: dict[str, str], client: Any
) -> None:
    code, verifier, params = get_code(browser, client, user)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": verifier,
    }
    start = threading.Barrier(20, timeout=20)

    def redeem_once(_: int) -> requests.Response:
        with requests.Session() as session:
            start.wait()
            return session.post(
                server.url + "/token",
                data=data,
                auth=(client["client_id"], client["client_secret"]),
                timeout=30,
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(redeem_once, range(20)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * 19
    errors = {r.json()["error"] for r in responses if r.status_code == 400}
    assert errors == {"invalid_grant"}


def call_mcp(browser: Browser, token: str) -> requests.Response:
    return browser.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
        },
    )


def test_replayed_code_is_refused_and_revokes_the_first_token(
    browser: Browser, user: dict[str, str], client: Any
) -> None:
    code, verifier, _ = get_code(browser, client, user)
    first = redeem(browser, client, code, verifier)
    assert first.status_code == 200, first.text
    token = first.json()["access_token"]
    assert call_mcp(browser, token).status_code == 200

    replay = redeem(browser, client, code, verifier)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    refused = call_mcp(browser, token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
