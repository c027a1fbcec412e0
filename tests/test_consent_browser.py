"""The consent page names the host a real browser goes to (docs/reference.md).

Headless Chromium signs in through the form, reads the host the consent page
names, presses Approve and reports the URL it then navigates to. There is no
network: a navigation to a remote host fails, but Chromium still reports the
URL it tried; loopback redirects reach a tiny HTTP server started here.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import LiveServer
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    headless_chromium,
    loopback_callback,
    pkce_pair,
    register_client,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from app.db import db
from app.models import OAuthClient

#: Redirect URIs of the finding; refused now, so the browser never sees them.
ATTACK_REDIRECT_URIS = (
    "https://attacker.example\\.claude.ai/cb",
    "https://0x7f.1/cb",
    "https://-/cb",
    "https://a..b/cb",
)


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def callback_port() -> Iterator[int]:
    """A loopback HTTP server that answers every GET with 200."""
    with loopback_callback() as uri:
        port = urlsplit(uri).port
        assert port is not None
        yield port


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def approve_in_chromium(
    chromium: WebDriver,
    server: LiveServer,
    user: dict,
    client_id: str,
    redirect_uri: str,
) -> tuple[str, str]:
    """Sign in, read the consent page's host, approve; return it and the URL."""
    _, challenge = pkce_pair()
    client = {"client_id": client_id, "redirect_uris": [redirect_uri]}
    chromium.get(server.url + "/")
    chromium.delete_all_cookies()
    chromium.get(server.url + authorize_path(authorize_params(client, challenge)))
    chromium.find_element(By.NAME, "email").send_keys(user["email"])
    chromium.find_element(By.NAME, "password").send_keys(user["password"])
    chromium.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    shown = (
        WebDriverWait(chromium, 30)
        .until(lambda browser: browser.find_elements(By.ID, "redirect-host"))[0]
        .text
    )
    approve = 'button[name="decision"][value="approve"]'
    chromium.find_element(By.CSS_SELECTOR, approve).click()
    WebDriverWait(chromium, 30).until(
        lambda browser: not browser.current_url.startswith(server.url)
    )
    return shown, chromium.current_url


@pytest.mark.parametrize(
    ("registered", "requested", "host"),
    [
        ("https://Client.Example.COM:443/cb", None, "client.example.com"),
        ("https://client.example.com:/cb", None, "client.example.com"),
        (
            "https://client.example.com:8443/cb?tenant=a%2Fb",
            None,
            "client.example.com:8443",
        ),
        ("https://xn--80ak6aa92e.com/cb", None, "xn--80ak6aa92e.com"),
        ("https://127.0.0.1:{closed}/cb", None, "127.0.0.1:{closed}"),
        ("https://[::1]:{closed}/cb", None, "[::1]:{closed}"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:{live}/cb", "127.0.0.1:{live}"),
        ("http://localhost:{live}/cb", None, "localhost:{live}"),
        ("HTTP://LOCALHOST:{live}/cb", None, "localhost:{live}"),
    ],
)
def test_approve_goes_to_the_host_the_consent_page_names(
    chromium: WebDriver,
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
    callback_port: int,
    closed_port: int,
    registered: Any,
    requested: Any,
    host: Any,
) -> None:
    ports = {"live": callback_port, "closed": closed_port}
    registered = registered.format(**ports)
    requested = (requested or registered).format(**ports)
    client = register_client(browser, redirect_uris=[registered])

    shown, landed = approve_in_chromium(
        chromium, server, user, client["client_id"], requested
    )

    assert shown == host.format(**ports)
    assert urlsplit(landed).netloc == shown
    assert "code=" in urlsplit(landed).query


@pytest.mark.parametrize("redirect_uri", ATTACK_REDIRECT_URIS)
def test_the_findings_redirect_uris_are_refused(
    browser: Browser, redirect_uri: Any
) -> None:
    response = browser.post("/register", json={"redirect_uris": [redirect_uri]})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_redirect_uri"


def test_a_client_stored_before_the_fix_shows_where_the_browser_goes(
    chromium: WebDriver, server: LiveServer, user: dict[str, str]
) -> None:
    """A backslash URI registered earlier is named as Chromium resolves it."""
    redirect_uri = ATTACK_REDIRECT_URIS[0]
    with server.app.app_context():
        db.session.add(
            OAuthClient(
                client_id="lessie-storedbeforethefix",
                client_secret_hash=None,
                client_name="Claude",
                redirect_uris=[redirect_uri],
                grant_types=["authorization_code"],
                response_types=["code"],
                token_endpoint_auth_method="none",
                scope="read write",
                registered_from="127.0.0.1",
            )
        )
        db.session.commit()

    shown, landed = approve_in_chromium(
        chromium, server, user, "lessie-storedbeforethefix", redirect_uri
    )

    assert shown == "attacker.example"
    assert urlsplit(landed).netloc == shown
