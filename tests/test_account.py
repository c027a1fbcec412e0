"""The account page over HTTP: keys and authorized clients, behind a session."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from helpers import (
    INVALID_CREDENTIALS,
    Browser,
    action_for,
    attribute,
    bearer,
    create_on_page,
    created_key,
    csrf_token,
    exchange,
    form_actions,
    key_token,
    list_keys,
    new_key,
    obtain_token,
    select_one,
    soup,
    whoami,
)

KEY_PATTERN = re.compile(r"lsk_[A-Za-z0-9_-]{43}")


@pytest.fixture
def manager(server: Any, user: dict[str, str]) -> str:
    """An OAuth token of ``user``, got in a browser of its own (which grants it)."""
    return obtain_token(server.browser(), user)


def test_the_page_needs_a_session(browser: Browser) -> None:
    response = browser.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/login?next=%2Faccount")
    token = browser.form(browser.get("/login"))["csrf_token"]
    for path in ("/account/api-keys", f"/account/api-keys/{uuid.uuid4()}/revoke"):
        response = browser.post(path, data={"csrf_token": token, "name": "x"})
        assert response.status_code == 302
        assert "/login?next=" in response.headers["Location"]


def test_signing_in_lands_on_the_account_page(signed_in: Browser, user: dict) -> None:
    page = signed_in.get("/account")
    assert page.status_code == 200
    assert user["email"] in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "You have no API keys." in page.text


def test_create_a_key_on_the_page_shows_it_once(signed_in: Browser) -> None:
    response = create_on_page(
        signed_in, name="ci <runner>", scopes=["read", "write"], expires_in_days="30"
    )
    key = created_key(response)
    assert KEY_PATTERN.fullmatch(key)
    assert response.headers["Cache-Control"] == "no-store"
    assert "ci &lt;runner&gt;" in response.text  # escaped
    page = soup(response)
    button = page.select_one("button[data-copy=new-key]")
    assert button is not None and button["type"] == "button"
    # The CSP allows only our own files: no inline script or style anywhere.
    scripts = page.find_all("script")
    assert scripts and all(
        attribute(s, "src", "").endswith("/static/copy.js") for s in scripts
    )
    assert all(not s.string for s in scripts)
    assert not page.find_all("style") and not page.select("[style]")
    assert signed_in.get("/static/copy.js").status_code == 200

    account = signed_in.get("/account")
    assert key not in account.text
    assert not KEY_PATTERN.search(account.text)
    assert "ci &lt;runner&gt;" in account.text
    assert key[:12] in account.text  # the prefix, to recognise it by

    token = key_token(signed_in, key)
    assert whoami(signed_in, token).status_code == 200


def test_key_made_on_the_page_is_not_the_applications(
    signed_in: Browser, manager: str
) -> None:
    created_key(create_on_page(signed_in, name="from the page"))
    assert list_keys(signed_in, manager) == []


def test_the_page_makes_keys_that_never_expire_or_outlive_the_api_maximum(
    signed_in: Browser,
) -> None:
    forever = create_on_page(signed_in, name="forever")
    assert "It does not expire." in forever.text
    long = create_on_page(signed_in, name="long", expires_in_days="3650")
    assert created_key(long) and "Expires:" in long.text
    # Cells: name, key, server, scopes, created by, created, expires, last used.
    rows = {
        cells[0]: cells
        for r in soup(signed_in.get("/account")).select("tbody tr")
        if (cells := [td.get_text(" ", strip=True) for td in r.select("td")])
    }
    assert rows["forever"][2] == "MCP"
    assert rows["forever"][4] == "You, on this page"
    assert rows["forever"][6] == "Never"
    assert rows["long"][6].endswith("UTC")


def test_revoke_a_key_on_the_page(signed_in: Browser) -> None:
    key = created_key(create_on_page(signed_in))
    token = key_token(signed_in, key)
    page = signed_in.get("/account")
    action = action_for(page, "/account/api-keys/")
    revoked = signed_in.post(action, data=signed_in.form(page))
    assert revoked.status_code == 302
    assert revoked.headers["Location"].endswith("/account")

    response = exchange(signed_in, key)
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS
    assert whoami(signed_in, token).status_code == 401
    assert "You have no API keys." in signed_in.get("/account").text
    again = signed_in.post(action, data=signed_in.form(page))
    assert again.status_code == 404


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": ""}, "Give the key a name."),
        ({"name": "   "}, "Give the key a name."),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"scopes": []}, "Choose at least one scope"),
        ({"scopes": ["admin"]}, "Choose at least one scope"),
        ({"expires_in_days": "soon"}, "whole number of days"),
        ({"expires_in_days": "0"}, "whole number of days"),
        ({"expires_in_days": "3651"}, "whole number of days"),
        ({"expires_in_days": "1.5"}, "whole number of days"),
        ({"expires_in_days": "9" * 5000}, "whole number of days"),
    ],
)
def test_page_refuses_bad_input_with_a_message(
    signed_in: Browser, fields: dict[str, Any], message: str
) -> None:
    response = create_on_page(signed_in, **fields)
    assert response.status_code == 400
    assert message in select_one(response, "p.error").get_text()
    assert not KEY_PATTERN.search(response.text)
    assert "You have no API keys." in response.text


def test_page_respects_the_key_cap(make_server: Any, user: dict) -> None:
    browser = make_server(MAX_API_KEYS_PER_USER="1").browser()
    browser.login(user["email"], user["password"])
    created_key(create_on_page(browser))
    refused = create_on_page(browser, name="second")
    assert refused.status_code == 403
    assert "Revoke one first" in refused.text
    assert not KEY_PATTERN.search(refused.text)


def test_revoking_a_consent_cuts_off_the_clients_tokens(
    server: Any, signed_in: Browser, user: dict
) -> None:
    token = obtain_token(server.browser(), user, client_name="Editor <b>Plugin</b>")
    assert whoami(signed_in, token).status_code == 200
    page = signed_in.get("/account")
    assert "Editor &lt;b&gt;Plugin&lt;/b&gt;" in page.text
    [row] = [r for r in soup(page).select("tr") if "Editor <b>" in r.get_text()]
    assert "read write" in row.get_text()

    action = action_for(page, "/account/consents/")
    revoked = signed_in.post(action, data=signed_in.form(page))
    assert revoked.status_code == 302
    assert whoami(signed_in, token).status_code == 401
    assert "Editor" not in signed_in.get("/account").text
    assert signed_in.post(action, data=signed_in.form(page)).status_code == 404


def test_people_cannot_touch_each_others_keys_or_consents(
    server: Any, signed_in: Browser, manager: str, other_user: dict
) -> None:
    token = manager
    key = new_key(signed_in, token)
    page = signed_in.get("/account")
    consent_action = action_for(page, "/account/consents/")

    intruder = server.browser()
    intruder.login(other_user["email"], other_user["password"])
    theirs = intruder.get("/account")
    assert key["prefix"] not in theirs.text and "/account/consents/" not in theirs.text
    data = intruder.form(theirs)
    for path in (
        f"/account/api-keys/{key['id']}/revoke",
        "/account/api-keys/not-a-uuid/revoke",
        consent_action,
        "/account/consents/not-a-uuid/revoke",
    ):
        response = intruder.post(path, data=data)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"].startswith("text/html")
    assert exchange(signed_in, key["key"]).status_code == 200
    assert whoami(signed_in, token).status_code == 200


def test_every_form_on_the_page_needs_the_csrf_token(
    signed_in: Browser, manager: str
) -> None:
    key = created_key(create_on_page(signed_in))
    page = signed_in.get("/account")
    actions = form_actions(page)
    # sign out, revoke key, create key, revoke consent, create service client
    assert len(actions) == 5
    fields = {"name": "sneaky", "scopes": "read"}
    for action in actions:
        for token in (None, "wrong", csrf_token(signed_in) + "x"):
            data = dict(fields, **({"csrf_token": token} if token else {}))
            response = signed_in.post(action, data=data)
            assert response.status_code == 400, (action, token)
            assert response.headers["Content-Type"].startswith("text/html")
    # Nothing happened: still signed in, one key that still works, one consent.
    page = signed_in.get("/account")
    assert page.status_code == 200 and "sneaky" not in page.text
    assert "/account/consents/" in page.text
    assert exchange(signed_in, key).status_code == 200


def test_sign_out_from_the_page(signed_in: Browser) -> None:
    page = signed_in.get("/account")
    action = action_for(page, "/logout")
    response = signed_in.post(action, data=signed_in.form(page))
    assert response.status_code == 302
    assert signed_in.get("/account").status_code == 302


def test_page_speaks_the_visitors_language(signed_in: Browser) -> None:
    page = signed_in.get("/account", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200
    assert attribute(select_one(page, "html"), "lang") == "zh"


def test_the_api_token_does_not_open_the_page(browser: Browser, user: dict) -> None:
    token = obtain_token(browser, user)
    browser.cookies.clear()
    response = browser.get("/account", headers=bearer(token))
    assert response.status_code == 302


def _consents(server: Any, user: dict, count: int) -> None:
    """``count`` live consents of ``user``, to clients "App 01" (the newest)
    to "App nn", each approved a minute before the one named before it."""
    from datetime import timedelta

    from app.db import db
    from app.models import Consent, OAuthClient, utcnow
    from app.oauth.resources import default_resource

    with server.app.app_context():
        now, resource = utcnow(), default_resource().uri
        for n in range(1, count + 1):
            client_id = f"paged-{n:02d}"
            db.session.add(
                OAuthClient(
                    client_id=client_id,
                    client_secret_hash=None,
                    client_name=f"App {n:02d}",
                    redirect_uris=["http://127.0.0.1/cb"],
                    grant_types=["authorization_code"],
                    response_types=["code"],
                    token_endpoint_auth_method="none",
                    scope="read",
                    registered_from="127.0.0.1",
                )
            )
            db.session.flush()
            db.session.add(
                Consent(
                    user_id=uuid.UUID(user["id"]),
                    client_id=client_id,
                    scope="read",
                    resource=resource,
                    approved_at=now - timedelta(minutes=n),
                )
            )
        db.session.commit()


def _apps_shown(page: Any) -> list[str]:
    return re.findall(r"App \d\d", select_one(page, "section#consents").get_text())


def _pager(page: Any) -> Any:
    return select_one(page, 'nav.pager[data-list="apps_page"]')


def test_authorized_applications_come_twenty_to_a_page(
    server: Any, signed_in: Browser, user: dict
) -> None:
    _consents(server, user, 45)

    first = signed_in.get("/account")
    assert _apps_shown(first) == [f"App {n:02d}" for n in range(1, 21)]
    assert "Page 1 of 3" in _pager(first).get_text()
    assert _pager(first).select_one("a[rel=prev]") is None
    assert len(soup(first).select("form[action*='/account/consents/']")) == 20

    second = signed_in.get(attribute(select_one(first, "a[rel=next]"), "href"))
    assert second.url.startswith(f"{server.url}/account?apps_page=2")
    assert "Page 2 of 3" in _pager(second).get_text()
    assert _apps_shown(second) == [f"App {n:02d}" for n in range(21, 41)]

    third = signed_in.get(attribute(select_one(second, "a[rel=next]"), "href"))
    assert "Page 3 of 3" in _pager(third).get_text()
    assert _apps_shown(third) == [f"App {n:02d}" for n in range(41, 46)]
    assert _pager(third).select_one("a[rel=next]") is None
    back = signed_in.get(attribute(select_one(third, "a[rel=prev]"), "href"))
    assert _apps_shown(back) == _apps_shown(second)

    # Past the end, or not a number: the last page, and the first.
    assert _apps_shown(signed_in.get("/account?apps_page=9")) == _apps_shown(third)
    assert _apps_shown(signed_in.get("/account?apps_page=-1")) == _apps_shown(first)


def test_revoking_from_page_two_comes_back_to_page_two(
    server: Any, signed_in: Browser, user: dict
) -> None:
    _consents(server, user, 45)
    page = signed_in.get("/account?apps_page=2")
    [row] = [r for r in soup(page).select("tr") if "App 25" in r.get_text()]
    form = row.select_one("form")
    assert form is not None
    fields = {
        attribute(field, "name"): attribute(field, "value")
        for field in form.select("input[type=hidden]")
    }
    assert fields["apps_page"] == "2"

    revoked = signed_in.post(attribute(form, "action"), data=fields)

    assert revoked.status_code == 302
    assert revoked.headers["Location"] == f"{server.issuer}/account?apps_page=2"
    after = signed_in.get(revoked.headers["Location"])
    assert "Page 2 of 3" in _pager(after).get_text()
    expected = [n for n in range(21, 42) if n != 25]
    assert _apps_shown(after) == [f"App {n:02d}" for n in expected]


def test_a_short_list_has_no_pages(server: Any, signed_in: Browser, user: dict) -> None:
    _consents(server, user, 20)
    page = signed_in.get("/account")
    assert len(_apps_shown(page)) == 20
    assert not soup(page).select("nav.pager")
