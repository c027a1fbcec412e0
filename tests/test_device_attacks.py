"""Attacks on the device authorization grant (RFC 8628), over HTTP.

Each test is a hole an attacker's review found, now closed: a guessing
budget outrun by codes in flight at once, a consent left behind by an
approval the page called failed, a device approval that makes a client's
unseen redirect URI a place to send people, a poll naming another resource
that spent the approval, and links from other sites spending a person's
guessing budget.
Where a race decides the outcome, the moment it needs is widened in this
process (the live server runs in it), so the outcome does not depend on luck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from conftest import LiveServer
from helpers import Browser, attribute, client_post, pkce_pair, select_one

from app.oauth import device_codes

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: A redirect URI no person approving a device is ever shown.
ELSEWHERE = "https://elsewhere.example/cb"
#: How long each widened step of a race waits, seconds.
WIDENED = 0.3


def register_device_client(browser: Browser, **metadata: Any) -> dict[str, Any]:
    body = {
        "grant_types": [DEVICE_GRANT],
        "token_endpoint_auth_method": "none",
        **metadata,
    }
    response = browser.post("/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def start(browser: Browser, client: dict[str, Any]) -> dict[str, Any]:
    response = client_post(browser, "/device_authorization", client, {})
    assert response.status_code == 200, response.text
    return response.json()


def enter(browser: requests.Session, url: str, user_code: str) -> requests.Response:
    """Open the link the device shows and confirm the code it fills in."""
    query = urlencode({"user_code": user_code})
    page = browser.get(f"{url}/device?{query}", allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.text[:500]
    fields = select_one(page, "#device-code-form").select("input")
    data = {attribute(f, "name"): attribute(f, "value", "") for f in fields}
    return browser.post(f"{url}/device", data=data, allow_redirects=False, timeout=30)


def consent_form(browser: Browser, user_code: str) -> dict[str, str]:
    page = enter(browser, browser.server.url, user_code)
    assert page.status_code == 200, page.text[:500]
    fields = select_one(page, "#device-consent-form").select("input[type=hidden]")
    return {attribute(f, "name"): attribute(f, "value", "") for f in fields}


def signed_in_as(live: LiveServer, person: dict[str, str]) -> Browser:
    browser = live.browser()
    assert browser.login(person["email"], person["password"]).status_code == 302
    return browser


def slowed(function: Callable[..., Any], calls: list[Any]) -> Callable[..., Any]:
    """``function``, recording each call and taking WIDENED seconds longer."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        time.sleep(WIDENED)
        return function(*args, **kwargs)

    return slow


