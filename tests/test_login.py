"""Signing in: the form, one generic error, limits, sessions and page headers (§8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import sqlalchemy
from bs4 import BeautifulSoup
from conftest import LiveServer, make_user
from helpers import (
    Browser,
    attribute,
    authorize_params,
    pkce_pair,
    register_client,
    select_one,
    statements,
)


def attempt(
    browser: Browser, email: str, password: str, headers: dict | None = None
) -> requests.Response:
    """Fill in and submit the login form as a person would."""
    page = browser.get("/login", headers=headers)
    assert page.status_code == 200, page.text[:500]
    form = {**browser.form(page), "email": email, "password": password}
    return browser.post("/login", data=form, headers=headers)


def is_signed_in(browser: Browser) -> bool:
    """A signed-in visitor is sent on from the login page; others see the form."""
    return browser.get("/login").status_code == 302


def visible_text(response: Any) -> str:
    return " ".join(BeautifulSoup(response.text, "html.parser").get_text().split())


# --- The form -----------------------------------------------------------------


def test_login_page_is_a_form_with_email_password_and_csrf(browser: Browser) -> None:
    response = browser.get("/login")

    assert response.status_code == 200
    form = select_one(response, "form[method=post]")
    assert form.select_one("input[name=email]")
    assert form.select_one("input[name=password][type=password]")
    assert attribute(select_one(form, "input[type=hidden][name=csrf_token]"), "value")


def test_sign_in_returns_to_a_local_next(
    browser: Browser, server: LiveServer, user: dict[str, str]
) -> None:
    target = "/authorize?client_id=abc&state=x%20y"

    response = browser.login(user["email"], user["password"], next_path=target)

    assert response.status_code == 302
    assert response.headers["Location"] == server.issuer + target
    assert is_signed_in(browser)


def test_sign_in_without_next_stays_on_the_issuer(
    browser: Browser, server: LiveServer, user: dict[str, str]
) -> None:
    response = browser.login(user["email"], user["password"])

    assert response.status_code == 302
    assert response.headers["Location"].startswith(server.issuer + "/")


def test_email_is_not_case_sensitive(browser: Browser, user: dict[str, str]) -> None:
    response = attempt(browser, user["email"].upper(), user["password"])

    assert response.status_code == 302


@pytest.mark.parametrize("password", ["right", "wrong"])
def test_an_attempt_reads_the_account_once(
    server: LiveServer, browser: Browser, user: dict[str, str], password: str
) -> None:
    # The limits and the password check share one look-up of the account.
    # A failure also asks, every 10 minutes per process, whether hashes of
    # an older cost remain (app/users.py): asked once here, before counting.
    page = browser.get("/login")
    data = {**browser.form(page), "email": "nobody@example.com", "password": "x"}
    assert browser.post("/login", data=data).status_code == 401
    page = browser.get("/login")
    typed = user["password"] if password == "right" else "wrong-password"
    form = {**browser.form(page), "email": user["email"], "password": typed}

    with statements(server) as cost:
        response = browser.post("/login", data=form)

    assert response.status_code == (302 if password == "right" else 401)
    assert cost == ["SELECT"]


# --- One generic error for every failure --------------------------------------


def test_failures_all_say_the_same_thing(
    server: LiveServer,
    user: dict[str, str],
    other_user: dict[str, str],
    engine: sqlalchemy.Engine,
) -> None:
    # Someone who signs in only through an identity provider has no password.
    upstream_only = make_user(server, "bob@example.com")
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET is_active = false WHERE email = :email"),
            {"email": other_user["email"]},
        )
        connection.execute(
            sqlalchemy.text("UPDATE users SET password_hash = NULL WHERE id = :id"),
            {"id": upstream_only["id"]},
        )
    attempts = {
        "wrong password": (user["email"], user["password"] + "x"),
        "unknown email": ("nobody@example.com", user["password"]),
        "disabled account": (other_user["email"], other_user["password"]),
        "empty password": (user["email"], ""),
        "account without a password": (upstream_only["email"], ""),
        "no password, one typed": (upstream_only["email"], upstream_only["password"]),
    }
    answers = {}
    for kind, (email, password) in attempts.items():
        browser = server.browser()
        response = attempt(browser, email, password)
        assert response.status_code not in (200, 302), kind
        assert not is_signed_in(browser), kind
        answers[kind] = (response.status_code, visible_text(response))

    assert len(set(answers.values())) == 1, answers
    # ...and it is an error message, not just the blank form again.
    assert answers["wrong password"][1] != visible_text(server.browser().get("/login"))


# --- Rate limits, per address and per account ---------------------------------


def test_failed_logins_are_limited_per_address(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute")
    browser = live.browser()
    for n in range(3):
        failed = attempt(browser, f"guess{n}@example.com", "wrong-password")
        assert failed.status_code not in (302, 429)

    response = attempt(browser, user["email"], user["password"])

    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("text/html")
    assert not is_signed_in(browser)


def test_spoofed_forwarded_for_does_not_escape_the_address_limit(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="0")
    browser = live.browser()
    for n in range(3):
        spoofed = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        attempt(browser, f"guess{n}@example.com", "wrong-password", spoofed)

    response = attempt(
        browser, user["email"], user["password"], {"X-Forwarded-For": "203.0.113.9"}
    )

    assert response.status_code == 429


def test_failed_logins_are_limited_per_account(
    make_server: Callable[..., LiveServer],
    user: dict[str, str],
    other_user: dict[str, str],
) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1")
    for n in range(3):
        address = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        response = attempt(live.browser(), user["email"], "wrong-password", address)
        assert response.status_code not in (302, 429)

    fresh_address = {"X-Forwarded-For": "203.0.113.50"}
    locked = attempt(live.browser(), user["email"], user["password"], fresh_address)
    other = attempt(
        live.browser(), other_user["email"], other_user["password"], fresh_address
    )

    assert locked.status_code == 429
    assert other.status_code == 302


def test_account_limit_ignores_email_case(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1")
    for n, email in enumerate(
        [user["email"], user["email"].upper(), user["email"].title()]
    ):
        address = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        attempt(live.browser(), email, "wrong-password", address)

    response = attempt(
        live.browser(),
        user["email"],
        user["password"],
        {"X-Forwarded-For": "203.0.113.50"},
    )

    assert response.status_code == 429


def test_guessing_at_an_email_with_no_account_is_limited_too(make_server: Any) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1")
    spellings = ["nobody@example.com", "NOBODY@example.com", " Nobody@Example.com"]
    for n, email in enumerate(spellings):
        address = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        assert attempt(live.browser(), email, "guess", address).status_code == 401

    fresh_address = {"X-Forwarded-For": "203.0.113.50"}
    again = attempt(live.browser(), "nobody@example.com", "guess", fresh_address)
    another = attempt(live.browser(), "somebody@example.com", "guess", fresh_address)

    assert again.status_code == 429
    assert another.status_code == 401


def test_the_account_limit_follows_the_account_not_its_email(
    make_server: Any, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    live = make_server(LOGIN_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1")
    for n in range(3):
        address = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        attempt(live.browser(), user["email"], "wrong-password", address)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET email = 'alice@example.org'")
        )

    response = attempt(
        live.browser(),
        "alice@example.org",
        user["password"],
        {"X-Forwarded-For": "203.0.113.50"},
    )

    assert response.status_code == 429


# --- CSRF ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "csrf_token",
    [None, "", "forged", "IjEyMyI.ZzZzZw.aaaaaaaaaaaaaaaaaaaaaaaaaaa"],
    ids=["missing", "empty", "garbage", "well-formed but forged"],
)
def test_login_without_a_valid_csrf_token_is_refused(
    browser: Browser, user: dict[str, str], csrf_token: str | None
) -> None:
    browser.get("/login")
    form = {"email": user["email"], "password": user["password"]}
    if csrf_token is not None:
        form["csrf_token"] = csrf_token

    response = browser.post("/login", data=form)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Location" not in response.headers
    assert not is_signed_in(browser)


def test_login_with_another_visitors_csrf_token_is_refused(
    server: LiveServer, browser: Browser, user: dict[str, str]
) -> None:
    other = server.browser()
    foreign = other.form(other.get("/login"))
    browser.get("/login")

    response = browser.post(
        "/login",
        data={**foreign, "email": user["email"], "password": user["password"]},
    )

    assert response.status_code == 400
    assert not is_signed_in(browser)


# --- Sessions -----------------------------------------------------------------


def test_signing_in_starts_a_fresh_session(
    server: LiveServer, browser: Browser, user: dict[str, str]
) -> None:
    before = browser.form(browser.get("/login"))
    planted = browser.cookies.copy()

    assert browser.login(user["email"], user["password"]).status_code == 302

    # A CSRF token issued before signing in is void afterwards...
    stale = browser.post(
        "/login",
        data={**before, "email": user["email"], "password": user["password"]},
    )
    assert stale.status_code == 400
    # ...and whoever planted the pre-login cookie is not signed in by it.
    attacker = server.browser()
    attacker.cookies.update(planted)
    assert not is_signed_in(attacker)
    assert is_signed_in(browser)


def session_cookie_header(response: Any) -> str:
    cookies = response.raw.headers.getlist("Set-Cookie")
    [header] = [c for c in cookies if "session=" in c.split(";")[0]]
    return header


def test_session_cookie_is_http_only_and_same_site_lax(
    browser: Browser, user: dict[str, str]
) -> None:
    response = browser.login(user["email"], user["password"])

    attributes = [a.strip().lower() for a in session_cookie_header(response).split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # the test issuer is plain http


def test_session_cookie_is_secure_when_the_issuer_is_https(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(ISSUER="https://auth.example.com")

    response = live.browser().get("/login")

    attributes = [a.strip().lower() for a in session_cookie_header(response).split(";")]
    assert "secure" in attributes
    assert "httponly" in attributes
    assert "samesite=lax" in attributes


# --- Pages deny framing; language follows Accept-Language ---------------------


def assert_not_frameable(response: Any) -> None:
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path", ["/login", "/authorize", "/authorize?client_id=unknown"]
)
def test_pages_deny_framing(browser: Browser, path: str) -> None:
    assert_not_frameable(browser.get(path))


def test_failed_login_page_denies_framing(
    browser: Browser, user: dict[str, str]
) -> None:
    assert_not_frameable(attempt(browser, user["email"], "wrong-password"))


def test_consent_page_denies_framing(browser: Browser, user: dict[str, str]) -> None:
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    params = authorize_params(client, pkce_pair()[1])

    response = browser.get("/authorize", params=params)

    assert response.status_code == 200
    assert_not_frameable(response)


@pytest.mark.parametrize(
    ("accept_language", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("zh", "zh"),
        ("en-US,en;q=0.9", "en"),
        (None, "en"),
        ("fr-FR", "en"),
    ],
)
def test_page_language_follows_accept_language(
    browser: Browser, accept_language: Any, lang: Any
) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}

    response = browser.get("/login", headers=headers)

    html = select_one(response, "html")
    assert attribute(html, "lang").split("-")[0].split("_")[0] == lang


def test_parallel_guesses_cannot_slip_under_the_limit(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    live = make_server(LOGIN_RATE_LIMIT="5 per minute")
    browsers = [live.browser() for _ in range(20)]
    forms = [b.form(b.get("/login")) for b in browsers]

    def guess(n: int) -> int:
        data = {**forms[n], "email": user["email"], "password": f"guess-{n}"}
        return browsers[n].post("/login", data=data).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(guess, range(20)))

    assert statuses.count(429) == 15, statuses


def test_signing_out_ends_the_session_even_for_a_copied_cookie(
    server: LiveServer, browser: Browser, user: dict[str, str]
) -> None:
    browser.login(user["email"], user["password"])
    assert browser.get("/account").status_code == 200
    copied = server.browser()
    copied.cookies.update(browser.cookies)

    page = browser.get("/account")
    assert browser.post("/logout", data=browser.form(page)).status_code == 302

    assert copied.get("/account").status_code == 302
    assert not is_signed_in(copied)


def test_passwords_are_hashed_at_owasp_cost_and_older_hashes_are_redone_at_sign_in(
    browser: Browser, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    from argon2 import PasswordHasher
    from argon2.profiles import RFC_9106_LOW_MEMORY

    def stored() -> str:
        with engine.connect() as connection:
            return connection.execute(
                sqlalchemy.text("SELECT password_hash FROM users WHERE id = :id"),
                {"id": user["id"]},
            ).scalar_one()

    # OWASP's minimum: 19 MiB, two passes, one lane.
    assert stored().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    # A hash from before (argon2-cffi's default, 64 MiB) still lets them in,
    # and is replaced by one at today's cost.
    older = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash(user["password"])
    assert older.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET password_hash = :h WHERE id = :id"),
            {"h": older, "id": user["id"]},
        )
    assert browser.login(user["email"], user["password"]).status_code == 302
    assert stored().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert browser.get("/account").status_code == 200
