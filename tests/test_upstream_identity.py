"""What an identity provider's answer proves: the rules, case by case.

Providers that cannot run here (Google, Entra ID) are told apart by their
issuer; their claims are given as their documentation describes them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.config_providers import OIDC, ProviderSettings
from app.upstream_identity import (
    SignInFailure,
    accepts_discovered_issuer,
    from_id_token,
    token_issuer,
)

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


ENTRA_COMMON = provider("https://login.microsoftonline.com/organizations/v2.0")
#: What Entra's multi-tenant discovery document names as its issuer.
TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"


def unsigned(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return "eyJhbGciOiJSUzI1NiJ9." + body.decode() + ".signature"


def test_entras_multi_tenant_issuer_is_the_tokens_tenant() -> None:
    assert accepts_discovered_issuer(ENTRA_COMMON, TEMPLATE)
    assert token_issuer(TEMPLATE, unsigned({"tid": TENANT})) == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0"
    )
    # No tenant in the token: nothing it could be checked against.
    assert token_issuer(TEMPLATE, unsigned({})) is None
    assert token_issuer(TEMPLATE, "not a token") is None


def test_only_entra_may_discover_a_templated_issuer() -> None:
    assert not accepts_discovered_issuer(OKTA, "https://acme.okta.com/{tenantid}")
    assert not accepts_discovered_issuer(
        ENTRA_COMMON, "https://evil.example/{tenantid}/v2.0"
    )
    assert not accepts_discovered_issuer(OKTA, "https://other.okta.com")
    assert token_issuer("https://acme.okta.com", unsigned({"tid": TENANT})) == (
        "https://acme.okta.com"
    )


def test_an_entra_tenants_identity_keeps_the_tenants_issuer() -> None:
    tenant_issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    claims = {"sub": "s", "tid": TENANT, "oid": OID}

    identity = from_id_token(ENTRA_COMMON, claims, {}, tenant_issuer)

    assert identity.issuer == tenant_issuer
    assert identity.domains == {TENANT}
