"""The clients people actually run, with the bodies they send (docs/reference.md).

Each registration body is the one the client sends; each then goes through
the whole flow a person sees: authorize, sign in, consent, token, ``/mcp``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from conftest import LiveServer
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    consent,
    pkce_pair,
    query_of,
    redeem,
    register_client,
    result_of,
    whoami,
)

CURSOR_REDIRECT = "cursor://anysphere.cursor-mcp/oauth/callback"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

#: What each client registers, as it sends it.
CURSOR = {
    "client_name": "Cursor",
    "redirect_uris": [
        CURSOR_REDIRECT,
        "https://cursor.com/oauth/callback",
        "http://127.0.0.1:54321/oauth/callback",
    ],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
VSCODE = {
    "client_name": "Visual Studio Code",
    "redirect_uris": [
        "https://vscode.dev/redirect",
        "http://127.0.0.1/",
        "http://127.0.0.1:33418/",
    ],
    "grant_types": ["authorization_code", "refresh_token", DEVICE_CODE],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
TYPESCRIPT_SDK = {
    "client_name": "My MCP Client",
    "redirect_uris": ["http://localhost:8090/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "scope": "read write",
}
PYTHON_SDK = {
    "redirect_uris": ["http://localhost:3030/callback"],
    "token_endpoint_auth_method": "client_secret_post",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "client_name": "Simple Auth Client",
}

#: Body, the redirect URI the client then uses, and what its Location starts with.
FLOWS = {
    "Cursor": (CURSOR, CURSOR_REDIRECT, CURSOR_REDIRECT + "?code="),
    # VS Code listens on a fresh port; http://127.0.0.1/ covers any (RFC 8252 §7.3).
    "VS Code": (VSCODE, "http://127.0.0.1:50123/", "http://127.0.0.1:50123/?code="),
    "TypeScript SDK": (
        TYPESCRIPT_SDK,
        "http://localhost:8090/callback",
        "http://localhost:8090/callback?code=",
    ),
    "Python SDK": (
        PYTHON_SDK,
        "http://localhost:3030/callback",
        "http://localhost:3030/callback?code=",
    ),
}


def register(browser: Browser, body: dict[str, Any]) -> dict[str, Any]:
    response = browser.post("/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def sign_in_and_approve(
    browser: Browser, user: dict[str, str], params: dict[str, str]
) -> tuple[str, str, Any]:
    """Follow the pages from an authorization request; return both pages and the 302."""
    to_login = browser.get(authorize_path(params))
    assert to_login.status_code == 302, to_login.text
    login_url = to_login.headers["Location"]
    login_page = browser.get(login_url)
    assert login_page.status_code == 200, login_page.text
    form = {**browser.form(login_page), **user}
    signed_in = browser.post(login_url, data=form)
    assert signed_in.status_code == 302, signed_in.text
    consent_url = signed_in.headers["Location"]
    consent_page = browser.get(consent_url)
    assert consent_page.status_code == 200, consent_page.text
    answer = browser.post(
        consent_url, data={**browser.form(consent_page), "decision": "approve"}
    )
    return login_page.text, consent_page.text, answer


# --- Real registration bodies, then the whole flow -----------------------------


@pytest.mark.parametrize(("body", "redirect_uri", "sent_to"), FLOWS.values(), ids=FLOWS)
def test_real_client_registers_and_completes_the_flow(
    browser: Browser, user: dict[str, str], body: Any, redirect_uri: Any, sent_to: Any
) -> None:
    client = register(browser, body)
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, redirect_uri=redirect_uri)

    login_page, consent_page, answer = sign_in_and_approve(
        browser, {"email": user["email"], "password": user["password"]}, params
    )

    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(sent_to), location
    assert query_of(location)["state"] == params["state"]
    name = client["client_name"]
    assert f"Sign in to continue to {name}" in login_page
    assert f"{name} wants to access your account" in consent_page
    token = redeem(browser, client, query_of(location)["code"], verifier, redirect_uri)
    assert token.status_code == 200, token.text
    caller = result_of(whoami(browser, token.json()["access_token"]))
    assert json.loads(caller["content"][0]["text"])["email"] == user["email"]


@pytest.mark.parametrize("body", [CURSOR, VSCODE, TYPESCRIPT_SDK, PYTHON_SDK])
def test_registration_shows_what_was_registered(
    browser: Browser, engine: sqlalchemy.Engine, body: Any
) -> None:
    client = register(browser, body)

    assert client["redirect_uris"] == body["redirect_uris"]
    # Only what is offered, as asked: VS Code's device grant is kept.
    offered = (
        "authorization_code",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    )
    asked = body.get("grant_types", ["authorization_code"])
    expected = [grant for grant in offered if grant in asked]
    assert client["grant_types"] == expected
    assert client["response_types"] == ["code"]
    assert client["token_endpoint_auth_method"] == body["token_endpoint_auth_method"]
    with engine.connect() as connection:
        stored = connection.execute(
            sqlalchemy.text("SELECT redirect_uris, grant_types FROM oauth_clients")
        ).one()
    assert stored.redirect_uris == body["redirect_uris"]
    assert stored.grant_types == expected


def test_consent_page_names_the_app_scheme(signed_in: Browser) -> None:
    client = register(signed_in, CURSOR)
    params = authorize_params(client, pkce_pair()[1], redirect_uri=CURSOR_REDIRECT)

    english = signed_in.get(authorize_path(params))
    chinese = signed_in.get(
        authorize_path(params), headers={"Accept-Language": "zh-CN"}
    )

    sentence = "you will be sent to the cursor:// app on this device."
    assert sentence in english.text
    assert 'id="redirect-host"' not in english.text
    assert "将会跳转到本设备上的 cursor:// 应用" in chinese.text


def test_consent_page_names_a_scheme_without_slashes(signed_in: Browser) -> None:
    client = register_client(signed_in, redirect_uris=["com.example.app:/callback"])
    params = authorize_params(client, pkce_pair()[1])

    page = signed_in.get(authorize_path(params))

    assert "sent to the com.example.app: app on this device" in page.text


def test_code_reaches_a_reverse_domain_scheme(signed_in: Browser) -> None:
    redirect_uri = "com.example.app:/oauth2redirect/example-provider"
    client = register_client(signed_in, redirect_uris=[redirect_uri])
    params = authorize_params(client, pkce_pair()[1])

    response = consent(signed_in, params)

    assert response.headers["Location"].startswith(redirect_uri + "?code=")


def test_private_use_redirect_is_matched_exactly(signed_in: Browser) -> None:
    client = register(signed_in, CURSOR)
    for near in (
        CURSOR_REDIRECT + "/",
        CURSOR_REDIRECT.upper(),
        "cursor://anysphere.cursor-mcp:80/oauth/callback",
        "cursor://evil.example/oauth/callback",
        CURSOR_REDIRECT + "?x=1",
    ):
        params = authorize_params(client, pkce_pair()[1], redirect_uri=near)
        response = signed_in.get(authorize_path(params))
        assert response.status_code == 400, near
        assert "Location" not in response.headers


# --- The login page says who is asking -----------------------------------------


def test_login_page_names_the_asking_client_in_chinese(browser: Browser) -> None:
    client = register(browser, CURSOR)
    params = authorize_params(client, pkce_pair()[1], redirect_uri=CURSOR_REDIRECT)
    login_url = browser.get(authorize_path(params)).headers["Location"]

    page = browser.get(login_url, headers={"Accept-Language": "zh"})

    assert "登录以继续使用 Cursor" in page.text


def test_login_page_escapes_the_client_name(browser: Browser) -> None:
    client = register_client(browser, client_name="<b>Notes</b> & Co")
    params = authorize_params(client, pkce_pair()[1])
    login_url = browser.get(authorize_path(params)).headers["Location"]

    page = browser.get(login_url)

    assert "continue to &lt;b&gt;Notes&lt;/b&gt; &amp; Co" in page.text
    assert "<b>Notes" not in page.text


@pytest.mark.parametrize(
    "next_path",
    [None, "/account", "/authorize?client_id=lessie-nobody", "/authorize"],
)
def test_login_page_without_a_known_client_names_none(
    browser: Browser, next_path: str | None
) -> None:
    page = browser.get("/login", params={"next": next_path} if next_path else None)

    assert page.status_code == 200
    assert "continue to" not in page.text


def test_pages_fit_a_phone(browser: Browser) -> None:
    page = browser.get("/login")
    css = browser.get("/static/app.css").text

    assert 'name="viewport" content="width=device-width, initial-scale=1"' in page.text
    assert "@media (max-width: 30rem)" in css


# --- Which schemes a native app may use ----------------------------------------

#: Schemes a browser or the OS acts on itself (docs/reference.md), and a few more.
REFUSED_SCHEMES = {
    "javascript": "javascript:alert(document.cookie)",
    "javascript, mixed case": "JavaScript:alert(1)",
    "data": "data:text/html,hello",
    "vbscript": "vbscript:msgbox(1)",
    "file": "file:///etc/passwd",
    "blob": "blob:https://client.example.com/3f1c",
    "about": "about:blank",
    "filesystem": "filesystem:https://client.example.com/temporary/cb",
    "ftp": "ftp://client.example.com/cb",
    "ws": "ws://127.0.0.1:8080/cb",
    "wss": "wss://client.example.com/cb",
    "mailto": "mailto:attacker@example.com",
    "tel": "tel:+15555550100",
    "http on a non-loopback host": "http://client.example.com/cb",
    "view-source": "view-source:https://client.example.com/cb",
    "intent": "intent://cb#Intent;scheme=app;end",
    "intent without a fragment": "intent://scan/cb",
    "chrome": "chrome://settings/cb",
    "chrome-extension": "chrome-extension://abcdefghijklmnop/cb.html",
    "ms-msdt": "ms-msdt:/id/PCWDiagnostic",
    "search-ms": "search-ms:query=cb",
    "out-of-band URN": "urn:ietf:wg:oauth:2.0:oob",
    "localhost without http://": "localhost:3000/callback",
}

#: Schemes that hand the URL to one particular web browser or to an OS
#: handler (issue 18, finding 4): as an "app" redirect, each would be a web
#: redirect to any site, an installer or a remote search.
LAUNCHER_SCHEMES = {
    "Edge": "microsoft-edge:https://phish.example/",
    "Edge, capitalised": "Microsoft-Edge:https://phish.example/",
    "Edge, upper case": "MICROSOFT-EDGE:https://phish.example/",
    "Edge holographic": "microsoft-edge-holographic:https://phish.example/",
    "Edge on iOS": "microsoft-edge-https://phish.example/",
    "Safari": "x-safari-https://phish.example/",
    "Safari, mixed case": "X-Safari-Https://phish.example/",
    "Safari, http": "x-safari-http://phish.example/",
    "Chrome": "googlechromes://phish.example/",
    "Chrome, http": "googlechrome://phish.example/",
    "Firefox": "firefox://open-url?url=https://phish.example/",
    "Opera": "opera://phish.example/",
    "Brave": "brave://open-url?url=https://phish.example/",
    "App Installer": "ms-appinstaller:?source=https://phish.example/app.msix",
    "App Installer, upper case": "MS-APPINSTALLER:?source=https://phish.example/a",
    "Windows search": "search:query=invoice&crumb=location:\\\\phish.example\\s",
    "Windows search, plain": "search:query=cb",
    "Word": "ms-word:ofe|u|https://phish.example/a.docx",
    "Excel": "ms-excel:ofv|u|https://phish.example/a.xlsx",
    "PowerPoint": "ms-powerpoint:ofe|u|https://phish.example/a.pptx",
    "any Office handler": "ms-visio:ofv|u|https://phish.example/a.vsdx",
    "Windows settings": "ms-settings:cb",
    "Windows setup": "ms-cxh://cb",
    "any ms- handler": "ms-future-handler://cb",
    "compiled help": "its:\\\\phish.example\\a.chm::/cb.htm",
    "compiled help, ms-its": "ms-its:cb.chm::/cb.htm",
    "compiled help, mk": "mk:@MSITStore:cb.chm::/cb.htm",
    "iOS over-the-air install": "itms-services://?action=download-manifest&url=x",
    "iOS over-the-air, mixed case": "ITMS-Services://?action=download-manifest",
    "App Store": "itms-apps://apps.apple.com/app/id1",
    "shell": "shell:cb",
    "Firefox Klar": "firefox-klar://open-url?url=https://phish.example/",
    "DuckDuckGo": "ddgQuickLink://phish.example/",
    "Yandex": "yandexbrowser-open-url://phish.example/",
    "UC Browser": "ucbrowser://phish.example/",
    "OneNote": "onenote:https://phish.example/a.one",
    "Teams": "msteams:/l/meetup-join/cb",
    "remote desktop": "rdp://full%20address=s:phish.example",
    "help": "help:cb",
}

#: Private-use URIs whose shape is wrong, whatever the scheme.
MALFORMED_PRIVATE_USE = {
    "scheme only": "myapp:",
    "scheme and slashes only": "myapp://",
    "user information": "myapp://user@callback/cb",
    "dot segment": "myapp://callback/a/../cb",
    "encoded dot segment": "myapp://callback/%2e%2e/cb",
    "port out of range": "myapp://callback:99999/cb",
    "fragment": "myapp://callback/cb#x",
    "wildcard": "myapp://callback/*",
    "space": "myapp://callback/c b",
    "backslash": "myapp://callback\\cb",
}

ACCEPTED_PRIVATE_USE = {
    "Cursor": CURSOR_REDIRECT,
    "reverse domain, one slash": "com.example.app:/callback",
    "reverse domain, no slash": "com.example.app:callback",
    "VS Code's own scheme": "vscode://vscode.github-authentication/did-authenticate",
    "with a query": "myapp://callback?tenant=a",
    "with a port": "myapp://callback:8080/cb",
    "digits and signs in the scheme": "my-app+v2.beta://cb",
}


def assert_refused(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", REFUSED_SCHEMES.values(), ids=REFUSED_SCHEMES)
def test_schemes_a_browser_or_the_os_acts_on_are_refused(
    browser: Browser, engine: sqlalchemy.Engine, uri: Any
) -> None:
    # Beside Cursor's good URIs: one bad URI fails the registration.
    body = {**CURSOR, "redirect_uris": [*CURSOR["redirect_uris"], uri]}

    assert_refused(browser.post("/register", json=body))
    with engine.connect() as connection:
        count = connection.scalar(sqlalchemy.text("SELECT count(*) FROM oauth_clients"))
    assert count == 0


@pytest.mark.parametrize("uri", LAUNCHER_SCHEMES.values(), ids=LAUNCHER_SCHEMES)
def test_browser_launchers_and_os_handlers_are_refused(
    browser: Browser, engine: sqlalchemy.Engine, uri: Any
) -> None:
    response = browser.post("/register", json={"redirect_uris": [uri]})

    assert_refused(response)
    scheme = uri.split(":", 1)[0].lower()
    assert f"'{scheme}'" in response.json()["error_description"]
    with engine.connect() as connection:
        count = connection.scalar(sqlalchemy.text("SELECT count(*) FROM oauth_clients"))
    assert count == 0


@pytest.mark.parametrize(
    "uri", MALFORMED_PRIVATE_USE.values(), ids=MALFORMED_PRIVATE_USE
)
def test_malformed_private_use_uris_are_refused(browser: Browser, uri: Any) -> None:
    assert_refused(browser.post("/register", json={"redirect_uris": [uri]}))


@pytest.mark.parametrize("uri", ACCEPTED_PRIVATE_USE.values(), ids=ACCEPTED_PRIVATE_USE)
def test_private_use_uris_are_registered_as_given(browser: Browser, uri: Any) -> None:
    client = register_client(browser, redirect_uris=[uri])

    assert client["redirect_uris"] == [uri]


def test_refused_scheme_already_stored_never_receives_a_redirect(
    browser: Browser, engine: sqlalchemy.Engine
) -> None:
    client = register_client(browser, redirect_uris=["com.example.app:/cb"])
    # A row from before a scheme was refused.
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE oauth_clients SET redirect_uris = :uris"),
            {"uris": ["javascript:alert(1)//"]},
        )
    params = authorize_params(
        client, pkce_pair()[1], redirect_uri="javascript:alert(1)//", scope="nope"
    )

    response = browser.get(authorize_path(params))

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "javascript:" not in response.text


@pytest.mark.parametrize(
    "stored",
    [
        "microsoft-edge:https://phish.example/",
        "x-safari-https://phish.example/",
        "ms-appinstaller:?source=https://phish.example/a.msix",
        "Search:query=cb",
    ],
)
def test_launcher_stored_before_the_rule_gets_no_code_even_once_approved(
    signed_in: Browser, engine: sqlalchemy.Engine, stored: str
) -> None:
    client = register_client(signed_in, redirect_uris=["com.example.app:/cb"])
    # A row registered before these schemes were refused (changed before the
    # service first reads it, so no cached copy hides the change).
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE oauth_clients SET redirect_uris = :uris"),
            {"uris": ["com.example.app:/cb", stored]},
        )
    approval = authorize_params(client, pkce_pair()[1])
    assert consent(signed_in, approval).status_code == 302

    for changes in ({}, {"scope": "nope"}):
        params = authorize_params(
            client, pkce_pair()[1], redirect_uri=stored, **changes
        )
        response = signed_in.get(authorize_path(params))

        assert response.status_code == 400, changes
        assert "Location" not in response.headers
        assert "phish.example" not in response.text
        assert 'name="decision"' not in response.text


def test_allowed_redirect_schemes_narrows_private_use_schemes(
    make_server: Callable[..., LiveServer],
) -> None:
    browser = make_server(ALLOWED_REDIRECT_SCHEMES="cursor, vscode").browser()

    client = register(browser, CURSOR)
    refused = browser.post(
        "/register", json={"redirect_uris": ["com.example.app:/callback"]}
    )

    assert client["redirect_uris"] == CURSOR["redirect_uris"]
    assert_refused(refused)
    assert "'com.example.app'" in refused.json()["error_description"]
    # Web and loopback URIs are not private-use; the setting leaves them alone.
    register_client(browser, redirect_uris=["https://client.example.com/cb"])
    register_client(browser, redirect_uris=["http://127.0.0.1/cb"])


def test_allowed_redirect_schemes_also_stops_clients_registered_before(
    browser: Browser, signed_in: Browser, make_server: Callable[..., LiveServer]
) -> None:
    client = register_client(browser, redirect_uris=["com.example.app:/callback"])
    narrowed = make_server(ALLOWED_REDIRECT_SCHEMES="cursor").browser()
    narrowed.cookies.update(signed_in.cookies)
    params = authorize_params(client, pkce_pair()[1])

    response = narrowed.get(authorize_path(params))

    assert response.status_code == 400
    assert "Location" not in response.headers


# --- Loopback spellings: distinct unless LOOPBACK_ALIASES=on --------------------

ALIASES = {
    "localhost registered, 127.0.0.1 sent": (
        "http://localhost/callback",
        "http://127.0.0.1:5555/callback",
    ),
    "127.0.0.1 registered, localhost sent": (
        "http://127.0.0.1:33418/callback",
        "http://localhost:40000/callback",
    ),
    "[::1] registered, 127.0.0.1 sent without a port": (
        "http://[::1]/callback",
        "http://127.0.0.1/callback",
    ),
    "127.0.0.1 registered, [::1] sent": (
        "http://127.0.0.1/",
        "http://[::1]:5555/",
    ),
}


@pytest.mark.parametrize(("registered", "sent"), ALIASES.values(), ids=ALIASES)
def test_loopback_spellings_stay_distinct_by_default(
    signed_in: Browser, registered: Any, sent: Any
) -> None:
    client = register_client(signed_in, redirect_uris=[registered])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=sent)

    response = signed_in.get(authorize_path(params))

    assert response.status_code == 400
    assert "Location" not in response.headers


@pytest.mark.parametrize(("registered", "sent"), ALIASES.values(), ids=ALIASES)
def test_loopback_aliases_on_lets_any_spelling_match(
    make_server: Callable[..., LiveServer],
    user: dict[str, str],
    registered: Any,
    sent: Any,
) -> None:
    browser = make_server(LOOPBACK_ALIASES="on").browser()
    client = register_client(browser, redirect_uris=[registered])
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, redirect_uri=sent)
    browser.login(user["email"], user["password"])

    response = consent(browser, params)

    # The code goes to the URI as the request gave it.
    assert response.status_code == 302
    assert response.headers["Location"].startswith(sent + "?code=")
    code = query_of(response.headers["Location"])["code"]
    assert redeem(browser, client, code, verifier, sent).status_code == 200


@pytest.mark.parametrize(
    "sent",
    [
        "http://127.0.0.1:5555/other",
        "http://localhost.evil.example/callback",
        "http://127.0.0.2:5555/callback",
        "http://LOCALHOST:5555/callback",
        "https://127.0.0.1:5555/callback",
        "http://[::1]:0/callback",
        "http://127.0.0.1:5555/callback?x=1",
        "http://127.0.0.1:5555@localhost/callback",
    ],
)
def test_loopback_aliases_let_only_host_and_port_vary(
    make_server: Callable[..., LiveServer], user: dict[str, str], sent: str
) -> None:
    browser = make_server(LOOPBACK_ALIASES="on").browser()
    client = register_client(browser, redirect_uris=["http://localhost/callback"])
    browser.login(user["email"], user["password"])
    params = authorize_params(client, pkce_pair()[1], redirect_uri=sent)

    response = browser.get(authorize_path(params))

    assert response.status_code == 400
    assert "Location" not in response.headers
