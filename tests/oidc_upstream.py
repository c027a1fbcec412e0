"""A real OpenID provider for the tests: node-oidc-provider 8.x, under Node.

The package is the certified one, installed from npm into ``.devdata/`` on
first use (as the TypeScript SDK of the discovery test is) and started on a
free loopback port by ``tests/js/oidc_provider.mjs``, with the test accounts
below and its own development sign-in pages. No part of the provider is
mocked; its one addition, ``/test/tamper``, re-signs the next ID token with
claims changed, to show what the service does with a provider's bad answer.
"""

from __future__ import annotations

import json
import select
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

import requests
import sqlalchemy
from bs4 import BeautifulSoup
from helpers import attribute, npm_package, select_one

if TYPE_CHECKING:
    from helpers import Browser

ROOT = Path(__file__).resolve().parent.parent
#: Pinned: 8.x is the last major that runs on Node 20 (9.x needs Node 22).
PACKAGE = "oidc-provider@8.8.1"
#: Git-ignored, and kept between runs so npm fetches the package once.
HOME = ROOT / ".devdata" / "oidc-provider"
SCRIPT = Path(__file__).resolve().parent / "js" / "oidc_provider.mjs"
#: The service's registration at the provider (a native client, RFC 8252
#: §7.3, so the test servers' ever-changing loopback ports all match).
CLIENT_ID = "mcp-auth-test"
CLIENT_SECRET = "a-client-secret-the-provider-issued"
#: Callback paths registered for the provider names the tests use, at the
#: root and under the path of a deployment behind a proxy.
PROVIDER_NAMES = ("acme", "other")
PREFIXES = ("", "/prod-api")
#: The provider's people, by the login typed on its sign-in page.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ada": {"email": "ada@acme.test", "email_verified": True, "name": "Ada"},
    "ben": {"email": "Ben@Acme.test", "email_verified": True, "name": "Ben"},
    "grace": {"email": "grace@elsewhere.test", "email_verified": True},
    "eve": {"email": "eve@acme.test", "email_verified": False},
    # Claims the address of the password account the tests' ``user`` holds.
    "alice": {"email": "alice@example.com", "email_verified": True},
}


def install() -> Path:
    """``node_modules`` holding the provider, installed on first use."""
    return npm_package(PACKAGE, HOME)


class OidcProvider:
    """The provider, running; :meth:`stop` ends it."""

    def __init__(self, modules: Path) -> None:
        config = {
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [
                        f"http://127.0.0.1{prefix}/login/{name}/callback"
                        for name in PROVIDER_NAMES
                        for prefix in PREFIXES
                    ],
                }
            ],
            "accounts": ACCOUNTS,
        }
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), str(modules), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError("the OpenID provider did not start")
        self.issuer: str = json.loads(line)["issuer"]

    def tamper(self, claims: dict[str, Any], foreign_key: bool = False) -> None:
        """Make the next ID token carry ``claims`` (re-signed)."""
        body: dict[str, Any] = {"claims": claims, "foreign_key": foreign_key}
        answer = requests.post(self.issuer + "/test/tamper", json=body, timeout=10)
        assert answer.status_code == 204, answer.text

    def rotate_keys(self) -> None:
        """Sign with a new key from now on, published beside the old one."""
        answer = requests.post(
            self.issuer + "/test/tamper", json={"rotate": True}, timeout=10
        )
        assert answer.status_code == 204, answer.text

    def settings(self, name: str = "acme", **extra: str) -> dict[str, str]:
        """The service's settings for this provider under ``name``."""
        prefix = name.upper() + "_"
        return {
            "SIGN_IN_PROVIDERS": name,
            prefix + "ISSUER": self.issuer,
            prefix + "CLIENT_ID": CLIENT_ID,
            prefix + "CLIENT_SECRET": CLIENT_SECRET,
            prefix + "LABEL": name.capitalize() + " ID",
            prefix + "ALLOWED_DOMAINS": "acme.test",
            **{prefix + key: value for key, value in extra.items()},
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


def start_at_provider(
    browser: Browser,
    provider: str = "acme",
    next_path: str | None = None,
    page_path: str = "/login",
) -> str:
    """Press "Continue with ..." on the sign-in page (or "Add ..." on the
    account page); the provider's URL."""
    query = f"?{urlencode({'next': next_path})}" if next_path else ""
    page = browser.get(page_path + query)
    assert page.status_code == 200, page.text
    soup = BeautifulSoup(page.text, "html.parser")
    button = soup.select_one(f"form.provider button[value={provider}]")
    assert button is not None, page.text
    form = button.find_parent("form")
    assert form is not None
    fields = {
        attribute(field, "name"): attribute(field, "value", "")
        for field in form.select("input[type=hidden]")
    }
    started = browser.post(attribute(form, "action"), data=fields)
    assert started.status_code == 303, started.text
    return str(started.headers["Location"])


def sign_in_at_provider(browser: Browser, url: str, login: str) -> str:
    """Follow the provider's pages from ``url``, typing ``login`` (and any
    password) into its sign-in form; the URL it sends the browser back to."""
    for _ in range(12):
        if url.startswith(browser.server.url):
            return url
        answer = browser.get(url)
        if answer.status_code in (302, 303):
            url = urljoin(url, answer.headers["Location"])
            continue
        assert answer.status_code == 200, (url, answer.status_code, answer.text)
        form = BeautifulSoup(answer.text, "html.parser").select_one("form")
        assert form is not None and form.select_one("input[name=login]"), answer.text
        posted = browser.post(
            urljoin(url, attribute(form, "action")),
            data={"prompt": "login", "login": login, "password": "any password"},
        )
        assert posted.status_code in (302, 303), posted.text
        url = urljoin(url, posted.headers["Location"])
    raise AssertionError(f"the provider never sent the browser back: {url}")


def provider_sign_in(
    browser: Browser, login: str, provider: str = "acme", next_path: str | None = None
) -> requests.Response:
    """The whole sign-in through the provider; our callback's answer."""
    url = start_at_provider(browser, provider, next_path)
    return browser.get(sign_in_at_provider(browser, url, login))


def reason_of(page: Any) -> str:
    """The reason code the failure page gives (also the audit line's)."""
    return attribute(select_one(page, "#reason"), "data-reason")


def users(engine: sqlalchemy.Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT email FROM users"))
        return sorted(row.email for row in rows)


def identities(engine: sqlalchemy.Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT u.email, i.issuer, i.subject FROM identities i "
                "JOIN users u ON u.id = i.user_id ORDER BY u.email"
            )
        )
        return [(row.email, row.issuer, row.subject) for row in rows]
