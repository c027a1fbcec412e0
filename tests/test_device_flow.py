"""The device authorization grant, RFC 8628 (docs/reference.md).

Everything over HTTP against live servers, as a device, a person's browser
and a second instance see it: ``/device_authorization``, the ``/device``
page, polling at ``/token``, registration and discovery. Polls respect the
5 s interval: only the ``slow_down`` test waits for it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from bs4 import Tag
from conftest import LiveServer, make_user
from helpers import (
    Browser,
    attribute,
    claims_of,
    client_post,
    device_lookup,
    refresh,
    register_client,
    register_resource,
    revoke_from_account_page,
    select_one,
    soup,
    token_request,
    until,
    whoami,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
#: A code of the right alphabet and shape that no device was given: only the
#: lookup can refuse it.
RANDOM_CODE = "BCDF-GHJK"
#: What VS Code sends to /register.
VSCODE = {
    "client_name": "Visual Studio Code",
    "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
    "token_endpoint_auth_method": "none",
    "redirect_uris": ["http://127.0.0.1:33418", "https://vscode.dev/redirect"],
}
#: A resource of the team's, besides the built-in /mcp.
TOOLS = "https://tools.example.com/github"
CJK = re.compile(r"[\u4e00-\u9fff]")


# --- The device's side --------------------------------------------------------


def register_device_client(browser: Browser, **metadata: Any) -> dict[str, Any]:
    """A public client with the device grant (and refresh), no redirect URIs."""
    body = {
        "client_name": "Terminal Agent",
        "grant_types": [DEVICE_GRANT, "refresh_token"],
        "token_endpoint_auth_method": "none",
        **metadata,
    }
    response = browser.post("/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def device_authorization(
    browser: Browser, client: dict[str, Any], method: str | None = None, **params: str
) -> requests.Response:
    return client_post(browser, "/device_authorization", client, params, method)


def start(browser: Browser, client: dict[str, Any], **params: str) -> dict[str, Any]:
    """Begin a device flow; the 200 answer."""
    response = device_authorization(browser, client, **params)
    assert response.status_code == 200, response.text
    return response.json()


def poll(browser: Browser, client: dict[str, Any], device_code: str) -> Any:
    data = {"grant_type": DEVICE_GRANT, "device_code": device_code}
    return token_request(browser, client, data)


def error_of(response: requests.Response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["error"]


def device_key(device_code: str) -> str:
    return "oauth:device:" + hashlib.sha256(device_code.encode()).hexdigest()


# --- The person's side ----------------------------------------------------------


def enter(browser: Browser, user_code: str) -> requests.Response:
    """Open the link the device shows and confirm the code it fills in."""
    return device_lookup(browser, user_code)


def hidden_fields(page: requests.Response, form: str) -> dict[str, str]:
    fields = select_one(page, form).select("input[type=hidden]")
    return {attribute(f, "name"): attribute(f, "value", "") for f in fields}


def decide(browser: Browser, user_code: str, decision: str = "approve") -> Any:
    """Open the consent page for ``user_code`` and press a button."""
    page = enter(browser, user_code)
    assert page.status_code == 200, page.text[:500]
    data = {**hidden_fields(page, "#device-consent-form"), "decision": decision}
    return browser.post("/device", data=data)


def code_error(response: requests.Response) -> str:
    """The one refusal every code that is not valid gets."""
    assert response.status_code == 400, (response.status_code, response.text[:500])
    select_one(response, "form#device-code-form")
    return select_one(response, "#code-error").get_text(" ", strip=True)


def assert_page_headers(response: requests.Response) -> None:
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "no-store" in response.headers["Cache-Control"]


def posts_to(page: requests.Response, form: Tag) -> str:
    """The path ``form`` on ``page`` is sent to (an empty action: the page's)."""
    return urlsplit(urljoin(page.url, attribute(form, "action"))).path


def scopes_on(page: requests.Response) -> list[str]:
    return [
        select_one(item, "strong").get_text(strip=True)
        for item in soup(page).select("ul.scopes li")
    ]


def signed_in_as(live: LiveServer, person: dict[str, str], **headers: str) -> Browser:
    browser = live.browser()
    browser.headers.update(headers)
    assert browser.login(person["email"], person["password"]).status_code == 302
    return browser


@pytest.fixture
def client(browser: Browser) -> dict[str, Any]:
    return register_device_client(browser)


@pytest.fixture
def flow(browser: Browser, client: dict[str, Any]) -> dict[str, Any]:
    """A device flow begun by ``client`` for the built-in resource."""
    return start(browser, client)


# --- POST /device_authorization --------------------------------------------------


def test_the_device_is_given_codes_and_where_to_send_the_person(
    server: LiveServer, browser: Browser, client: dict, redis_client: Any
) -> None:
    response = device_authorization(browser, client)
    second = start(browser, client)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "no-store" in response.headers["Cache-Control"]
    body = response.json()
    assert set(body) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert USER_CODE.match(body["user_code"]), body["user_code"]
    assert len(body["device_code"]) >= 32
    assert body["verification_uri"] == server.issuer + "/device"
    assert body["verification_uri_complete"] == (
        f"{server.issuer}/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600
    assert body["interval"] == 5
    assert second["device_code"] != body["device_code"]
    assert second["user_code"] != body["user_code"]
    # The device code is kept by its digest, for the TTL and 600 s of answers.
    assert 1190 <= redis_client.ttl(device_key(body["device_code"])) <= 1200
    user_keys = list(redis_client.scan_iter("oauth:device-user:*"))
    assert len(user_keys) == 2
    assert all(590 <= redis_client.ttl(key) <= 600 for key in user_keys)
    assert not any(body["user_code"] in key for key in redis_client.keys("*"))


def test_clients_authenticate_as_they_registered(browser: Browser) -> None:
    basic = register_device_client(
        browser, token_endpoint_auth_method="client_secret_basic"
    )
    post = register_device_client(
        browser, token_endpoint_auth_method="client_secret_post"
    )
    public = register_device_client(browser)
    wrong = {**basic, "client_secret": basic["client_secret"] + "x"}

    for registered in (basic, post, public):
        accepted = device_authorization(browser, registered, scope="read")
        assert accepted.status_code == 200, (registered, accepted.text)
    refusals = {
        "wrong secret": device_authorization(browser, wrong, scope="read"),
        "secret client without its secret": device_authorization(
            browser, basic, method="none"
        ),
        "no client at all": browser.post(
            "/device_authorization", data={"scope": "read"}
        ),
        "unknown client": browser.post(
            "/device_authorization", data={"client_id": "lessie-nobody-at-all-here"}
        ),
    }
    for case, response in refusals.items():
        assert error_of(response, 401) == "invalid_client", case
        assert response.headers["WWW-Authenticate"].startswith("Basic realm="), case


def test_a_client_without_the_device_grant_is_unauthorized_client(
    browser: Browser, client: dict, flow: dict
) -> None:
    plain = register_client(browser, token_endpoint_auth_method="none")

    assert error_of(device_authorization(browser, plain)) == "unauthorized_client"
    # Nor may it poll, not even with a real device code.
    polled = poll(browser, plain, flow["device_code"])
    assert error_of(polled) == "unauthorized_client"
    assert error_of(poll(browser, client, flow["device_code"])) == (
        "authorization_pending"
    )


def test_resource_and_scope_are_checked_as_at_authorize(
    server: LiveServer, browser: Browser, client: dict
) -> None:
    mcp = server.issuer + "/mcp"
    reader = register_device_client(browser, scope="read")
    cases: dict[str, tuple[dict, dict[str, Any]]] = {
        "a foreign resource": (client, {"resource": "https://other.example/mcp"}),
        "the issuer as resource": (client, {"resource": server.issuer}),
        "a resource past a segment": (client, {"resource": mcp + "x"}),
        "two resources": (client, {"resource": [mcp, "https://other.example/mcp"]}),
        "an unknown scope": (client, {"scope": "admin"}),
        "one unknown scope": (client, {"scope": "read admin"}),
        "beyond the client's scope": (reader, {"scope": "read write"}),
    }

    errors = {
        case: error_of(client_post(browser, "/device_authorization", who, params, None))
        for case, (who, params) in cases.items()
    }

    assert errors == {
        **dict.fromkeys(list(cases)[:4], "invalid_target"),
        **dict.fromkeys(list(cases)[4:], "invalid_scope"),
    }
    assert device_authorization(browser, client, resource=mcp).status_code == 200
    assert device_authorization(browser, reader, scope="read").status_code == 200


def test_malformed_requests_are_invalid_request(browser: Browser, client: dict) -> None:
    secret = register_device_client(
        browser, token_endpoint_auth_method="client_secret_basic"
    )
    auth = (secret["client_id"], secret["client_secret"])
    form = {"client_id": client["client_id"]}
    cases = {
        "scope in the query": browser.post(
            "/device_authorization?scope=read", data=form
        ),
        "client_id in the query": browser.post(
            f"/device_authorization?client_id={client['client_id']}", data=form
        ),
        "repeated scope": browser.post(
            "/device_authorization",
            data=[*form.items(), ("scope", "read"), ("scope", "write")],
        ),
        "repeated client_id": browser.post(
            "/device_authorization",
            data=[*form.items(), ("client_id", client["client_id"])],
        ),
        "a JSON body": browser.post(
            "/device_authorization", json={"scope": "read"}, auth=auth
        ),
    }

    errors = {case: error_of(response) for case, response in cases.items()}

    assert errors == dict.fromkeys(cases, "invalid_request")


def test_device_authorizations_per_address_are_rate_limited(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(DEVICE_AUTHORIZATION_RATE_LIMIT="2 per minute")
    browser = live.browser()
    client = register_device_client(browser)

    statuses = [device_authorization(browser, client).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    refused = device_authorization(browser, client)
    assert refused.headers["Content-Type"].startswith("application/json")
    assert int(refused.headers["Retry-After"]) > 0


# --- Registration and discovery -----------------------------------------------


def test_vscodes_registration_keeps_the_device_grant(browser: Browser) -> None:
    response = browser.post("/register", json=VSCODE)

    assert response.status_code == 201, response.text
    client = response.json()
    assert client["grant_types"] == VSCODE["grant_types"]
    assert client["redirect_uris"] == VSCODE["redirect_uris"]
    assert client["response_types"] == ["code"]
    assert client["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client
    assert start(browser, client)["interval"] == 5


def test_a_device_only_client_registers_without_redirect_uris(
    browser: Browser,
) -> None:
    only = register_device_client(browser, grant_types=[DEVICE_GRANT])
    refreshing = register_device_client(browser)

    assert only["grant_types"] == [DEVICE_GRANT]
    assert only["response_types"] == []
    assert only["redirect_uris"] == []
    assert sorted(refreshing["grant_types"]) == sorted([DEVICE_GRANT, "refresh_token"])
    assert refreshing["redirect_uris"] == []
    # The code grant still needs somewhere to send the code.
    for grant_types in (["authorization_code"], ["authorization_code", DEVICE_GRANT]):
        refused = browser.post("/register", json={"grant_types": grant_types})
        assert error_of(refused) == "invalid_redirect_uri", grant_types


def test_discovery_lists_the_device_endpoint_and_grant(
    server: LiveServer, make_server: Callable[..., LiveServer]
) -> None:
    without_refresh = make_server(REFRESH_TOKENS="off")
    full = ["authorization_code", "refresh_token", DEVICE_GRANT]
    full += ["client_credentials", JWT_BEARER]

    for live, grants in ((server, full), (without_refresh, full[:1] + full[2:])):
        for document in ("oauth-authorization-server", "openid-configuration"):
            url = f"{live.url}/.well-known/{document}"
            metadata = requests.get(url, timeout=10).json()
            assert metadata["device_authorization_endpoint"] == (
                live.issuer + "/device_authorization"
            ), url
            assert metadata["grant_types_supported"] == grants, url
    client = register_device_client(without_refresh.browser())
    assert client["grant_types"] == [DEVICE_GRANT]


# --- Polling at /token ----------------------------------------------------------


def test_slow_down_grows_the_interval_on_every_instance(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    browser: Browser,
    client: dict,
    flow: dict,
) -> None:
    other = make_server(ISSUER=server.url).browser()
    code = flow["device_code"]

    assert error_of(poll(browser, client, code)) == "authorization_pending"
    assert error_of(poll(other, client, code)) == "slow_down"
    # More than the 5 s interval, less than the 10 s it has grown to.
    time.sleep(6.5)
    assert error_of(poll(browser, client, code)) == "slow_down"


def test_unknown_and_other_clients_device_codes_are_invalid_grant(
    browser: Browser, client: dict, flow: dict
) -> None:
    thief = register_device_client(browser)
    missing = token_request(browser, client, {"grant_type": DEVICE_GRANT})

    assert error_of(missing) == "invalid_request"
    assert error_of(poll(browser, client, "not-a-device-code")) == "invalid_grant"
    assert error_of(poll(browser, client, flow["device_code"])) == (
        "authorization_pending"
    )
    assert error_of(poll(browser, thief, flow["device_code"])) == "invalid_grant"


def test_a_denial_is_access_denied(
    browser: Browser,
    client: dict,
    flow: dict,
    signed_in: Browser,
    redis_client: Any,
) -> None:
    denied = decide(signed_in, flow["user_code"], "deny")

    assert denied.status_code == 200, denied.text[:500]
    select_one(denied, "#device-denied")
    assert_page_headers(denied)
    assert list(redis_client.scan_iter("oauth:device-user:*")) == []
    assert error_of(poll(browser, client, flow["device_code"])) == "access_denied"


def test_an_expired_code_is_expired_token(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(DEVICE_CODE_TTL="1")
    person = signed_in_as(live, user)
    device = live.browser()
    client = register_device_client(device)
    flow = start(device, client)
    assert flow["expires_in"] == 1

    time.sleep(2.1)

    assert error_of(poll(device, client, flow["device_code"])) == "expired_token"
    assert code_error(enter(person, flow["user_code"]))


def test_one_poll_wins_and_its_tokens_last_until_the_consent_is_revoked(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    browser: Browser,
    client: dict,
    flow: dict,
    signed_in: Browser,
    user: dict[str, str],
) -> None:
    other = make_server(ISSUER=server.url)
    code = flow["device_code"]
    assert error_of(poll(browser, client, code)) == "authorization_pending"
    approved = decide(signed_in, flow["user_code"])
    assert approved.status_code == 200, approved.text[:500]
    select_one(approved, "#device-approved")
    assert_page_headers(approved)

    # At once (approval lifts the interval), from eight pollers on two instances.
    responses = concurrent_polls([server.url, other.url] * 4, client, code)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: 1, 400: 7}, [r.text for r in responses]
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {
        "invalid_grant"
    }
    [won] = [r.json() for r in responses if r.status_code == 200]
    assert won["token_type"].lower() == "bearer"  # RFC 6749 §5.1: any case
    assert won["expires_in"] > 0 and won["refresh_token"]
    claims = claims_of(won["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["aud"] in (server.issuer + "/mcp", [server.issuer + "/mcp"])
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"] == won["scope"]
    assert set(won["scope"].split()) == {"read", "write"}
    assert claims["consent_id"]
    assert whoami(browser, won["access_token"]).status_code == 200
    assert error_of(poll(browser, client, code)) == "invalid_grant"

    refreshed = refresh(browser, client, won["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.json()
    assert whoami(browser, tokens["access_token"]).status_code == 200
    assert "Terminal Agent" in signed_in.get("/account").text

    revoke_from_account_page(signed_in, client["client_id"])

    assert whoami(browser, tokens["access_token"]).status_code == 401
    assert error_of(refresh(browser, client, tokens["refresh_token"])) == (
        "invalid_grant"
    )


def concurrent_polls(
    urls: list[str], client: dict[str, Any], device_code: str
) -> list[requests.Response]:
    """One poll per URL, all released at once, each on a connection of its own."""
    barrier = threading.Barrier(len(urls))
    data = {
        "grant_type": DEVICE_GRANT,
        "device_code": device_code,
        "client_id": client["client_id"],
    }

    def one(url: str) -> requests.Response:
        barrier.wait(timeout=10)
        return requests.post(url + "/token", data=data, timeout=30)

    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return list(pool.map(one, urls))


# --- The /device page -------------------------------------------------------------


def test_the_page_sends_a_stranger_to_sign_in_keeping_the_code(
    browser: Browser, user: dict[str, str], flow: dict
) -> None:
    bare = browser.get("/device")
    response = enter(browser, flow["user_code"])

    for sent in (bare, response):
        assert sent.status_code == 302
        assert urlsplit(sent.headers["Location"]).path == "/login"
    next_path = query_value(response.headers["Location"], "next")
    assert urlsplit(next_path).path == "/device"
    assert query_value(next_path, "user_code") == flow["user_code"]
    assert query_value(bare.headers["Location"], "next").startswith("/device")

    back = browser.login(user["email"], user["password"], next_path)

    assert back.status_code == 302
    assert back.headers["Location"].endswith(next_path)
    assert enter(browser, flow["user_code"]).status_code == 200


def query_value(url: str, name: str) -> str:
    [value] = parse_qs(urlsplit(url).query)[name]
    return value


def test_the_code_is_entered_on_a_form_and_read_loosely(
    browser: Browser, signed_in: Browser
) -> None:
    reader = register_device_client(browser, scope="read")
    flow = start(browser, reader)
    code = flow["user_code"]

    entry = signed_in.get("/device")

    assert entry.status_code == 200
    assert_page_headers(entry)
    form = select_one(entry, "form#device-code-form")
    assert attribute(form, "method").lower() == "post"
    assert posts_to(entry, form) == "/device"
    assert attribute(select_one(form, "#user-code-input"), "name") == "user_code"
    assert hidden_fields(entry, "form#device-code-form")["csrf_token"]
    select_one(form, "button[type=submit], input[type=submit]")

    typed = {
        **hidden_fields(entry, "form#device-code-form"),
        "user_code": code.replace("-", "").lower(),
    }
    posted = signed_in.post("/device", data=typed)
    linked = enter(signed_in, f" {code[:4].lower()} {code[5:]} ")
    for page in (posted, linked):
        assert page.status_code == 200, page.text[:500]
        assert_page_headers(page)
        assert select_one(page, "#user-code").get_text(strip=True) == code
        # No scope asked for: all the client may have for the resource.
        assert scopes_on(page) == ["read"]


@pytest.fixture
def tools(server: LiveServer) -> Iterator[str]:
    """A registered MCP server beside /mcp, removed afterwards so that the
    tests after this one see the registry as it was."""
    register_resource(server, TOOLS, name="GitHub", scopes="repo issues")
    assert until(lambda: TOOLS in protected_resources(server), 5)
    yield TOOLS
    removed = server.app.test_cli_runner().invoke(args=["resources", "remove", TOOLS])
    assert removed.exit_code == 0, removed.output
    assert until(lambda: TOOLS not in protected_resources(server), 5)


def test_the_consent_page_names_the_device_client_resource_and_scopes(
    server: LiveServer,
    browser: Browser,
    signed_in: Browser,
    user: dict[str, str],
    tools: str,
) -> None:
    client = register_device_client(browser, grant_types=[DEVICE_GRANT])
    flow = start(browser, client, resource=TOOLS, scope="issues repo")

    page = enter(signed_in, flow["user_code"])

    assert page.status_code == 200, page.text[:500]
    select_one(page, "#device-notice")
    assert select_one(page, "#user-code").get_text(strip=True) == flow["user_code"]
    assert select_one(page, "#client-name").get_text(strip=True) == "Terminal Agent"
    assert select_one(page, "#resource-name").get_text(strip=True) == "GitHub"
    assert select_one(page, "#resource-uri").get_text(strip=True) == TOOLS
    assert sorted(scopes_on(page)) == ["issues", "repo"]
    form = select_one(page, "form#device-consent-form")
    assert posts_to(page, form) == "/device"
    fields = hidden_fields(page, "form#device-consent-form")
    assert fields["csrf_token"]
    assert fields["user_code"].replace("-", "").upper() == (
        flow["user_code"].replace("-", "")
    )
    buttons = {attribute(b, "value") for b in form.select("button[name=decision]")}
    assert buttons == {"approve", "deny"}

    signed_in.headers["Accept-Language"] = "zh"
    chinese = enter(signed_in, flow["user_code"])
    del signed_in.headers["Accept-Language"]
    assert chinese.status_code == 200
    assert attribute(select_one(chinese, "html"), "lang") == "zh"
    notice = select_one(chinese, "#device-notice").get_text(strip=True)
    assert CJK.search(notice), notice
    assert notice != select_one(page, "#device-notice").get_text(strip=True)

    assert decide(signed_in, flow["user_code"]).status_code == 200
    won = poll(browser, client, flow["device_code"])
    assert won.status_code == 200, won.text
    tokens = won.json()
    assert "refresh_token" not in tokens  # the client did not register the grant
    claims = claims_of(tokens["access_token"])
    assert claims["aud"] in (TOOLS, [TOOLS])
    assert set(claims["scope"].split()) == {"issues", "repo"}
    assert claims["sub"] == user["id"]


def protected_resources(server: LiveServer) -> list[str]:
    url = server.url + "/.well-known/oauth-authorization-server"
    return requests.get(url, timeout=10).json()["protected_resources"]


def test_a_used_code_looks_to_anyone_like_one_never_given(
    server: LiveServer,
    browser: Browser,
    client: dict,
    signed_in: Browser,
    user: dict[str, str],
    other_user: dict[str, str],
) -> None:
    approved = start(browser, client)
    denied = start(browser, client)
    assert decide(signed_in, approved["user_code"]).status_code == 200
    assert decide(signed_in, denied["user_code"], "deny").status_code == 200
    stranger = signed_in_as(server, other_user)

    pages = {
        "approved": enter(stranger, approved["user_code"]),
        "denied": enter(stranger, denied["user_code"]),
        "never given": enter(stranger, RANDOM_CODE),
        "malformed": enter(stranger, "hello"),
        "approved, by its approver": enter(signed_in, approved["user_code"]),
    }

    texts = {case: code_error(page) for case, page in pages.items()}
    assert len(set(texts.values())) == 1, texts
    for case, page in pages.items():
        assert_page_headers(page)
        assert user["email"] not in page.text, case
        assert "Terminal Agent" not in page.text, case
    # Nor can a decision be made on it again.
    fields = hidden_fields(pages["approved"], "form#device-code-form")
    again = stranger.post(
        "/device",
        data={**fields, "user_code": denied["user_code"], "decision": "approve"},
    )
    assert code_error(again) == texts["never given"]
    assert error_of(poll(browser, client, denied["device_code"])) == "access_denied"


def test_decisions_need_the_csrf_token_and_a_known_button(
    browser: Browser, client: dict, flow: dict, signed_in: Browser
) -> None:
    page = enter(signed_in, flow["user_code"])
    fields = hidden_fields(page, "form#device-consent-form")
    forged = [
        {"user_code": flow["user_code"], "decision": "approve"},
        {**fields, "csrf_token": "forged", "decision": "approve"},
        {**fields, "csrf_token": fields["csrf_token"] + "x", "decision": "approve"},
        {"user_code": flow["user_code"]},
    ]

    for data in forged:
        response = signed_in.post("/device", data=data)
        assert response.status_code == 400, data
        assert response.headers["Content-Type"].startswith("text/html"), data
    odd = signed_in.post("/device", data={**fields, "decision": "maybe"})
    assert odd.status_code == 400
    assert error_of(poll(browser, client, flow["device_code"])) == (
        "authorization_pending"
    )

    approved = signed_in.post("/device", data={**fields, "decision": "approve"})

    assert approved.status_code == 200, approved.text[:500]
    select_one(approved, "#device-approved")
    assert poll(browser, client, flow["device_code"]).status_code == 200


def test_guessing_codes_is_limited_per_address_and_per_account(
    make_server: Callable[..., LiveServer],
    user: dict[str, str],
    other_user: dict[str, str],
) -> None:
    live = make_server(USER_CODE_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1")
    device = live.browser()
    flow = start(device, register_device_client(device))
    code = flow["user_code"]
    guesser = signed_in_as(live, user, **{"X-Forwarded-For": "203.0.113.1"})

    guesses = [enter(guesser, guess) for guess in (RANDOM_CODE, "hello", "ZZZZ-ZZZZ")]
    limited = enter(guesser, code)

    assert [code_error(g) for g in guesses]
    assert limited.status_code == 429
    assert_page_headers(limited)
    assert int(limited.headers["Retry-After"]) > 0
    # Another account at that address is limited too; elsewhere it is not...
    same_address = signed_in_as(live, other_user, **{"X-Forwarded-For": "203.0.113.1"})
    assert enter(same_address, code).status_code == 429
    elsewhere = signed_in_as(live, other_user, **{"X-Forwarded-For": "203.0.113.2"})
    assert enter(elsewhere, code).status_code == 200
    # ...but the guessing account is, from any address.
    moved = signed_in_as(live, user, **{"X-Forwarded-For": "203.0.113.3"})
    assert enter(moved, code).status_code == 429
    third = make_user(live, "carol@example.com")
    fresh = signed_in_as(live, third, **{"X-Forwarded-For": "203.0.113.3"})
    assert enter(fresh, code).status_code == 200
