"""What an identity provider's answer proves: the rules, case by case.

Providers that cannot run here (Google, Entra ID) are told apart by their
issuer; their claims are given as their documentation describes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.config_providers import OIDC, ProviderSettings
from app.upstream_identity import SignInFailure, from_id_token

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OID = "00000000-0000-0000-66f3-3332eca7ea81"


def provider(issuer: str) -> ProviderSettings:
    return ProviderSettings("idp", OIDC, issuer, "client", "secret")


ENTRA = provider(f"https://login.microsoftonline.com/{TENANT}/v2.0")
GOOGLE = provider("https://accounts.google.com")
OKTA = provider("https://acme.okta.com")


def test_entras_email_is_never_believed() -> None:
    # The nOAuth takeover: any tenant's administrator writes any address.
    claims = {
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT.upper(),
        "oid": OID,
        "email": "ceo@acme.example",
        "email_verified": True,
    }

    identity = from_id_token(ENTRA, claims, {})

    assert identity.email is None
    assert identity.domains == {TENANT}
    assert identity.account_email == f"{OID}@{TENANT}.entra.invalid"
    assert identity.subject == claims["sub"]


def test_entra_without_a_tenant_gets_no_account() -> None:
    identity = from_id_token(ENTRA, {"sub": "s", "tid": "not-a-guid"}, {})

    assert (identity.domains, identity.account_email) == (frozenset(), None)


def test_googles_hosted_domain_counts_beside_the_email() -> None:
    claims = {"sub": "1", "email": "A@Acme.example", "email_verified": True}

    identity = from_id_token(GOOGLE, {**claims, "hd": "Acme.example"}, {})

    assert identity.email == identity.account_email == "a@acme.example"
    assert identity.domains == {"acme.example"}
    # Another provider's hd means nothing.
    assert from_id_token(OKTA, {"sub": "1", "hd": "acme.example"}, {}).domains == set()


@pytest.mark.parametrize(
    ("verified", "believed"),
    [(True, True), ("true", True), (False, False), ("false", False), (None, False)],
)
def test_only_a_verified_email_counts(verified: Any, believed: bool) -> None:
    claims = {"sub": "1", "email": "ada@acme.example", "email_verified": verified}

    identity = from_id_token(OKTA, claims, {})

    assert (identity.email is not None) is believed
    assert (identity.domains == {"acme.example"}) is believed


def test_userinfo_fills_in_the_email_for_the_same_subject_only() -> None:
    userinfo = {"sub": "1", "email": "ada@acme.example", "email_verified": True}

    assert from_id_token(OKTA, {"sub": "1"}, userinfo).email == "ada@acme.example"
    with pytest.raises(SignInFailure) as caught:
        from_id_token(OKTA, {"sub": "2"}, userinfo)
    assert caught.value.reason == "token"


@pytest.mark.parametrize("subject", [None, "", 42, "x" * 256])
def test_a_token_without_a_usable_subject_is_refused(subject: Any) -> None:
    with pytest.raises(SignInFailure) as caught:
        from_id_token(OKTA, {"sub": subject}, {})
    assert caught.value.reason == "token"


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@b", "x" * 250 + "@acme.example", "a b@acme.example"]
)
def test_an_address_no_account_could_have_is_no_email(email: str) -> None:
    claims = {"sub": "1", "email": email, "email_verified": True}

    identity = from_id_token(OKTA, claims, {})

    assert (identity.email, identity.account_email, identity.domains) == (
        None,
        None,
        frozenset(),
    )
