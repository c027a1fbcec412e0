"""Step-up asks only for what is new; each server's consent page is its own.

MCP's scope challenge: a client that meets ``403 insufficient_scope`` asks
again for the union of what it holds and what the challenge names. A person
then sees, in a real Chromium, only the new scopes as the request and the
granted ones apart, and approving grants the union (docs/reference.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LiveServer
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    claims_of,
    create_key,
    get_code,
    headless_chromium,
    loopback_callback,
    new_key,
    pkce_pair,
    query_of,
    redeem,
    register_client,
    register_resource,
    select_one,
    soup,
    until,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

APPROVE = 'button[name="decision"][value="approve"]'


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def callback() -> Iterator[str]:
    with loopback_callback() as redirect_uri:
        yield redirect_uri


class Person:
    """Someone at a real Chromium, signed in as ``user``, answering consent pages."""

    def __init__(
        self, chromium: WebDriver, server: LiveServer, user: dict[str, str]
    ) -> None:
        self.chromium = chromium
        self.server = server
        self.user = user
        chromium.get(server.url + "/login")
        chromium.delete_all_cookies()

    def open(self, client: dict[str, Any], **params: str) -> tuple[str, dict]:
        """Follow the client to /authorize (signing in if asked) up to the
        consent page; return the PKCE verifier and the request's parameters."""
        verifier, challenge = pkce_pair()
        request = authorize_params(client, challenge, **params)
        self.chromium.get(self.server.url + authorize_path(request))
        if self.chromium.find_elements(By.NAME, "password"):
            self.chromium.find_element(By.NAME, "email").send_keys(self.user["email"])
            self.chromium.find_element(By.NAME, "password").send_keys(
                self.user["password"]
            )
            self.chromium.find_element(
                By.CSS_SELECTOR, "form button[type=submit]"
            ).click()
        WebDriverWait(self.chromium, 30).until(
            lambda browser: browser.find_elements(By.CSS_SELECTOR, APPROVE)
        )
        return verifier, request

    def texts(self, selector: str) -> list[str]:
        return [e.text for e in self.chromium.find_elements(By.CSS_SELECTOR, selector)]

    def approve(self, request: dict[str, str]) -> str:
        """Press Approve; return the code the browser then carries to the client."""
        self.chromium.find_element(By.CSS_SELECTOR, APPROVE).click()
        redirect_uri = request["redirect_uri"]
        WebDriverWait(self.chromium, 30).until(
            lambda browser: browser.current_url.startswith(redirect_uri)
        )
        query = query_of(self.chromium.current_url)
        assert query["state"] == request["state"]
        return query["code"]


def granted(
    person: Person, browser: Browser, client: dict[str, Any], scope: str
) -> dict[str, Any]:
    """The person approves ``scope`` in Chromium; the client redeems the code."""
    verifier, request = person.open(client, scope=scope)
    code = person.approve(request)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


def challenged_scope(response: Any) -> list[str]:
    """The scopes a ``403 insufficient_scope`` challenge names (RFC 6750 §3)."""
    assert response.status_code == 403, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"'), challenge
    return challenge.split('scope="', 1)[1].split('"', 1)[0].split()


def consent_scopes(browser: Browser, user: dict[str, str], client_id: str) -> set:
    """The scopes the account page shows for the client's built-in consent."""
    browser.login(user["email"], user["password"])
    page = browser.get("/account")
    section = select_one(
        page, f'section.resource[data-resource="{browser.server.issuer}/mcp"]'
    )
    [row] = [r for r in section.select("tr") if client_id in r.get_text()]
    return set(row.get_text().split()) & {"read", "write"}


def test_step_up_asks_only_for_the_new_scope_and_grants_the_union(
    chromium: WebDriver,
    callback: str,
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
) -> None:
    person = Person(chromium, server, user)
    client = register_client(browser, redirect_uris=[callback])
    reader = granted(person, browser, client, "read")
    assert reader["scope"] == "read"

    # A call that needs `write` meets MCP's scope challenge; the client asks
    # for the union of what it holds and what the challenge names.
    needed = challenged_scope(create_key(browser, reader["access_token"]))
    assert needed == ["write"]
    union = " ".join(sorted({*reader["scope"].split(), *needed}))
    verifier, request = person.open(client, scope=union)

    new, already = person.texts("li.scope-new"), person.texts("li.scope-granted")
    assert len(new) == 1 and "write" in new[0], new
    assert len(already) == 1 and "read" in already[0], already
    code = person.approve(request)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    writer = response.json()
    assert writer["scope"] == "read write"
    assert claims_of(writer["access_token"])["scope"] == "read write"
    # The consent is now the union: a key may have both scopes.
    made = new_key(browser, writer["access_token"], scopes=["read", "write"])
    assert made["scopes"] == ["read", "write"]
    assert consent_scopes(server.browser(), user, client["client_id"]) == {
        "read",
        "write",
    }

    # Asking later for what is already granted is the page as before:
    # approved before, nothing listed as granted apart; approving narrows.
    verifier, request = person.open(client, scope="read")
    assert person.texts("li.scope-granted") == []
    # Nothing in it is new: it is listed as asked, not as new.
    assert person.texts("li.scope-new") == []
    assert len(person.texts("li.scope-asked")) == 1
    assert "You approved this application" in chromium.page_source
    code = person.approve(request)
    assert redeem(browser, client, code, verifier).json()["scope"] == "read"
    assert challenged_scope(
        create_key(browser, writer["access_token"], scopes=["write"])
    ) == ["write"]
    assert consent_scopes(server.browser(), user, client["client_id"]) == {"read"}


