"""Login limits are no lockout weapon: OWASP device cookies (§8)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import sqlalchemy
from conftest import LiveServer, make_user
from helpers import Browser, select_one, soup

from app.device_cookies import cookie_name, encode

LIMIT = {"TRUSTED_PROXY_HOPS": "1", "LOGIN_RATE_LIMIT": "10 per minute"}
HOME = {"X-Forwarded-For": "198.51.100.7"}


def attempt(
    browser: Browser, email: str, password: str, headers: dict | None = None
) -> requests.Response:
    """Fill in and submit the login form as a person would."""
    page = browser.get("/login", headers=headers)
    assert page.status_code == 200, page.text[:500]
    form = {**browser.form(page), "email": email, "password": password}
    return browser.post("/login", data=form, headers=headers)


def stranger(live: Any, email: str, password: str, headers: dict) -> int:
    """One attempt from a browser of its own; the status it got."""
    with live.browser() as browser:
        return attempt(browser, email, password, headers).status_code


def address(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{n}"}


def case_variants(email: str, count: int) -> list[str]:
    """``count`` spellings of one address, differing only in letter case."""
    return [
        "".join(c.upper() if n >> i & 1 else c for i, c in enumerate(email))
        for n in range(count)
    ]


def sign_out(browser: Browser) -> None:
    page = browser.get("/account")
    assert browser.post("/logout", data=browser.form(page)).status_code == 302


def device_cookies(browser: Browser) -> list:
    return [c for c in browser.cookies if "device-" in c.name]


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(**LIMIT)


@pytest.fixture
def owner(live: Any, user: dict[str, str]) -> Iterator[Browser]:
    """The owner's browser, signed in once from home and then signed out."""
    with live.browser() as browser:
        assert (
            attempt(browser, user["email"], user["password"], HOME).status_code == 302
        )
        sign_out(browser)
        yield browser


def spray(live: Any, email: str, count: int = 12, first_address: int = 1) -> list[int]:
    """Wrong passwords for case variants of ``email``, each from its own address."""
    return [
        stranger(live, variant, "wrong-password", address(first_address + n))
        for n, variant in enumerate(case_variants(email, count))
    ]


# --- The attack ---------------------------------------------------------------


