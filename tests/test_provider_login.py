"""Signing in through an identity provider, against a real OpenID provider.

The provider is node-oidc-provider, certified and unmodified but for the
one tampering hook its script adds (tests/oidc_upstream.py); the test
set-up starts it. The browser is driven over HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import sqlalchemy
from bs4 import BeautifulSoup
from conftest import LiveServer, make_user
from helpers import select_one
from oidc_upstream import (
    CLIENT_SECRET,
    OidcProvider,
    identities,
    provider_sign_in,
    reason_of,
    sign_in_at_provider,
    start_at_provider,
    users,
)
from test_audit import AuditLog

from app import audit
from app.db import db
from app.users import disable_user, find_by_email


@pytest.fixture
def audit_log() -> Iterator[AuditLog]:
    handler = AuditLog()
    logger = logging.getLogger(audit.log.name)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def callback_with(url: str, **changes: str | None) -> str:
    """The callback URL with query parameters changed (``None``: dropped)."""
    parts = urlsplit(url)
    query: dict[str, str | None] = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    kept = {k: v for k, v in query.items() if v is not None}
    return urlunsplit(parts._replace(query=urlencode(kept)))


def test_the_sign_in_page_offers_each_provider_beside_the_form(
    provider_server: LiveServer,
) -> None:
    page = provider_server.browser().get("/login?next=/account")

    buttons = BeautifulSoup(page.text, "html.parser").select("form.provider button")
    assert [button.text for button in buttons] == ["Continue with Acme ID"]
    assert select_one(page, "form#password-sign-in input[name=password]")


def test_a_first_sign_in_from_an_allowed_domain_makes_an_account(
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
    audit_log: AuditLog,
) -> None:
    browser = provider_server.browser()

    answer = provider_sign_in(browser, "ada", next_path="/account?tab=keys")

    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == provider_server.url + "/account?tab=keys"
    assert "ada@acme.test" in browser.get("/account").text
    assert users(engine) == ["ada@acme.test"]
    # The identity is the provider's subject, never the email.
    assert identities(engine) == [("ada@acme.test", oidc_provider.issuer, "ada")]
    event = audit_log.one("sign_in_succeeded")
    assert (event["method"], event["provider"]) == ("oidc", "acme")
    # Like any sign-in, it leaves this browser a device cookie for the account.
    assert f"device-{event['user_id'][:16]}" in browser.cookies


def test_the_next_sign_in_finds_the_account_by_its_identity(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    provider_sign_in(provider_server.browser(), "ada")

    answer = provider_sign_in(provider_server.browser(), "ada")

    assert answer.status_code == 302
    assert users(engine) == ["ada@acme.test"]


def test_the_email_is_kept_in_lower_case(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    assert provider_sign_in(provider_server.browser(), "ben").status_code == 302
    assert users(engine) == ["ben@acme.test"]


def test_signing_in_rotates_the_session(provider_server: LiveServer) -> None:
    browser = provider_server.browser()
    url = start_at_provider(browser)
    before = browser.cookies.get("session")

    browser.get(sign_in_at_provider(browser, url, "ada"))

    after = browser.cookies.get("session")
    assert before and after and before != after


def test_a_replayed_callback_is_refused(provider_server: LiveServer) -> None:
    browser = provider_server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")
    assert browser.get(callback).status_code == 302

    replayed = browser.get(callback)

    assert replayed.status_code == 400
    assert reason_of(replayed) == "state"


def test_another_browsers_state_is_refused(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    # Login CSRF: the attacker signs in at the provider, then sends the
    # victim's browser to the callback with the attacker's code and state.
    attacker = provider_server.browser()
    callback = sign_in_at_provider(attacker, start_at_provider(attacker), "ada")
    victim = provider_server.browser()

    answer = victim.get(callback)

    assert answer.status_code == 400
    assert reason_of(answer) == "state"
    assert victim.get("/account").status_code == 302  # to the sign-in page
    assert users(engine) == []


@pytest.mark.parametrize(
    "changes",
    [{"state": None}, {"state": "x" * 500}, {"state": "forged"}, {"code": None}],
)
def test_a_callback_without_its_state_is_refused(
    provider_server: LiveServer, changes: dict[str, str | None]
) -> None:
    browser = provider_server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")

    answer = browser.get(callback_with(callback, **changes))

    assert answer.status_code in (400, 502)
    assert answer.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("iss", "reason"), [("http://evil.test", "issuer"), (None, "issuer")]
)
def test_the_callbacks_issuer_must_be_the_providers(
    provider_server: LiveServer, iss: str | None, reason: str, engine: sqlalchemy.Engine
) -> None:
    # RFC 9207: the provider advertises iss, so it must come, and be its own.
    browser = provider_server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")
    assert "iss=" in callback

    answer = browser.get(callback_with(callback, iss=iss))

    assert answer.status_code == 400
    assert reason_of(answer) == reason
    assert users(engine) == []


@pytest.mark.parametrize(
    ("claims", "foreign_key"),
    [
        ({"nonce": "another-sign-ins-nonce"}, False),
        ({"aud": "another-client"}, False),
        ({"aud": ["another-client"], "azp": "mcp-auth-test"}, False),
        ({"iss": "http://127.0.0.1:1"}, False),
        ({"exp": int(time.time()) - 600}, False),
        ({}, True),
    ],
    ids=["nonce", "aud", "aud-with-azp", "iss", "expired", "signature"],
)
def test_a_bad_id_token_is_refused(
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
    audit_log: AuditLog,
    claims: dict[str, Any],
    foreign_key: bool,
) -> None:
    browser = provider_server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")
    oidc_provider.tamper(claims, foreign_key=foreign_key)

    answer = browser.get(callback)

    assert answer.status_code == 400, answer.text
    assert reason_of(answer) == "token"
    assert users(engine) == []
    event = audit_log.one("sign_in_failed")
    assert (event["provider"], event["reason"]) == ("acme", "token")


def test_cancelling_at_the_provider_is_a_page_saying_so(
    provider_server: LiveServer,
) -> None:
    browser = provider_server.browser()
    login_page = browser.request("GET", start_at_provider(browser), follow=True)
    cancel = BeautifulSoup(login_page.text, "html.parser").find(
        "a", string="[ Cancel ]"
    )
    assert cancel is not None, login_page.text
    url = urljoin(login_page.url, str(cancel["href"]))

    answer = browser.get(sign_in_at_provider(browser, url, "unused"))

    assert answer.status_code == 403
    assert reason_of(answer) == "denied"


def test_a_domain_that_is_not_allowed_gets_no_account(
    provider_server: LiveServer, engine: sqlalchemy.Engine, audit_log: AuditLog
) -> None:
    answer = provider_sign_in(provider_server.browser(), "grace")

    assert answer.status_code == 403
    assert reason_of(answer) == "domain"
    assert users(engine) == []
    assert audit_log.one("sign_in_failed")["reason"] == "domain"


def test_an_unverified_email_gets_no_account(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    answer = provider_sign_in(provider_server.browser(), "eve")

    assert answer.status_code == 403
    assert reason_of(answer) == "email_unverified"
    assert users(engine) == []


def test_a_disabled_person_cannot_sign_in_through_the_provider(
    provider_server: LiveServer, audit_log: AuditLog
) -> None:
    provider_sign_in(provider_server.browser(), "ada")
    with provider_server.app.app_context(), db.transaction():
        user = find_by_email("ada@acme.test")
        assert user is not None
        disable_user(user)

    answer = provider_sign_in(provider_server.browser(), "ada")

    assert answer.status_code == 403
    assert reason_of(answer) == "disabled"
    failed = audit_log.one("sign_in_failed")
    assert failed["account"] == str(user.id)
    assert (failed["provider"], failed["reason"]) == ("acme", "disabled")


def test_an_unknown_provider_is_a_not_found_page(provider_server: LiveServer) -> None:
    browser = provider_server.browser()

    for path in ("/login/nope/callback?code=x&state=y", "/login/%00/callback"):
        answer = browser.get(path)
        assert answer.status_code == 404
        assert answer.headers["Content-Type"].startswith("text/html")


def test_an_unreachable_provider_is_a_page_not_a_crash(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> None:
    server = make_server(**oidc_provider.settings(ISSUER="http://127.0.0.1:9"))
    browser = server.browser()
    page = browser.get("/login")
    form = BeautifulSoup(page.text, "html.parser").select_one("form.provider")
    assert form is not None

    answer = browser.post("/login/acme", data=browser.form(page))

    assert answer.status_code == 502
    assert reason_of(answer) == "unavailable"


def test_password_sign_in_off_hides_the_form_and_refuses_it(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> None:
    server = make_server(**oidc_provider.settings(), PASSWORD_SIGN_IN="off")
    person = make_user(server, "carol@example.com")
    browser = server.browser()
    page = browser.get("/login")
    assert "Continue with Acme ID" in page.text
    assert BeautifulSoup(page.text, "html.parser").select("input[name=password]") == []

    answer = browser.post(
        "/login",
        data={
            **browser.form(page),
            "email": person["email"],
            "password": person["password"],
        },
    )

    assert answer.status_code == 403
    assert browser.get("/account").status_code == 302


def test_no_secret_reaches_the_logs_even_at_debug(
    make_server: Callable[..., LiveServer],
    oidc_provider: OidcProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(**oidc_provider.settings(), LOG_LEVEL="DEBUG")
    # Starting the app set the root logger's handlers afresh.
    logging.getLogger().addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    browser = server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    browser.get(callback)
    oidc_provider.tamper({"nonce": "wrong"})
    provider_sign_in(server.browser(), "ada")

    # The test server's access log (werkzeug's) and the test's own requests
    # to it are not the service's; its requests to the provider are.
    ours = server.url.removeprefix("http://")
    records = [
        r
        for r in caplog.records
        if r.name != "werkzeug"
        and not (r.name.startswith("urllib3") and ours in r.getMessage())
    ]
    text = "\n".join(record.getMessage() + str(record.__dict__) for record in records)
    assert any(r.name.startswith("urllib3") for r in records)  # DEBUG was on
    assert CLIENT_SECRET not in text
    assert code not in text
    assert "code_verifier" not in text
    assert "eyJ" not in text  # no ID token, nor any other JWT


def test_sign_in_through_the_provider_is_rate_limited_per_address(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> None:
    server = make_server(**oidc_provider.settings(), LOGIN_RATE_LIMIT="2 per minute")
    browser = server.browser()
    for _ in range(2):
        start_at_provider(browser)
    page = browser.get("/login")

    answer = browser.post("/login/acme", data=browser.form(page))

    assert answer.status_code == 429
    assert answer.headers["Content-Type"].startswith("text/html")
    assert reason_of(answer) == "too_many"


@pytest.mark.parametrize(
    "query",
    [
        "state=a&state=b&code=c",
        "error=%FF%FE&state=x",
        "error=access_denied&error_description=%00%0A",
        "code=" + "c" * 5000 + "&state=s",
        "iss=%E2%80%AE&state=s&code=c",
    ],
)
def test_odd_callbacks_are_pages_not_crashes(
    provider_server: LiveServer, query: str
) -> None:
    answer = provider_server.browser().get("/login/acme/callback?" + query)

    assert answer.status_code == 400
    assert reason_of(answer) == "state"


def test_starting_needs_the_forms_csrf_token(provider_server: LiveServer) -> None:
    browser = provider_server.browser()

    assert browser.post("/login/acme", data={"next": "/account"}).status_code == 400
    assert browser.get("/login/acme").status_code == 405


def test_a_rotated_signing_key_is_fetched_when_first_seen(
    provider_server: LiveServer, oidc_provider: OidcProvider
) -> None:
    # The first sign-in caches the provider's key set (one key).
    assert provider_sign_in(provider_server.browser(), "ada").status_code == 302
    oidc_provider.rotate_keys()

    # Signed with a key id the cached set lacks: the set is fetched again.
    answer = provider_sign_in(provider_server.browser(), "ada")

    assert answer.status_code == 302, answer.text


def test_a_discovery_document_for_another_issuer_is_refused(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> None:
    # The same provider under a spelling its document does not use.
    server = make_server(**oidc_provider.settings(ISSUER=oidc_provider.issuer + "/"))
    browser = server.browser()
    page = browser.get("/login")

    answer = browser.post("/login/acme", data=browser.form(page))

    assert answer.status_code == 502
    assert reason_of(answer) == "unavailable"


def test_failure_pages_speak_chinese_when_asked(provider_server: LiveServer) -> None:
    browser = provider_server.browser()
    browser.headers["Accept-Language"] = "zh-CN,zh;q=0.9"
    page = browser.get("/login")
    assert "使用 Acme ID 继续" in page.text

    answer = browser.get("/login/acme/callback?state=unknown&code=x")

    assert answer.status_code == 400
    assert "登录失败" in answer.text


def test_one_callback_sent_twice_at_once_signs_in_once(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    browser = provider_server.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser), "ada")
    twin = provider_server.browser()
    twin.cookies.update(browser.cookies)
    answers: list[int] = []

    def follow(session: Any) -> None:
        answers.append(session.get(callback).status_code)

    threads = [threading.Thread(target=follow, args=(b,)) for b in (browser, twin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answers) == [302, 400]
    assert users(engine) == ["ada@acme.test"]


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "account"]
)
def test_only_a_local_next_is_followed(
    provider_server: LiveServer, target: str
) -> None:
    answer = provider_sign_in(provider_server.browser(), "ada", next_path=target)

    assert answer.status_code == 302
    assert answer.headers["Location"] == provider_server.url + "/account"


def test_a_deployment_under_a_path_signs_in_and_links_there(
    make_server: Callable[..., LiveServer],
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
) -> None:
    server = make_server(prefix="/prod-api", **oidc_provider.settings())
    browser = server.browser()

    answer = provider_sign_in(browser, "ada")

    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == server.issuer + "/account"
    assert browser.get("/account").status_code == 200
    alice = make_user(server, "alice@example.com")
    linking = server.browser()
    provider_sign_in(linking, "alice")
    linking.login(alice["email"], alice["password"], "/login/link")
    page = linking.get("/login/link")
    assert linking.post("/login/link", data=linking.form(page)).status_code == 302
    assert len(identities(engine)) == 2
