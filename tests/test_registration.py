"""Dynamic client registration, RFC 7591 (docs/reference.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import sqlalchemy
from conftest import LiveServer
from helpers import (
    LOOPBACK_REDIRECT,
    Browser,
    authorize_params,
    authorize_path,
    pkce_pair,
    register_client,
)

#: ``<prefix>-<at least 16 URL-safe characters>``.
CLIENT_ID = re.compile(r"^lessie-[A-Za-z0-9_-]{16,}$")
#: ``sk-`` then at least 256 bits: 43 base64url characters carry 258 bits.
CLIENT_SECRET = re.compile(r"^sk-[A-Za-z0-9_-]{43,}$")


def client_rows(engine: sqlalchemy.Engine) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT * FROM oauth_clients"))
        return [dict(row._mapping) for row in rows]


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert isinstance(body.get("error_description"), str)


# --- What a registration returns ----------------------------------------------


def test_defaults_are_applied(browser: Browser) -> None:
    before = int(time.time())
    client = register_client(browser, redirect_uris=[LOOPBACK_REDIRECT])

    assert CLIENT_ID.match(client["client_id"])
    assert CLIENT_SECRET.match(client["client_secret"])
    assert before - 5 <= client["client_id_issued_at"] <= time.time() + 5
    assert client["client_secret_expires_at"] == 0
    assert client["client_name"] == "MCP Client"
    assert client["redirect_uris"] == [LOOPBACK_REDIRECT]
    assert client["grant_types"] == ["authorization_code"]
    assert client["response_types"] == ["code"]
    assert client["token_endpoint_auth_method"] == "client_secret_basic"


def test_registration_answers_201_json(browser: Browser) -> None:
    response = browser.post("/register", json={"redirect_uris": [LOOPBACK_REDIRECT]})

    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")


def test_every_registration_gets_fresh_credentials(browser: Browser) -> None:
    first, second = register_client(browser), register_client(browser)

    assert first["client_id"] != second["client_id"]
    assert first["client_secret"] != second["client_secret"]


def test_requested_metadata_is_registered(browser: Browser) -> None:
    uris = ["https://app.example.com/cb", "http://localhost:3000/callback"]
    client = register_client(
        browser,
        redirect_uris=uris,
        client_name="Claude Desktop",
        token_endpoint_auth_method="client_secret_post",
        grant_types=["authorization_code"],
        response_types=["code"],
    )

    assert client["redirect_uris"] == uris
    assert client["client_name"] == "Claude Desktop"
    assert client["token_endpoint_auth_method"] == "client_secret_post"
    assert CLIENT_SECRET.match(client["client_secret"])


def test_public_client_gets_no_secret(browser: Browser) -> None:
    client = register_client(browser, token_endpoint_auth_method="none")

    assert client["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client
    assert CLIENT_ID.match(client["client_id"])


def test_client_id_prefix_is_configurable(
    make_server: Callable[..., LiveServer],
) -> None:
    client = register_client(make_server(CLIENT_ID_PREFIX="acme").browser())

    assert re.match(r"^acme-[A-Za-z0-9_-]{16,}$", client["client_id"])


def test_secret_is_stored_only_as_a_hash(
    browser: Browser, engine: sqlalchemy.Engine
) -> None:
    client = register_client(browser)

    [row] = client_rows(engine)
    assert row["client_id"] == client["client_id"]
    stored = " ".join(str(value) for value in row.values())
    assert client["client_secret"] not in stored
    assert client["client_secret"].removeprefix("sk-") not in stored


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1/callback",
        "http://127.0.0.1:33418/callback",
        "http://localhost:3000/oauth/callback",
        "http://[::1]:8080/callback",
        "https://client.example.com/cb",
        "https://client.example.com:8443/oauth/cb?tenant=a",
    ],
)
def test_loopback_http_and_https_redirect_uris_are_accepted(
    browser: Browser, redirect_uri: str
) -> None:
    client = register_client(browser, redirect_uris=[redirect_uri])

    assert client["redirect_uris"] == [redirect_uri]


# --- Lenient about the merely unknown (RFC 7591 §2) ---------------------------


def test_grant_types_not_offered_are_dropped(browser: Browser) -> None:
    client = register_client(
        browser,
        grant_types=[
            "authorization_code",
            "refresh_token",
            "implicit",
            "password",
            "urn:ietf:params:oauth:grant-type:saml2-bearer",
        ],
    )

    # docs/reference.md: refresh_token is kept beside authorization_code.
    assert client["grant_types"] == ["authorization_code", "refresh_token"]


def test_refresh_tokens_off_drops_the_refresh_grant(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(REFRESH_TOKENS="off")
    client = register_client(
        live.browser(), grant_types=["authorization_code", "refresh_token"]
    )

    assert client["grant_types"] == ["authorization_code"]


def test_unknown_fields_are_ignored(browser: Browser) -> None:
    client = register_client(
        browser,
        application_type="native",
        software_id="4NRB1-0XZABZI9E6-5SM3R",
        software_version="2.1",
        resource="https://elsewhere.example/mcp",
        logo_uri="https://client.example.com/logo.png",
        contacts=["ops@client.example.com"],
        made_up_field={"nested": [1, 2, 3]},
    )

    assert client["grant_types"] == ["authorization_code"]
    for field in ("software_id", "resource", "made_up_field", "application_type"):
        assert field not in client


# --- Refused: dangerous redirect URIs and malformed metadata -------------------

INVALID_REDIRECT_URIS = {
    "missing": {},
    "null": {"redirect_uris": None},
    "empty list": {"redirect_uris": []},
    "a string, not a list": {"redirect_uris": LOOPBACK_REDIRECT},
    "an object": {"redirect_uris": {"uri": LOOPBACK_REDIRECT}},
    "a number entry": {"redirect_uris": [42]},
    "a null entry": {"redirect_uris": [None]},
    "a list entry": {"redirect_uris": [[LOOPBACK_REDIRECT]]},
    "one good, one bad": {"redirect_uris": [LOOPBACK_REDIRECT, "http://x.example/"]},
    "http, not loopback": {"redirect_uris": ["http://client.example.com/cb"]},
    "http, loopback-looking host": {"redirect_uris": ["http://127.0.0.1.nip.io/cb"]},
    "http, localhost subdomain": {"redirect_uris": ["http://localhost.evil.example/"]},
    "javascript:": {"redirect_uris": ["javascript:alert(document.cookie)"]},
    "data:": {"redirect_uris": ["data:text/html,<script>alert(1)</script>"]},
    "file:": {"redirect_uris": ["file:///etc/passwd"]},
    "private-use scheme beside a bad one": {
        "redirect_uris": ["com.example.app:/oauth2redirect", "http://x.example/"]
    },
    "fragment": {"redirect_uris": ["https://client.example.com/cb#frag"]},
    "empty fragment": {"redirect_uris": ["https://client.example.com/cb#"]},
    "userinfo": {"redirect_uris": ["https://user:pw@client.example.com/cb"]},
    "user only": {"redirect_uris": ["https://client.example.com@evil.example/cb"]},
    "wildcard host": {"redirect_uris": ["https://*.example.com/cb"]},
    "wildcard path": {"redirect_uris": ["https://client.example.com/*"]},
    "relative path": {"redirect_uris": ["/callback"]},
    "bare word": {"redirect_uris": ["callback"]},
    "no host": {"redirect_uris": ["https:///cb"]},
    "protocol-relative": {"redirect_uris": ["//client.example.com/cb"]},
    "empty string": {"redirect_uris": [""]},
}


@pytest.mark.parametrize(
    "body", INVALID_REDIRECT_URIS.values(), ids=INVALID_REDIRECT_URIS.keys()
)
def test_bad_redirect_uris_are_refused(
    browser: Browser, engine: sqlalchemy.Engine, body: Any
) -> None:
    response = browser.post("/register", json=body)

    assert_error(response, 400, "invalid_redirect_uri")
    assert client_rows(engine) == []


INVALID_METADATA = {
    "auth method private_key_jwt": {"token_endpoint_auth_method": "private_key_jwt"},
    "auth method client_secret_jwt": {
        "token_endpoint_auth_method": "client_secret_jwt"
    },
    "auth method not a string": {"token_endpoint_auth_method": 7},
    "auth method empty": {"token_endpoint_auth_method": ""},
    "grant types without authorization_code": {"grant_types": ["refresh_token"]},
    "grant types empty": {"grant_types": []},
    "grant types not a list": {"grant_types": "authorization_code"},
    "grant types with a non-string": {"grant_types": ["authorization_code", 1]},
    "response types without code": {"response_types": ["token"]},
    "client name not a string": {"client_name": ["a", "b"]},
}


@pytest.mark.parametrize(
    "fields", INVALID_METADATA.values(), ids=INVALID_METADATA.keys()
)
def test_bad_metadata_is_refused(
    browser: Browser, engine: sqlalchemy.Engine, fields: Any
) -> None:
    response = browser.post(
        "/register", json={"redirect_uris": [LOOPBACK_REDIRECT], **fields}
    )

    assert_error(response, 400, "invalid_client_metadata")
    assert client_rows(engine) == []


NOT_A_JSON_OBJECT = {
    "JSON array": ("application/json", '[{"redirect_uris": ["http://127.0.0.1/cb"]}]'),
    "JSON string": ("application/json", '"http://127.0.0.1/callback"'),
    "JSON null": ("application/json", "null"),
    "JSON number": ("application/json", "1"),
    "invalid JSON": ("application/json", '{"redirect_uris": ['),
    "empty body": ("application/json", ""),
    "form-encoded": (
        "application/x-www-form-urlencoded",
        "redirect_uris=http%3A%2F%2F127.0.0.1%2Fcallback",
    ),
    "plain text": ("text/plain", "redirect_uris"),
}


@pytest.mark.parametrize(
    ("content_type", "body"), NOT_A_JSON_OBJECT.values(), ids=NOT_A_JSON_OBJECT.keys()
)
def test_body_that_is_not_a_json_object_is_refused(
    browser: Browser, engine: sqlalchemy.Engine, content_type: Any, body: Any
) -> None:
    response = browser.post(
        "/register", data=body.encode(), headers={"Content-Type": content_type}
    )

    assert_error(response, 400, "invalid_client_metadata")
    assert client_rows(engine) == []


# --- Limits: rate per address, caps per address and in all --------------------


def register_from(live: Any, forwarded_for: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return live.browser().post(
        "/register", json={"redirect_uris": [LOOPBACK_REDIRECT]}, headers=headers
    )


def assert_rate_limited(response: Any) -> None:
    assert_error(response, 429, "too_many_requests")
    assert int(response.headers["Retry-After"]) > 0


def test_registrations_per_address_are_rate_limited(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="2 per hour")

    assert register_from(live).status_code == 201
    assert register_from(live).status_code == 201
    assert_rate_limited(register_from(live))


def test_spoofed_forwarded_for_does_not_escape_the_rate_limit(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="2 per hour", TRUSTED_PROXY_HOPS="0")

    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.2").status_code == 201
    assert_rate_limited(register_from(live, "203.0.113.3"))


def test_trusted_proxy_addresses_are_counted_separately(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="2 per hour", TRUSTED_PROXY_HOPS="1")

    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.1").status_code == 201
    assert_rate_limited(register_from(live, "203.0.113.1"))
    assert register_from(live, "203.0.113.2").status_code == 201


def test_rate_limit_is_shared_by_every_instance(
    make_server: Callable[..., LiveServer],
) -> None:
    first = make_server(REGISTRATION_RATE_LIMIT="2 per hour")
    second = make_server(REGISTRATION_RATE_LIMIT="2 per hour")

    assert register_from(first).status_code == 201
    assert register_from(second).status_code == 201
    assert_rate_limited(register_from(first))


def test_live_clients_per_address_are_capped(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(MAX_CLIENTS_PER_ADDRESS="2")

    assert register_from(live).status_code == 201
    assert register_from(live).status_code == 201
    assert_error(register_from(live), 403, "client_limit_exceeded")
    assert len(client_rows(engine)) == 2


def test_spoofed_forwarded_for_does_not_escape_the_address_cap(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(MAX_CLIENTS_PER_ADDRESS="2", TRUSTED_PROXY_HOPS="0")

    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.2").status_code == 201
    assert_error(register_from(live, "203.0.113.3"), 403, "client_limit_exceeded")


def test_address_cap_counts_trusted_proxy_addresses_separately(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(MAX_CLIENTS_PER_ADDRESS="2", TRUSTED_PROXY_HOPS="1")

    assert register_from(live, "203.0.113.1").status_code == 201
    assert register_from(live, "203.0.113.1").status_code == 201
    assert_error(register_from(live, "203.0.113.1"), 403, "client_limit_exceeded")
    assert register_from(live, "203.0.113.2").status_code == 201


def test_live_clients_are_capped_in_all(
    make_server: Callable[..., LiveServer], engine: sqlalchemy.Engine
) -> None:
    live = make_server(MAX_CLIENTS="3", TRUSTED_PROXY_HOPS="1")

    for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        assert register_from(live, address).status_code == 201
    assert_error(register_from(live, "203.0.113.4"), 403, "client_limit_exceeded")
    assert len(client_rows(engine)) == 3


def test_an_ipv6_network_counts_as_one_address(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="2 per hour", TRUSTED_PROXY_HOPS="1")

    assert register_from(live, "2001:db8:1:2::1").status_code == 201
    assert register_from(live, "2001:db8:1:2::ffff").status_code == 201
    assert_rate_limited(register_from(live, "2001:db8:1:2:abcd::9"))
    assert register_from(live, "2001:db8:1:3::1").status_code == 201


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["https://a.example/\ud800"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://exämple.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://a.example/c\u00a0b"]}, "invalid_redirect_uri"),
        ({"client_name": "x\ud800"}, "invalid_client_metadata"),
        ({"client_name": "Goo\u202eelgoog"}, "invalid_client_metadata"),
        ({"client_name": "tab\u0085name"}, "invalid_client_metadata"),
    ],
)
def test_unicode_tricks_are_refused(
    browser: Browser, metadata: Any, error: Any
) -> None:
    body = {"redirect_uris": ["https://a.example/cb"], **metadata}
    response = browser.post("/register", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


# --- client_name: what the consent page shows must be what it looks like -----

HIDDEN_OR_LOOKALIKE_NAMES = {
    "line separator": "Claude\u2028Desktop",
    "paragraph separator": "Claude\u2029Desktop",
    "zero-width space": "Cla\u200bude",
    "soft hyphen": "Cla\u00adude",
    "private use": "Claude\ue000",
    "unassigned": "Claude\u0378",
    "Hangul filler": "\u3164",
    "Hangul choseong filler": "Claude\u115f",
    "Hangul jungseong filler": "Claude\u1160",
    "halfwidth Hangul filler": "\uffa0Claude",
    "Braille blank": "\u2800",
    "combining grapheme joiner": "Cla\u034fude",
    "variation selector": "Claude\ufe0f",
    "Latin with a Cyrillic a": "Cl\u0430ude",
    "Latin with a Greek omicron": "G\u03bfogle Drive",
    "Cyrillic with a Latin o": "\u041a\u043bo\u0434",
    "Latin with a Cherokee A": "\u13aaPI Client",
    "Latin and Cyrillic joined by a hyphen": "Claude-\u0430pp",
    # Combining marks drawn across letters, or piled up over the page.
    "long solidus overlay": "Claude\u0338",
    "short solidus overlay": "Cl\u0337aude",
    "stroke overlay": "C\u0335laude",
    "long stroke overlay": "Claude\u0336 Desktop",
    "tilde overlay": "Claud\u0334e",
    "long vertical line overlay": "Claude\u20d2",
    "reverse solidus overlay": "Claude\u20e5",
    "enclosing circle backslash": "Claude\u20e0",
    "enclosing circle": "Claude\u20dd",
    "enclosing keycap": "Claude\u20e3",
    "overlay after a full-width letter": "\uff23\uff2c\uff21\uff35\uff24\uff25\u0338",
    "overlay after a no-break space": "Claude\u00a0\u0338",
    "a mark with no letter": "\u0301Claude",
    "a mark alone after spaces": "Claude \u0301",
    "piled-up marks": "Cla" + "\u0300\u0301\u0302\u0303\u0304\u0306" + "ude",
    "Zalgo": "C" + "\u030d\u030e\u0304\u0305\u033f\u0311\u0306" * 3 + "laude",
}


@pytest.mark.parametrize(
    "name", HIDDEN_OR_LOOKALIKE_NAMES.values(), ids=HIDDEN_OR_LOOKALIKE_NAMES.keys()
)
def test_hidden_or_lookalike_client_names_are_refused(
    browser: Browser, engine: sqlalchemy.Engine, name: Any
) -> None:
    response = browser.post(
        "/register", json={"redirect_uris": [LOOPBACK_REDIRECT], "client_name": name}
    )

    assert_error(response, 400, "invalid_client_metadata")
    assert client_rows(engine) == []


#: Names that render as another once spacing and width are set aside, and
#: the one name each is stored, shown and judged as.
NORMALISED_NAMES = {
    "full-width letters": ("\uff23\uff2c\uff21\uff35\uff24\uff25", "CLAUDE"),
    "full-width words": (
        "\uff23\uff4c\uff41\uff55\uff44\uff45\u3000\uff24\uff45\uff53\uff4b"
        "\uff54\uff4f\uff50",
        "Claude Desktop",
    ),
    "mathematical bold": (
        "\U0001d402\U0001d425\U0001d41a\U0001d42e\U0001d41d\U0001d41e",
        "Claude",
    ),
    "trade mark sign": ("Claude\u2122", "ClaudeTM"),
    "no-break spaces": ("Claude\u00a0\u00a0\u00a0Desktop", "Claude Desktop"),
    "ideographic spaces": ("\u3000Claude\u3000\u3000Desktop\u3000", "Claude Desktop"),
    "figure space": ("Claude\u2007Desktop", "Claude Desktop"),
    "narrow no-break space": ("Claude\u202fDesktop", "Claude Desktop"),
    "em spaces": ("Claude\u2003\u2003Desktop", "Claude Desktop"),
    "Ogham space mark": ("Claude\u1680Desktop", "Claude Desktop"),
    "mixed spaces": ("Claude \u00a0\u2009\u3000 Desktop", "Claude Desktop"),
    "leading and trailing spaces": ("   Claude Desktop   ", "Claude Desktop"),
    "runs of plain spaces": ("Claude     Desktop", "Claude Desktop"),
    "trailing no-break space": ("Claude\u00a0", "Claude"),
    "half-width katakana": (
        "\uff78\uff9b\uff70\uff84\uff9e",
        "\u30af\u30ed\u30fc\u30c9",
    ),
    "decomposed accent": ("Cafe\u0301 Helper", "Caf\u00e9 Helper"),
}


@pytest.mark.parametrize(
    ("sent", "stored"), NORMALISED_NAMES.values(), ids=NORMALISED_NAMES.keys()
)
def test_client_names_are_normalised_before_they_are_judged(
    browser: Browser, engine: sqlalchemy.Engine, sent: Any, stored: Any
) -> None:
    client = register_client(browser, client_name=sent)

    assert client["client_name"] == stored
    with engine.connect() as connection:
        [row] = connection.execute(
            sqlalchemy.text("SELECT client_name FROM oauth_clients")
        )
    assert row.client_name == stored


def test_a_name_of_spaces_alone_is_the_default(browser: Browser) -> None:
    client = register_client(browser, client_name="\u3000\u00a0\u2007")

    assert client["client_name"] == "MCP Client"


@pytest.mark.parametrize(
    "name",
    [
        "Claude Desktop",
        "Caf\u00e9 Helper",
        "\u041a\u043b\u043e\u0434",
        "\u514b\u52b3\u5fb7",
        "\u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8",
        "\ud55c\uad6d\uc5b4 \uc571",
        "Cursor \u4e2d\u6587\u7248",
        "Claude \u0434\u043b\u044f VS Code",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
        "Bob's app 2.0 \U0001f680",
        "\u514b\u52b3\u5fb7\u52a9\u624b",
        "Visual Studio Code",
        "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",
        "\u0f66\u0f92\u0fb2\u0f74\u0f56",
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u0910\u092a",
        "Ti\u1ebfng Vi\u1ec7t",
    ],
)
def test_names_in_one_script_per_word_are_accepted(browser: Browser, name: str) -> None:
    client = register_client(browser, client_name=name)

    assert client["client_name"] == name


# --- scope: never wider than asked --------------------------------------------


@pytest.mark.parametrize(
    ("fields", "registered"),
    [
        # None asked for: no limit of the client's own (each resource's).
        ({}, ""),
        ({"scope": None}, ""),
        ({"scope": ""}, ""),
        ({"scope": "read"}, "read"),
        ({"scope": "write read"}, "read write"),
        ({"scope": "read admin"}, "read"),
        ({"scope": "offline_access write"}, "write"),
    ],
)
def test_known_scopes_asked_for_are_registered(
    browser: Browser, engine: sqlalchemy.Engine, fields: Any, registered: Any
) -> None:
    register_client(browser, **fields)

    assert [row["scope"] for row in client_rows(engine)] == [registered]


@pytest.mark.parametrize("scope", ["admin", "admin openid", ["read"], 7], ids=str)
def test_a_scope_with_nothing_known_is_refused(
    browser: Browser, engine: sqlalchemy.Engine, scope: Any
) -> None:
    response = browser.post(
        "/register", json={"redirect_uris": [LOOPBACK_REDIRECT], "scope": scope}
    )

    assert_error(response, 400, "invalid_client_metadata")
    assert client_rows(engine) == []


def test_the_consent_page_shows_the_normalised_name(signed_in: Browser) -> None:
    name = "\uff23\uff2c\uff21\uff35\uff24\uff25\u3000\u00a0\u00a0Desktop"
    client = register_client(signed_in, client_name=name)
    params = authorize_params(client, pkce_pair()[1])

    page = signed_in.get(authorize_path(params))

    assert "CLAUDE Desktop wants to access your account" in page.text
    assert "\uff23" not in page.text
    assert "\u00a0" not in page.text
