"""Signing in through an identity provider, against a real OpenID provider.

The provider is node-oidc-provider, certified and unmodified, started by the
test set-up (tests/oidc_upstream.py); the browser is driven over HTTP.
"""

from __future__ import annotations

from conftest import LiveServer
from oidc_upstream import OidcProvider, provider_sign_in


def test_a_first_sign_in_from_an_allowed_domain_makes_an_account(
    provider_server: LiveServer, oidc_provider: OidcProvider
) -> None:
    browser = provider_server.browser()

    answer = provider_sign_in(browser, "ada")

    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == provider_server.url + "/account"
    account = browser.get("/account")
    assert account.status_code == 200
    assert "ada@acme.test" in account.text
