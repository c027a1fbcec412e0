"""The device authorization grant (RFC 8628) end to end, with a real browser.

A headless client (a script here) asks ``/device_authorization`` for a code
and polls ``/token`` as RFC 8628 §3.4-3.5 says: every ``interval`` seconds,
five more after ``slow_down``. Meanwhile headless Chromium plays the person
on another machine: it opens the verification URI, signs in (the password
form, or the upstream OpenID provider), enters or confirms the code and
approves on the device consent page. The script then gets its tokens, calls
``/mcp`` with the official MCP Python SDK and refreshes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from conftest import LiveServer
from helpers import (
    Browser,
    bearer,
    claims_of,
    client_post,
    headless_chromium,
    refresh,
    whoami_output,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_sdk_client import whoami_of
from oidc_upstream import OidcProvider
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_NAME = "Headless CLI"
APPROVE = 'button[name="decision"][value="approve"]'
#: The longest any test waits for the poller (two polls and some slack).
POLL_DEADLINE = 60.0


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    """One Chromium for the module; each test starts it with no cookies."""
    with headless_chromium() as browser:
        yield browser


def fresh(chromium: WebDriver, width: int = 1024, height: int = 768) -> WebDriver:
    """Chromium with every cookie gone (this service's and the provider's)."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.set_window_size(width, height)
    return chromium


def wait_for(chromium: WebDriver, selector: str) -> Any:
    return WebDriverWait(chromium, 30).until(
        lambda browser: browser.find_elements(By.CSS_SELECTOR, selector)
    )[0]


