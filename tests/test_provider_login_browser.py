"""From an MCP client to ``/mcp``, signed in only at the identity provider.

Headless Chromium plays the person: the MCP client sends it to
``/authorize``, it presses "Continue with ..." on the sign-in page, signs in
on the real provider's own page (node-oidc-provider, started by the test
set-up), comes back, and is shown this service's consent page, which it
approves. The client then redeems the code and calls ``/mcp``. The second
time, the provider remembers the person and their consent, and asks
nothing; this service's consent page is shown all the same (MCP's
confused-deputy rule).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from conftest import LiveServer
from helpers import (
    authorize_params,
    authorize_path,
    pkce_pair,
    redeem,
    register_client,
    whoami_output,
)
from oidc_upstream import OidcProvider
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_consent_browser import callback_port, chromium  # noqa: F401

APPROVE = 'button[name="decision"][value="approve"]'


def _to_consent_page(chromium: WebDriver, url: str) -> bool:  # noqa: F811
    """Open ``url``, continue with the provider, sign in there if asked, and
    stop on this service's consent page; whether the provider asked."""
    chromium.get(url)
    chromium.find_element(By.CSS_SELECTOR, "form.provider button").click()
    WebDriverWait(chromium, 30).until(
        lambda browser: (
            browser.find_elements(By.NAME, "login")
            or browser.find_elements(By.CSS_SELECTOR, APPROVE)
        )
    )
    if not chromium.find_elements(By.NAME, "login"):
        return False
    chromium.find_element(By.NAME, "login").send_keys("ada")
    chromium.find_element(By.NAME, "password").send_keys("any password")
    chromium.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(chromium, 30).until(
        lambda browser: browser.find_elements(By.CSS_SELECTOR, APPROVE)
    )
    return True


def _approve(chromium: WebDriver, server: LiveServer) -> dict[str, str]:  # noqa: F811
    chromium.find_element(By.CSS_SELECTOR, APPROVE).click()
    WebDriverWait(chromium, 30).until(
        lambda browser: not browser.current_url.startswith(server.url)
    )
    return {k: v[0] for k, v in parse_qs(urlsplit(chromium.current_url).query).items()}


def test_an_mcp_client_reaches_mcp_for_a_person_known_only_upstream(
    chromium: WebDriver,  # noqa: F811
    callback_port: int,  # noqa: F811
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
) -> None:
    http = provider_server.browser()
    client = register_client(
        http, redirect_uris=[f"http://127.0.0.1:{callback_port}/cb"]
    )
    chromium.get(provider_server.url + "/")
    chromium.delete_all_cookies()
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge)

    assert _to_consent_page(chromium, provider_server.url + authorize_path(params))
    answer = _approve(chromium, provider_server)

    assert answer["state"] == params["state"]
    assert answer["iss"] == provider_server.issuer
    tokens = redeem(http, client, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    who = whoami_output(http, tokens.json()["access_token"])
    assert who["email"] == "ada@acme.test"
    assert who["client_id"] == client["client_id"]

    # Signed out here, still signed in at the provider, whose consent is
    # remembered: it asks nothing, and our consent page is shown again.
    chromium.delete_cookie("session")
    again_verifier, again_challenge = pkce_pair()
    again = authorize_params(client, again_challenge)
    asked = _to_consent_page(chromium, provider_server.url + authorize_path(again))
    assert not asked
    assert chromium.find_elements(By.CSS_SELECTOR, APPROVE)
    second = _approve(chromium, provider_server)
    redeemed = redeem(http, client, second["code"], again_verifier)
    assert redeemed.status_code == 200, redeemed.text
