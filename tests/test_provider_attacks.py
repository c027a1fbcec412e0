"""Attacks on signing in through an identity provider (review of issue 21).

Against the real OpenID provider the suite starts (tests/oidc_upstream.py);
its /test/tamper hook re-signs the next ID token with the provider's own key,
which stands for a provider that says something odd but is still believed.
Tests named ``test_hole_*`` fail on wt21/signin: each shows a defect. The
others show an attack that held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import sqlalchemy
from conftest import LiveServer, make_user
from helpers import authorize_params, pkce_pair, register_client, select_one
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

from app.config_providers import OIDC, ProviderSettings
from app.upstream_identity import from_id_token


def _callback(browser: Any) -> str:
    return sign_in_at_provider(browser, start_at_provider(browser), "ada")


def _claimed(sub: str, email: str, verified: Any = True) -> dict[str, Any]:
    # With the email in the ID token the service asks UserInfo nothing, so
    # the tampered subject stands.
    return {"sub": sub, "email": email, "email_verified": verified}


# --- Priority 4: 500s from odd provider answers -----------------------------


@pytest.mark.parametrize(
    "claims",
    [
        _claimed("ada\x00x", "ada2@acme.test"),
        _claimed("zed", "z\x00ed@acme.test"),
        _claimed("ada\ud800", "ada3@acme.test"),
        _claimed("zed2", "z\ud800@acme.test"),
    ],
    ids=["nul-sub", "nul-email", "surrogate-sub", "surrogate-email"],
)
def test_an_unstorable_subject_or_email_is_a_page_not_a_500(
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
    audit_log: AuditLog,  # noqa: F811
    claims: dict[str, Any],
) -> None:
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper(claims)

    answer = browser.get(callback)

    # Not a 500 (app/errors.py turns the DataError into a generic 400), but
    # no page saying what happened and no sign_in_failed line: the driver,
    # not the sign-in, refused it.
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert users(engine) == []
    # A bad subject is a bad token; an unstorable email is no usable email.
    assert reason_of(answer) in ("token", "email_unverified")
    assert audit_log.one("sign_in_failed")["reason"] == reason_of(answer)


# --- Priority 1: emails and domains -----------------------------------------


def test_a_verified_address_is_not_folded_into_anothers(
    provider_server: LiveServer, oidc_provider: OidcProvider, engine: sqlalchemy.Engine
) -> None:
    # U+212A KELVIN SIGN lower-cases to ASCII "k": the provider verified
    # "\u212aate@acme.test", a mailbox that is not kate@acme.test, yet the
    # account made gets kate's address (squatting it: the real Kate's own
    # identity is later only offered a link to Mallory's account).
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper(_claimed("mallory", "\u212aate@acme.test"))

    browser.get(callback)

    assert "kate@acme.test" not in users(engine)


def test_the_squatted_address_then_blocks_its_owner(
    provider_server: LiveServer, oidc_provider: OidcProvider, engine: sqlalchemy.Engine
) -> None:
    first = provider_server.browser()
    callback = _callback(first)
    oidc_provider.tamper(_claimed("mallory", "\u212aate@acme.test"))
    first.get(callback)
    kate = provider_server.browser()
    callback = _callback(kate)
    oidc_provider.tamper(_claimed("kate", "kate@acme.test"))

    answer = kate.get(callback)

    # Kate, with the verified kate@acme.test, gets an account of her own.
    assert answer.status_code == 302, answer.text[:300]


@pytest.mark.parametrize(
    "email",
    [
        "x@acme.test.",
        "x@evil.acme.test",
        "x@acme.test.evil.test",
        "x@acme\u0131.test",
        "x@\uff41cme.test",
        "x@xn--acme-.test",
        '"x@acme.test"@evil.test',
    ],
)
def test_a_domain_that_only_looks_allowed_gets_no_account(
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
    email: str,
) -> None:
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper(_claimed("mallory", email))

    answer = browser.get(callback)

    assert answer.status_code == 403, answer.text[:300]
    # Refused as a domain not allowed, or (non-ASCII) as no usable address.
    assert reason_of(answer) in ("domain", "email_unverified")
    assert users(engine) == []


def test_upper_case_of_an_allowed_domain_is_the_same_domain(
    provider_server: LiveServer, oidc_provider: OidcProvider, engine: sqlalchemy.Engine
) -> None:
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper(_claimed("mallory", "Mallory@ACME.TEST"))

    assert browser.get(callback).status_code == 302
    assert users(engine) == ["mallory@acme.test"]


@pytest.mark.parametrize("verified", [False, "false", None, 1, "True", "yes"])
def test_an_unverified_email_neither_makes_nor_matches_an_account(
    provider_server: LiveServer,
    oidc_provider: OidcProvider,
    engine: sqlalchemy.Engine,
    verified: Any,
) -> None:
    make_user(provider_server, "ada@acme.test")
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper(_claimed("mallory", "ada@acme.test", verified))

    answer = browser.get(callback)

    assert answer.status_code == 403
    assert reason_of(answer) == "email_unverified"
    assert browser.cookies.get("signin-link") is None
    assert identities(engine) == []


def test_a_verified_email_of_an_account_is_only_an_offer(
    provider_server: LiveServer, oidc_provider: OidcProvider, engine: sqlalchemy.Engine
) -> None:
    # The provider lets Mallory claim Ada's address: she gets a link offer,
    # which only Ada's password can turn into anything.
    make_user(provider_server, "ada@acme.test")
    mallory = provider_server.browser()
    callback = _callback(mallory)
    oidc_provider.tamper(_claimed("mallory", "ADA@acme.test"))

    answer = mallory.get(callback)

    assert answer.status_code == 200 and select_one(answer, "#link-needed")
    assert mallory.get("/account").status_code == 302
    assert mallory.get("/login/link").status_code == 302  # to the sign-in page
    assert identities(engine) == []


def test_a_link_offer_carried_to_another_account_links_nothing(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    # Mallory holds a link offer for Alice's account and plants its cookie
    # in her own signed-in browser, and in Alice's (cookie injection).
    alice = make_user(provider_server, "alice@example.com")
    mallory = make_user(provider_server, "mallory@example.com")
    holder = provider_server.browser()
    provider_sign_in(holder, "alice")
    token = holder.cookies.get("signin-link")
    assert token
    other = provider_server.browser()
    other.login(mallory["email"], mallory["password"])
    other.cookies.set("signin-link", token, path="/login")

    assert other.get("/login/link").status_code == 403
    assert other.post("/login/link", data={}).status_code in (400, 403)
    assert identities(engine) == []
    # Alice, already signed in when the cookie lands, must sign in again.
    victim = provider_server.browser()
    victim.login(alice["email"], alice["password"])
    victim.cookies.set("signin-link", token, path="/login")
    page = victim.get("/login/link")
    assert page.status_code == 200  # she is asked; declining links nothing
    assert identities(engine) == []


def test_a_link_offer_planted_in_a_signed_in_browser_needs_no_new_sign_in(
    provider_server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    # Mallory's identity at a lax provider claims Alice's verified address
    # (the very case linking-after-proof is for). The offer is made in
    # Mallory's browser, so it records no earlier session; its cookie,
    # planted in Alice's long-signed-in browser (a sibling subdomain may set
    # a __Secure- cookie for the parent domain), needs one click from her:
    # her sign-in came before the identity, which the rule says proves
    # nothing.
    alice = make_user(provider_server, "alice@example.com")
    victim = provider_server.browser()
    victim.login(alice["email"], alice["password"])
    mallory = provider_server.browser()
    assert select_one(provider_sign_in(mallory, "alice"), "#link-needed")
    victim.cookies.set("signin-link", mallory.cookies.get("signin-link"), path="/login")

    page = victim.get("/login/link")
    if page.status_code == 200:
        victim.post("/login/link", data=victim.form(page))

    assert identities(engine) == []


def test_an_identity_of_another_account_is_never_moved(
    provider_server: LiveServer, engine: sqlalchemy.Engine, oidc_provider: OidcProvider
) -> None:
    provider_sign_in(provider_server.browser(), "ada")  # ada@acme.test's own
    mallory = make_user(provider_server, "mallory@example.com")
    browser = provider_server.browser()
    browser.login(mallory["email"], mallory["password"])
    url = start_at_provider(browser, page_path="/account")

    answer = browser.get(sign_in_at_provider(browser, url, "ada"))

    assert answer.status_code == 409
    assert reason_of(answer) == "identity_taken"
    assert identities(engine) == [("ada@acme.test", oidc_provider.issuer, "ada")]


ENTRA_CLOUDS = [
    "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
    "https://login.partner.microsoftonline.cn/"
    "72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
    "https://acme.ciamlogin.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
]


@pytest.mark.parametrize("issuer", ENTRA_CLOUDS)
def test_entras_email_is_not_believed_in_its_other_clouds(issuer: str) -> None:
    # Microsoft's national clouds (US Government, China) and Entra External
    # ID are the same Entra ID: any tenant's administrator writes any email.
    entra = ProviderSettings("idp", OIDC, issuer, "client", "secret")
    claims: dict[str, object] = {
        "sub": "s",
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    }
    claims |= {"email": "ceo@acme.example", "email_verified": True}

    assert from_id_token(entra, claims, {}).email is None


# --- Priority 2: state, nonce, mix-up, PKCE ---------------------------------


def test_the_request_upstream_has_pkce_s256_a_nonce_and_a_state(
    provider_server: LiveServer,
) -> None:
    query = parse_qs(urlsplit(start_at_provider(provider_server.browser())).query)

    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert len(query["nonce"][0]) >= 20 and len(query["state"][0]) >= 20
    assert "code_verifier" not in query


@pytest.fixture
def two_providers(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> LiveServer:
    settings = oidc_provider.settings("acme") | oidc_provider.settings("other")
    settings["SIGN_IN_PROVIDERS"] = "acme,other"
    return make_server(**settings)


def test_a_state_from_one_provider_is_refused_on_anothers_callback(
    two_providers: LiveServer, engine: sqlalchemy.Engine
) -> None:
    browser = two_providers.browser()
    callback = sign_in_at_provider(browser, start_at_provider(browser, "acme"), "ada")
    parts = urlsplit(callback)
    mixed = urlunsplit(parts._replace(path="/login/other/callback"))

    answer = browser.get(mixed)

    assert answer.status_code == 400
    assert reason_of(answer) == "state"
    assert users(engine) == []


def test_a_state_replayed_after_a_failure_is_refused(
    provider_server: LiveServer, oidc_provider: OidcProvider
) -> None:
    browser = provider_server.browser()
    callback = _callback(browser)
    oidc_provider.tamper({"nonce": "wrong"})
    assert reason_of(browser.get(callback)) == "token"

    again = browser.get(callback)

    assert reason_of(again) == "state"


def test_a_state_started_before_signing_in_does_not_survive_it(
    provider_server: LiveServer, user: dict[str, str]
) -> None:
    # The browser value binding the state is dropped with the session.
    browser = provider_server.browser()
    url = start_at_provider(browser)
    callback = sign_in_at_provider(browser, url, "ada")
    browser.login(user["email"], user["password"])

    assert reason_of(browser.get(callback)) == "state"


# --- Priority 3: the MCP consent rule ---------------------------------------


def test_the_provider_leads_to_our_consent_page_not_to_a_code(
    provider_server: LiveServer,
) -> None:
    browser = provider_server.browser()
    client = register_client(browser)
    _, challenge = pkce_pair()
    target = "/authorize?" + urlencode(authorize_params(client, challenge))
    answer = provider_sign_in(browser, "ada", next_path=target)
    assert answer.status_code == 302
    landing = answer.headers["Location"]
    assert landing == provider_server.url + target
    page = browser.get(landing)

    assert page.status_code == 200
    assert select_one(page, "button[name=decision][value=approve]")


# --- Priority 5: next ---------------------------------------------------------


@pytest.mark.parametrize(
    "next_path",
    ["//evil.test/", "/\\evil.test", "https://evil.test/", "/\t/evil.test", "@evil"],
)
def test_a_foreign_next_goes_to_the_account_page(
    provider_server: LiveServer, next_path: str
) -> None:
    answer = provider_sign_in(provider_server.browser(), "ada", next_path=next_path)

    assert answer.headers["Location"] == provider_server.url + "/account"


@pytest.mark.parametrize(
    "changes",
    [
        {"code": "c" * 20000},
        {"iss": "i" * 20000},
        {"code": "\u202e\x00"},
        {"error": "server_error", "error_description": "x" * 5000},
    ],
    ids=["huge-code", "huge-iss", "odd-code", "provider-error"],
)
def test_a_crafted_callback_with_a_live_state_is_a_page(
    provider_server: LiveServer, engine: sqlalchemy.Engine, changes: dict[str, str]
) -> None:
    browser = provider_server.browser()
    parts = urlsplit(_callback(browser))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    crafted = urlunsplit(parts._replace(query=urlencode(query)))

    answer = browser.get(crafted)

    assert answer.status_code in (400, 403, 502), answer.text[:300]
    assert reason_of(answer) in ("token", "issuer", "provider_error")
    assert users(engine) == []
