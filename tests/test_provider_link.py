"""Linking a provider's identity to an account, and the account's ways in.

An identity joins an existing account only once the person has signed in to
that account, in the browser that came back from the provider, after it came
back; the account page lists the ways in and keeps the last one. Against the
real OpenID provider the test set-up starts (tests/oidc_upstream.py).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from bs4 import BeautifulSoup
from conftest import LiveServer, make_user
from helpers import select_one
from oidc_upstream import (
    OidcProvider,
    identities,
    provider_sign_in,
    reason_of,
    sign_in_at_provider,
    start_at_provider,
    users,
)
from test_audit import AuditLog
from test_provider_login import audit_log  # noqa: F401


class TestAnExistingAccountWithTheSameEmail:
    """The provider vouches for alice@example.com, who has a password here."""

    def test_it_is_not_taken_over(
        self,
        provider_server: LiveServer,
        engine: sqlalchemy.Engine,
    ) -> None:
        make_user(provider_server, "alice@example.com")
        browser = provider_server.browser()

        answer = provider_sign_in(browser, "alice")

        assert answer.status_code == 200
        assert select_one(answer, "#link-needed")
        assert browser.get("/account").status_code == 302  # not signed in
        assert identities(engine) == []

    def test_it_is_linked_after_signing_in_to_it(
        self,
        provider_server: LiveServer,
        engine: sqlalchemy.Engine,
        oidc_provider: OidcProvider,
        audit_log: AuditLog,  # noqa: F811
    ) -> None:
        alice = make_user(provider_server, "alice@example.com")
        browser = provider_server.browser()
        provider_sign_in(browser, "alice", next_path="/account")

        signed_in = browser.login(alice["email"], alice["password"], "/login/link")
        assert signed_in.headers["Location"] == provider_server.url + "/login/link"
        page = browser.get("/login/link")
        assert page.status_code == 200
        linked = browser.post("/login/link", data=browser.form(page))

        assert linked.status_code == 302
        assert linked.headers["Location"] == provider_server.url + "/account"
        assert identities(engine) == [
            ("alice@example.com", oidc_provider.issuer, "alice")
        ]
        assert audit_log.one("identity_linked")["provider"] == "acme"
        # From now on the provider signs her in to her account.
        again = provider_sign_in(provider_server.browser(), "alice")
        assert again.status_code == 302
        assert users(engine) == ["alice@example.com"]

    def test_a_sign_in_from_before_proves_nothing(
        self, provider_server: LiveServer, engine: sqlalchemy.Engine
    ) -> None:
        alice = make_user(provider_server, "alice@example.com")
        browser = provider_server.browser()
        browser.login(alice["email"], alice["password"])
        # "Add Acme ID" on the account page.
        url = start_at_provider(browser, page_path="/account")
        offered = browser.get(sign_in_at_provider(browser, url, "alice"))
        assert offered.status_code == 200 and select_one(offered, "#link-needed")

        again = browser.get("/login/link")

        assert again.status_code == 302
        assert again.headers["Location"].endswith("/login?next=%2Flogin%2Flink")
        assert browser.get("/account").status_code == 302  # signed out
        browser.login(alice["email"], alice["password"], "/login/link")
        page = browser.get("/login/link")
        assert browser.post("/login/link", data=browser.form(page)).status_code == 302
        assert len(identities(engine)) == 1

    def test_another_browser_cannot_link_it(
        self, provider_server: LiveServer, engine: sqlalchemy.Engine
    ) -> None:
        alice = make_user(provider_server, "alice@example.com")
        provider_sign_in(provider_server.browser(), "alice")
        owner = provider_server.browser()
        owner.login(alice["email"], alice["password"])

        assert owner.get("/login/link").status_code == 404
        assert owner.post("/login/link", data={}).status_code in (400, 404)
        assert identities(engine) == []

    def test_another_account_cannot_take_it(
        self, provider_server: LiveServer, engine: sqlalchemy.Engine
    ) -> None:
        make_user(provider_server, "alice@example.com")
        mallory = make_user(provider_server, "mallory@example.com")
        browser = provider_server.browser()
        provider_sign_in(browser, "alice")

        browser.login(mallory["email"], mallory["password"])
        page = browser.get("/login/link")

        assert page.status_code == 403
        assert identities(engine) == []


def _identity_ids(page: Any) -> list[str]:
    soup = BeautifulSoup(page.text, "html.parser")
    return [str(item["data-identity"]) for item in soup.select("li.identity")]


def test_the_account_page_keeps_the_last_way_in(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    browser = provider_server.browser()
    provider_sign_in(browser, "ada")
    page = browser.get("/account")
    (identity_id,) = _identity_ids(page)
    assert "Acme ID (ada@acme.test)" in select_one(page, "li.identity").text
    # No password and no other identity: no button, and the route refuses.
    assert not select_one(page, "li.identity").select("button")
    path = f"/account/identities/{identity_id}/remove"

    refused = browser.post(path, data=browser.form(page))

    assert refused.status_code == 409
    assert len(identities(engine)) == 1


def _link_alice(server: LiveServer) -> tuple[Any, dict[str, str]]:
    """Alice's password account, with the provider's identity linked."""
    alice = make_user(server, "alice@example.com")
    browser = server.browser()
    provider_sign_in(browser, "alice")
    browser.login(alice["email"], alice["password"], "/login/link")
    page = browser.get("/login/link")
    assert browser.post("/login/link", data=browser.form(page)).status_code == 302
    return browser, alice


def test_an_identity_is_removed_while_the_password_remains(
    provider_server: LiveServer,
    engine: sqlalchemy.Engine,
    audit_log: AuditLog,  # noqa: F811
) -> None:
    browser, _ = _link_alice(provider_server)
    page = browser.get("/account")
    (identity_id,) = _identity_ids(page)

    removed = browser.post(
        f"/account/identities/{identity_id}/remove", data=browser.form(page)
    )

    assert removed.status_code == 302
    assert identities(engine) == []
    assert audit_log.one("identity_removed")["identity_id"] == identity_id
    # The provider no longer signs anyone in to the account.
    again = provider_sign_in(provider_server.browser(), "alice")
    assert again.status_code == 200 and select_one(again, "#link-needed")


def test_nobody_removes_anothers_identity(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    alice_browser, _ = _link_alice(provider_server)
    (identity_id,) = _identity_ids(alice_browser.get("/account"))
    mallory = make_user(provider_server, "mallory@example.com")
    browser = provider_server.browser()
    browser.login(mallory["email"], mallory["password"])
    page = browser.get("/account")

    for bad in (identity_id, "not-a-uuid"):
        answer = browser.post(
            f"/account/identities/{bad}/remove", data=browser.form(page)
        )
        assert answer.status_code == 404
    assert len(identities(engine)) == 1


def test_a_way_in_is_added_from_the_account_page(
    provider_server: LiveServer, engine: sqlalchemy.Engine, oidc_provider: OidcProvider
) -> None:
    # Whatever email the provider gives: the person is signed in here, asks
    # to add the provider, then proves the account theirs once more.
    carol = make_user(provider_server, "carol@example.com")
    browser = provider_server.browser()
    browser.login(carol["email"], carol["password"])
    url = start_at_provider(browser, page_path="/account")

    offered = browser.get(sign_in_at_provider(browser, url, "ada"))

    assert offered.status_code == 200 and select_one(offered, "#link-needed")
    assert browser.get("/login/link").status_code == 302
    browser.login(carol["email"], carol["password"], "/login/link")
    page = browser.get("/login/link")
    assert browser.post("/login/link", data=browser.form(page)).status_code == 302
    assert identities(engine) == [("carol@example.com", oidc_provider.issuer, "ada")]
    # No account was made for the provider's email.
    assert users(engine) == ["carol@example.com"]


def test_an_identity_of_another_account_is_not_added(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    provider_sign_in(provider_server.browser(), "ada")
    carol = make_user(provider_server, "carol@example.com")
    browser = provider_server.browser()
    browser.login(carol["email"], carol["password"])
    url = start_at_provider(browser, page_path="/account")

    answer = browser.get(sign_in_at_provider(browser, url, "ada"))

    assert answer.status_code == 409
    assert reason_of(answer) == "identity_taken"
    # Still Carol, and Ada's identity still Ada's.
    assert "carol@example.com" in browser.get("/account").text
    assert [row[0] for row in identities(engine)] == ["ada@acme.test"]