def test_approving_only_the_new_scope_keeps_the_granted_one(
    chromium: WebDriver,
    callback: str,
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
) -> None:
    person = Person(chromium, server, user)
    client = register_client(browser, redirect_uris=[callback])
    granted(person, browser, client, "read")

    # A client that asks for the challenged scope alone.
    verifier, request = person.open(client, scope="write")

    new, already = person.texts("li.scope-new"), person.texts("li.scope-granted")
    assert len(new) == 1 and "write" in new[0], new
    assert len(already) == 1 and "read" in already[0], already
    code = person.approve(request)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    # The token carries what was asked; the consent keeps what was granted.
    assert response.json()["scope"] == "write"
    assert consent_scopes(server.browser(), user, client["client_id"]) == {
        "read",
        "write",
    }


def test_a_consent_for_one_resource_grants_nothing_for_another(
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
) -> None:
    tools = register_resource(server, "https://tools.example.com/github")
    client = register_client(browser)
    get_code(browser, client, user, scope="read")  # approved for the built-in
    params = authorize_params(client, pkce_pair()[1], resource=tools, scope="read")

    assert until(lambda: browser.get(authorize_path(params)).status_code == 200, 5)
    page = browser.get(authorize_path(params))

    # The same scope name on another server is a new request, not a step-up.
    assert soup(page).select("li.scope-granted") == []
    assert "You approved this application" not in page.text


#: Two servers, each with its own scopes and descriptions (Search has no zh).
SERVERS: dict[str, dict[str, Any]] = {
    "https://tools.example.com/github": {
        "name": "GitHub tools",
        "scopes": "repo issues",
        "describe": ["repo=Read your repositories", "issues=Open and close issues"],
        "describe_zh": ["repo=读取你的代码仓库", "issues=打开和关闭议题"],
    },
    "https://search.example.com/mcp": {
        "name": "Team search",
        "scopes": "query",
        "describe": ["query=Search the team's documents"],
    },
}
#: What each server's consent page shows for each scope, by language.
DESCRIPTIONS = {
    "en": {
        "https://tools.example.com/github": {
            "repo": "Read your repositories",
            "issues": "Open and close issues",
        },
        "https://search.example.com/mcp": {"query": "Search the team's documents"},
    },
    "zh": {
        "https://tools.example.com/github": {
            "repo": "读取你的代码仓库",
            "issues": "打开和关闭议题",
        },
        # No zh description given: the English one.
        "https://search.example.com/mcp": {"query": "Search the team's documents"},
    },
}


@pytest.mark.parametrize("language", DESCRIPTIONS)
def test_each_server_s_consent_page_names_it_and_describes_its_own_scopes(
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
    language: str,
) -> None:
    for uri, options in SERVERS.items():
        register_resource(server, uri, **options)
    client = register_client(browser, client_name="Notes")
    browser.login(user["email"], user["password"])

    for uri, described in DESCRIPTIONS[language].items():
        params = authorize_params(client, pkce_pair()[1], resource=uri)
        assert until(
            lambda params=params: (
                browser.get(authorize_path(params)).status_code == 200
            ),
            5,
        )
        page = browser.get(
            authorize_path(params), headers={"Accept-Language": language}
        )

        assert f'<html lang="{language}">' in page.text
        assert SERVERS[uri]["name"] in page.text
        assert uri in page.text
        items = [item.get_text(" ", strip=True) for item in soup(page).select("li")]
        for scope, description in described.items():
            assert any(scope in item and description in item for item in items), (
                scope,
                items,
            )
        others = [
            text
            for other, scopes in DESCRIPTIONS[language].items()
            if other != uri
            for text in scopes.values()
        ]
        shown = soup(page).get_text(" ", strip=True)
        for text in others:
            assert text not in shown