def test_wrong_codes_sent_at_once_get_no_more_lookups_than_the_budget(
    make_server: Callable[..., LiveServer],
    user: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The budget is read (`waiting`) before the lookup and spent after it:
    # every request in flight between the two is looked up, so a guesser
    # sending many at once gets that many guesses, whatever the limit says.
    live = make_server(USER_CODE_RATE_LIMIT="3 per 15 minutes")
    cookies = signed_in_as(live, user).cookies
    looked_up: list[Any] = []
    monkeypatch.setattr(device_codes, "find", slowed(device_codes.find, looked_up))
    guesses = [f"BBBB-BB{a}{b}" for a in "CDF" for b in "GHJK"]

    def guess(code: str) -> int:
        with requests.Session() as session:
            session.cookies.update(cookies)
            return enter(session, live.url, code).status_code

    with ThreadPoolExecutor(len(guesses)) as pool:
        statuses = list(pool.map(guess, guesses))

    assert set(statuses) <= {400, 429}
    assert len(looked_up) <= 3, f"{len(looked_up)} codes looked up, budget 3"


def test_a_person_told_their_approval_failed_is_left_no_consent(
    server: LiveServer,
    browser: Browser,
    user: dict[str, str],
    other_user: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two people open the same code (one of them was sent it) and approve at
    # once. Were the consent written before the code is claimed, the one who
    # loses would be shown "This code is not valid" yet hold a live consent
    # to the client: on the account page, trusted for redirects, and able to
    # narrow or widen a consent they already had. The claim is widened here.
    client = register_device_client(browser)
    flow = start(browser, client)
    people = [signed_in_as(server, person) for person in (user, other_user)]
    forms = [consent_form(person, flow["user_code"]) for person in people]
    decided: list[Any] = []
    monkeypatch.setattr(device_codes, "claim", slowed(device_codes.claim, decided))

    def approve(index: int) -> requests.Response:
        return people[index].post(
            "/device", data={**forms[index], "decision": "approve"}
        )

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(approve, range(2)))

    assert sorted(a.status_code for a in answers) == [200, 400]
    [loser] = [p for p, a in zip(people, answers, strict=True) if a.status_code == 400]
    select_one(answers[people.index(loser)], "#code-error")
    account = loser.get("/account")
    assert account.status_code == 200
    assert client["client_id"] not in account.text


def test_approving_a_device_makes_none_of_its_redirect_uris_trusted(
    server: LiveServer, browser: Browser, signed_in: Browser
) -> None:
    # A device-only client may still register redirect URIs; the person at
    # /device never sees them. Once they approve, /authorize treats the
    # client as approved and sends their browser to that URI unasked (an
    # error redirect), though no redirect-based grant was ever consented to.
    registered = browser.post(
        "/register",
        json={
            "grant_types": [DEVICE_GRANT],
            "token_endpoint_auth_method": "none",
            "redirect_uris": [ELSEWHERE],
        },
    )
    if registered.status_code == 400:
        return  # refusing redirect URIs without the code grant closes it too
    client = registered.json()
    flow = start(browser, client)
    approved = signed_in.post(
        "/device",
        data={**consent_form(signed_in, flow["user_code"]), "decision": "approve"},
    )
    assert approved.status_code == 200
    select_one(approved, "#device-approved")
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": ELSEWHERE,
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "state": "s",
    }

    response = signed_in.get("/authorize?" + urlencode(params))

    assert not response.headers.get("Location", "").startswith(ELSEWHERE)
    assert response.status_code == 400


def test_a_poll_for_another_resource_spends_nothing(
    server: LiveServer, browser: Browser, signed_in: Browser
) -> None:
    # The code grant refuses another resource without spending the code;
    # the device grant must too, or one bad poll loses the person's approval.
    client = register_device_client(browser)
    flow = start(browser, client)
    approved = signed_in.post(
        "/device",
        data={**consent_form(signed_in, flow["user_code"]), "decision": "approve"},
    )
    select_one(approved, "#device-approved")
    form = {"grant_type": DEVICE_GRANT, "device_code": flow["device_code"]}
    elsewhere = client_post(
        browser, "/token", client, {**form, "resource": "https://other.example/mcp"}
    )
    assert elsewhere.status_code == 400
    assert elsewhere.json()["error"] == "invalid_target"
    won = client_post(browser, "/token", client, form)
    assert won.status_code == 200, won.text


def test_links_from_elsewhere_spend_no_guessing_budget(
    make_server: Callable[..., LiveServer], user: dict[str, str]
) -> None:
    # A site can send a signed-in person's browser to /device?user_code=...
    # as often as it likes; were that a lookup, it would spend the person's
    # budget and lock them out. A GET only fills the form in.
    live = make_server(USER_CODE_RATE_LIMIT="2 per 15 minutes")
    person = signed_in_as(live, user)
    for _ in range(5):
        page = person.get("/device", params={"user_code": "BBBB-BBBB"})
        assert page.status_code == 200
        assert attribute(select_one(page, "#user-code-input"), "value") == "BBBB-BBBB"
    flow = start(person, register_device_client(person))
    assert enter(person, live.url, flow["user_code"]).status_code == 200