def register_device_client(http: Browser) -> dict[str, Any]:
    """A public client with the device grant, refresh tokens and no redirect."""
    answer = http.post(
        "/register",
        json={
            "client_name": CLIENT_NAME,
            "grant_types": [DEVICE_GRANT, "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert answer.status_code == 201, answer.text
    client = answer.json()
    assert client["redirect_uris"] == []
    return client


def start_device_flow(http: Browser, client: dict[str, Any]) -> dict[str, Any]:
    answer = client_post(http, "/device_authorization", client, {"scope": "read write"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.json()


def poll(http: Browser, client: dict[str, Any], device_code: str) -> Any:
    data = {"grant_type": DEVICE_GRANT, "device_code": device_code}
    return client_post(http, "/token", client, data)


class Poller(threading.Thread):
    """The device's script: polls /token until it gets something other than
    ``authorization_pending`` or ``slow_down``, waiting ``interval`` seconds
    between polls and five more after each ``slow_down`` (RFC 8628 §3.5)."""

    def __init__(self, server: LiveServer, client: dict, grant: dict) -> None:
        super().__init__(daemon=True)
        self.http = server.browser()
        self.client = client
        self.device_code = grant["device_code"]
        self.interval = float(grant["interval"])
        #: ``(monotonic time sent, status, body)`` of every poll.
        self.answers: list[tuple[float, int, dict[str, Any]]] = []
        self.failure: BaseException | None = None
        self.first = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            deadline = time.monotonic() + POLL_DEADLINE
            while not self.stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                answer = poll(self.http, self.client, self.device_code)
                self.answers.append((sent, answer.status_code, answer.json()))
                self.first.set()
                error = answer.json().get("error")
                if error == "slow_down":
                    self.interval += 5
                elif error != "authorization_pending":
                    return
                self.stop.wait(self.interval)
        except BaseException as failure:  # reported by the test's thread
            self.failure = failure
        finally:
            self.first.set()

    def tokens(self) -> dict[str, Any]:
        """Wait for the end of polling; the successful answer."""
        self.join(POLL_DEADLINE)
        self.stop.set()
        assert self.failure is None, self.failure
        assert self.answers, "the poller never polled"
        *before, (_, status, body) = self.answers
        assert status == 200, self.answers
        # The person was still on their way: the device was told to wait, and
        # since it waited the interval, never to slow down.
        assert before, "the first poll already had tokens"
        assert {(s, b["error"]) for _, s, b in before} == {
            (400, "authorization_pending")
        }, before
        sent = [at for at, _, _ in self.answers]
        assert all(b - a >= 5 for a, b in zip(sent, sent[1:], strict=False)), sent
        return body


async def mcp_whoami(url: str, access_token: str) -> dict[str, Any]:
    """Call the whoami tool with the SDK's Streamable HTTP client and a token."""
    async with (
        httpx2.AsyncClient(headers=bearer(access_token), timeout=30) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        return whoami_of(await session.call_tool("whoami", {}))


def confirm_prefilled_code(chromium: WebDriver, user_code: str) -> None:
    """The link fills the code in; the person checks it and goes on (a GET
    never looks a code up)."""
    entry = wait_for(chromium, "form#device-code-form #user-code-input")
    assert entry.get_attribute("value") == user_code
    chromium.find_element(
        By.CSS_SELECTOR, "form#device-code-form [type=submit]"
    ).click()


def sign_in_with_password(chromium: WebDriver, user: dict[str, str]) -> None:
    wait_for(chromium, "#password-sign-in")
    chromium.find_element(By.NAME, "email").send_keys(user["email"])
    chromium.find_element(By.NAME, "password").send_keys(user["password"])
    chromium.find_element(By.CSS_SELECTOR, "#password-sign-in button").click()


def test_a_device_polls_while_a_person_signs_in_enters_the_code_and_approves(
    chromium: WebDriver, server: LiveServer, user: dict[str, str]
) -> None:
    http = server.browser()
    client = register_device_client(http)
    grant = start_device_flow(http, client)
    assert grant["verification_uri"] == server.issuer + "/device"
    assert grant["interval"] == 5
    poller = Poller(server, client, grant)
    poller.start()
    try:
        assert poller.first.wait(30)

        # On another machine: the address the device shows, then sign-in.
        fresh(chromium).get(grant["verification_uri"])
        assert "/login" in chromium.current_url
        sign_in_with_password(chromium, user)
        entry = wait_for(chromium, "form#device-code-form #user-code-input")
        assert chromium.current_url == server.url + "/device"
        # Typed as people do: lower case, no dash.
        entry.send_keys(grant["user_code"].replace("-", "").lower())
        chromium.find_element(
            By.CSS_SELECTOR, "form#device-code-form [type=submit]"
        ).click()

        notice = wait_for(chromium, "#device-notice").text
        assert "device" in notice.lower()
        text = {
            name: chromium.find_element(By.ID, name).text
            for name in ("user-code", "client-name", "resource-name", "resource-uri")
        }
        assert text == {
            "user-code": grant["user_code"],
            "client-name": CLIENT_NAME,
            "resource-name": "MCP",
            "resource-uri": server.issuer + "/mcp",
        }
        scopes = chromium.find_elements(By.CSS_SELECTOR, "ul.scopes li strong")
        assert [scope.text for scope in scopes] == ["read", "write"]
        chromium.find_element(By.CSS_SELECTOR, APPROVE).click()
        wait_for(chromium, "#device-approved")

        tokens = poller.tokens()
    finally:
        poller.stop.set()

    assert tokens["token_type"].lower() == "bearer"  # case-insensitive (RFC 6749)
    assert tokens["scope"] == "read write"
    assert tokens["refresh_token"]
    claims = claims_of(tokens["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["aud"] == server.issuer + "/mcp"
    assert claims["client_id"] == client["client_id"]
    # The device code is spent: the one poll that got tokens was the last.
    spent = poll(http, client, grant["device_code"])
    assert spent.status_code == 400, spent.text
    assert spent.json()["error"] == "invalid_grant"

    expected = {
        "sub": user["id"],
        "email": user["email"],
        "client_id": client["client_id"],
        "scope": "read write",
    }
    mcp_url = server.url + "/mcp"
    assert anyio.run(mcp_whoami, mcp_url, tokens["access_token"]) == expected

    refreshed = refresh(http, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert renewed["access_token"] != tokens["access_token"]
    assert renewed["refresh_token"] not in ("", tokens["refresh_token"])
    assert anyio.run(mcp_whoami, mcp_url, renewed["access_token"]) == expected


def test_a_person_signed_in_upstream_confirms_a_prefilled_code(
    chromium: WebDriver, provider_server: LiveServer, oidc_provider: OidcProvider
) -> None:
    http = provider_server.browser()
    client = register_device_client(http)
    grant = start_device_flow(http, client)
    complete = grant["verification_uri_complete"]
    assert complete == f"{provider_server.issuer}/device?user_code={grant['user_code']}"

    fresh(chromium).get(complete)
    chromium.find_element(By.CSS_SELECTOR, "form.provider button").click()
    # The provider's own sign-in page, unless it remembers the person.
    wait_for(chromium, "input[name=login], form#device-code-form")
    if chromium.find_elements(By.NAME, "login"):
        chromium.find_element(By.NAME, "login").send_keys("ada")
        chromium.find_element(By.NAME, "password").send_keys("any password")
        chromium.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    confirm_prefilled_code(chromium, grant["user_code"])
    wait_for(chromium, APPROVE)
    assert chromium.find_element(By.ID, "user-code").text == grant["user_code"]
    chromium.find_element(By.CSS_SELECTOR, APPROVE).click()
    wait_for(chromium, "#device-approved")

    # The first poll is never too early: right after approval, tokens.
    answer = poll(http, client, grant["device_code"])
    assert answer.status_code == 200, answer.text
    who = whoami_output(http, answer.json()["access_token"])
    assert who["email"] == "ada@acme.test"
    assert who["client_id"] == client["client_id"]


def test_the_device_consent_page_fits_a_phone(
    chromium: WebDriver, server: LiveServer, user: dict[str, str]
) -> None:
    http = server.browser()
    grant = start_device_flow(http, register_device_client(http))

    fresh(chromium, 375, 740).get(grant["verification_uri_complete"])
    sign_in_with_password(chromium, user)
    confirm_prefilled_code(chromium, grant["user_code"])
    approve = wait_for(chromium, APPROVE)

    width = chromium.execute_script("return window.innerWidth")
    assert width == 375
    scroll_width = chromium.execute_script(
        "return document.documentElement.scrollWidth"
    )
    assert scroll_width <= width
    assert approve.is_displayed()
    box = chromium.execute_script(
        "return arguments[0].getBoundingClientRect().toJSON()", approve
    )
    assert 0 <= box["left"] and box["right"] <= width