def test_strangers_cannot_lock_the_owner_out_of_a_known_browser(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    statuses = spray(live, user["email"])

    assert statuses == [401] * 9 + [429] * 3  # the owner's sign-in spent one
    response = attempt(owner, user["email"], user["password"], HOME)
    assert response.status_code == 302
    assert owner.get("/account").status_code == 200


def test_strangers_at_the_owners_address_cannot_lock_the_owner_out(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    for variant in case_variants(user["email"], 12):
        stranger(live, variant, "wrong-password", HOME)

    assert stranger(live, "x@example.com", "wrong", HOME) == 429
    assert attempt(owner, user["email"], user["password"], HOME).status_code == 302


def test_a_browser_without_a_device_cookie_stays_limited(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    spray(live, user["email"])

    # Guessing stays bounded however many addresses are used, the right
    # password included, since nothing tells a guess from the owner.
    later = spray(live, user["email"], count=5, first_address=100)
    fresh = stranger(live, user["email"], user["password"], address(200))

    assert later == [429] * 5
    assert fresh == 429


def test_the_owner_keeps_signing_in_as_the_attack_goes_on(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    spray(live, user["email"])

    for round_ in range(3):
        response = attempt(owner, user["email"], user["password"], HOME)
        assert response.status_code == 302, round_
        sign_out(owner)


# --- What a browser that is paused is told --------------------------------------


def pause_message(response: Any) -> str:
    assert response.status_code == 429, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/html")
    assert int(response.headers["Retry-After"]) > 0
    page = soup(response)
    assert page.select_one("form input[name=password]") is not None
    return select_one(page, "p.error").get_text(" ", strip=True)


def test_a_new_browser_paused_by_strangers_is_told_the_ways_in(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    spray(live, user["email"])

    with live.browser() as browser:
        message = pause_message(
            attempt(browser, user["email"], user["password"], address(77))
        )

    assert "too many sign-in attempts for this account or from this network" in (
        message
    )
    assert "perhaps by someone else" in message
    assert "A browser or device you have signed in with before" in message
    assert "try again in 1 minute." in message
    # And the way in it names does work.
    assert attempt(owner, user["email"], user["password"], HOME).status_code == 302


def test_the_wait_named_is_the_limits_window(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(TRUSTED_PROXY_HOPS="1", LOGIN_RATE_LIMIT="2 per 10 minutes")
    for n in range(2):
        stranger(live, user["email"], "wrong-password", address(n + 1))

    with live.browser() as browser:
        message = pause_message(
            attempt(browser, user["email"], user["password"], address(9))
        )

    assert "try again in 10 minutes." in message


def test_the_pause_is_explained_in_chinese(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    spray(live, user["email"])
    chinese = {**address(78), "Accept-Language": "zh-CN"}

    with live.browser() as browser:
        message = pause_message(
            attempt(browser, user["email"], user["password"], chinese)
        )

    assert "登录尝试过多" in message
    assert "登录过的浏览器" in message
    assert "1 分钟" in message


def test_a_device_that_spent_its_own_budget_is_told_so(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    for _ in range(10):
        attempt(owner, user["email"], "wrong-password", HOME)

    message = pause_message(attempt(owner, user["email"], "wrong-password", HOME))

    assert "too many sign-in attempts from this browser" in message
    assert "try again in 1 minute." in message.lower()


# --- Cookies that earn nothing ------------------------------------------------


def transplanted(live: Any, user: dict[str, str], value: str) -> Browser:
    """A fresh browser carrying ``value`` as the owner's device cookie."""
    browser = live.browser()
    with live.app.app_context():
        name = cookie_name(user["id"])  # the account's id
    browser.cookies.set(name, value, domain="127.0.0.1", path="/login")
    return browser


def owners_cookie(owner: Any) -> str:
    [cookie] = device_cookies(owner)
    return cookie.value


def another_accounts_cookie(
    live: Any, user: dict[str, str], owner: Any, make_server: Callable[..., LiveServer]
) -> str:
    mallory = make_user(live, "mallory@example.com")
    with live.browser() as browser:
        attempt(browser, mallory["email"], mallory["password"], address(150))
        return owners_cookie(browser)


def tampered_cookie(
    live: Any, user: dict[str, str], owner: Any, make_server: Callable[..., LiveServer]
) -> str:
    # A new nonce, as if to get a fresh budget, under the old signature.
    payload, signature = owners_cookie(owner).rsplit(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["nonce"] = secrets.token_urlsafe(16)
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


def forged_cookie(
    live: Any, user: dict[str, str], owner: Any, make_server: Callable[..., LiveServer]
) -> str:
    other = make_server(**LIMIT, SECRET_KEY=secrets.token_urlsafe(32))
    with other.browser() as browser:
        assert (
            attempt(browser, user["email"], user["password"], HOME).status_code == 302
        )
        return owners_cookie(browser)


def expired_cookie(
    live: Any, user: dict[str, str], owner: Any, make_server: Callable[..., LiveServer]
) -> str:
    with live.app.app_context():
        return encode(user["id"], secrets.token_urlsafe(16), int(time.time()) - 1)


@pytest.mark.parametrize(
    "make_cookie",
    [another_accounts_cookie, tampered_cookie, forged_cookie, expired_cookie],
    ids=["another account", "tampered", "signed with another key", "expired"],
)
def test_a_bad_device_cookie_earns_no_budget(
    live: Any,
    owner: Any,
    user: dict[str, str],
    make_server: Callable[..., LiveServer],
    make_cookie: Any,
) -> None:
    value = make_cookie(live, user, owner, make_server)
    spray(live, user["email"])

    with transplanted(live, user, value) as browser:
        response = attempt(browser, user["email"], user["password"], address(210))

    assert response.status_code == 429


def test_the_owners_cookie_is_what_earns_the_budget(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    spray(live, user["email"])

    with transplanted(live, user, owners_cookie(owner)) as browser:
        response = attempt(browser, user["email"], user["password"], address(210))

    assert response.status_code == 302


def test_an_attackers_own_device_cookie_earns_no_budget_for_others(
    live: Any, owner: Any, user: dict[str, str], other_user: dict[str, str]
) -> None:
    with live.browser() as attacker:
        attempt(attacker, other_user["email"], other_user["password"], address(150))
        assert device_cookies(attacker)
        sign_out(attacker)
        spray(live, user["email"])

        response = attempt(attacker, user["email"], user["password"], address(150))

    assert response.status_code == 429


def test_the_device_cookie_names_the_account_not_its_email(
    live: Any, owner: Any, user: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE users SET email = 'alice@example.org'")
        )
    spray(live, "alice@example.org")

    response = attempt(owner, "Alice@example.org", user["password"], HOME)

    assert response.status_code == 302


# --- The device's own budget --------------------------------------------------


def test_wrong_passwords_on_the_owners_device_spend_only_its_budget(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    statuses = [
        attempt(owner, user["email"], "wrong-password", HOME).status_code
        for _ in range(11)
    ]

    assert statuses == [401] * 10 + [429]
    # Neither the account's shared budget nor the address's was touched.
    assert stranger(live, user["email"], user["password"], address(9)) == 302
    assert stranger(live, user["email"], user["password"], HOME) == 302


def test_a_spent_device_cookie_counts_as_no_cookie(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    for _ in range(11):
        attempt(owner, user["email"], "wrong-password", HOME)

    # Its nonce is locked: further guesses spend the shared budget (401 while
    # it lasts) instead of being refused on the device's full window...
    shared = [
        attempt(owner, user["email"], "wrong-password", address(n)).status_code
        for n in range(1, 10)
    ]
    assert shared == [401] * 9  # the owner's first sign-in spent the tenth
    # ...so the account is now limited for everyone without a good cookie.
    assert stranger(live, user["email"], user["password"], address(50)) == 429


def test_signing_in_renews_the_device_cookie(
    live: Any, owner: Any, user: dict[str, str]
) -> None:
    before = owners_cookie(owner)

    assert attempt(owner, user["email"], user["password"], HOME).status_code == 302

    after = owners_cookie(owner)
    assert after != before


# --- The cookie itself --------------------------------------------------------


def device_cookie_header(response: Any) -> str:
    cookies = response.raw.headers.getlist("Set-Cookie")
    [header] = [c for c in cookies if "device-" in c.split("=")[0]]
    return header


def attributes_of(header: str) -> dict[str, str]:
    pairs = [part.strip().partition("=") for part in header.split(";")[1:]]
    return {name.lower(): value for name, _, value in pairs}


def test_device_cookie_is_http_only_lax_long_lived_and_scoped_to_login(
    live: Any, user: dict[str, str]
) -> None:
    with live.browser() as browser:
        response = attempt(browser, user["email"], user["password"], HOME)

    header = device_cookie_header(response)
    attributes = attributes_of(header)
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/login"
    assert int(attributes["max-age"]) >= 30 * 24 * 3600
    assert "secure" not in attributes  # the test issuer is plain http
    assert user["email"] not in header
    assert user["email"] not in header.lower()


def test_device_cookie_is_secure_under_an_https_issuer_with_a_path(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    live = make_server(ISSUER="https://auth.example.com/sso")
    with live.browser() as browser:
        page = browser.get("/login")
        # The Secure session cookie never travels back over the test's plain
        # http, so it is sent by hand.
        [session] = [
            c.split(";")[0]
            for c in page.raw.headers.getlist("Set-Cookie")
            if "session=" in c
        ]
        form = {
            **browser.form(page),
            "email": user["email"],
            "password": user["password"],
        }
        response = browser.post("/login", data=form, headers={"Cookie": session})

    assert response.status_code == 302
    header = device_cookie_header(response)
    assert header.startswith("__Secure-device-")
    attributes = attributes_of(header)
    assert "secure" in attributes
    assert "httponly" in attributes
    assert attributes["path"] == "/sso/login"


# --- Faults -------------------------------------------------------------------


@pytest.mark.parametrize("known_browser", [True, False], ids=["known", "fresh"])
def test_sign_in_without_redis_is_a_clear_503_page(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    user: dict[str, str],
    known_browser: bool,
) -> None:
    live = make_server(**LIMIT, REDIS_URL=doomed_redis.url)
    with live.browser() as browser:
        if known_browser:
            attempt(browser, user["email"], user["password"], HOME)
            sign_out(browser)
            assert device_cookies(browser)
        page = browser.get("/login")
        doomed_redis.stop()
        form = {**browser.form(page), "email": user["email"], "password": "x"}
        response = browser.post("/login", data=form, headers=HOME)

    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in response.text
