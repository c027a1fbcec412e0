"""Revoking a consent ends everything it produced, and nothing it did not."""

from __future__ import annotations

from typing import Any

from helpers import (
    Browser,
    claims_of,
    consent,
    get_code,
    query_of,
    redeem,
    register_client,
    revoke_from_account_page,
    whoami,
)


def test_a_code_issued_before_revocation_cannot_be_redeemed(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(browser)
    first_code, first_verifier, params = get_code(browser, client, user)
    token = redeem(browser, client, first_code, first_verifier).json()["access_token"]
    held_code, held_verifier, _ = get_code(browser, client, user)

    revoke_from_account_page(browser)

    assert whoami(browser, token).status_code == 401
    refused = redeem(browser, client, held_code, held_verifier)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def approve_again(
    browser: Browser, client: dict, params: dict[str, str], verifier: str
) -> str:
    """Go through consent again with the same request; return the new token."""
    approved = consent(browser, {**params, "state": "again"})
    code = query_of(approved.headers["Location"])["code"]
    return redeem(browser, client, code, verifier).json()["access_token"]


def test_approving_again_right_after_revoking_gives_a_working_token(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(browser)
    code, verifier, params = get_code(browser, client, user)
    old = redeem(browser, client, code, verifier).json()["access_token"]

    revoke_from_account_page(browser)
    new = approve_again(browser, client, params, verifier)

    assert whoami(browser, old).status_code == 401
    assert whoami(browser, new).status_code == 200


def test_revoking_one_client_leaves_another_working(
    server: Any, browser: Browser, user: dict[str, str]
) -> None:
    kept_client, revoked_client = register_client(browser), register_client(browser)
    kept = redeem(browser, kept_client, *get_code(browser, kept_client, user)[:2])
    gone = redeem(browser, revoked_client, *get_code(browser, revoked_client, user)[:2])

    revoke_from_account_page(browser, revoked_client["client_id"])

    assert whoami(browser, kept.json()["access_token"]).status_code == 200
    assert whoami(browser, gone.json()["access_token"]).status_code == 401


def test_each_approval_after_a_revocation_is_a_new_consent(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(browser)
    code, verifier, params = get_code(browser, client, user)
    old = redeem(browser, client, code, verifier).json()["access_token"]
    again, again_verifier, _ = get_code(browser, client, user)
    same = redeem(browser, client, again, again_verifier).json()["access_token"]

    revoke_from_account_page(browser)
    new = approve_again(browser, client, params, verifier)

    # Approving again while live keeps the consent; after a revocation it is new.
    assert claims_of(old)["consent_id"] == claims_of(same)["consent_id"]
    assert claims_of(new)["consent_id"] != claims_of(old)["consent_id"]
