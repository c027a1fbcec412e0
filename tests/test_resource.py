"""Bearer protection of /mcp and /auth/verify: the exact RFC 6750/9728 answers."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from typing import Any

import pytest
from helpers import (
    api_key_token,
    claims_for,
    get_code,
    obtain_token,
    redeem,
    register_client,
)
from joserfc import jwt
from joserfc.jwk import OctKey

from app.denylist import deny_consent, deny_token, deny_user_until_now
from app.oauth.tokens import sign_claims

#: The two protected surfaces, each called the way its clients call it.
ENDPOINTS = {
    "mcp": ("POST", "/mcp"),
    "verify": ("GET", "/auth/verify"),
}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def call(browser: Any, endpoint: str, token: str | None = None, **kwargs: Any) -> Any:
    method, path = ENDPOINTS[endpoint]
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kwargs.pop("headers", {}))
    if method == "POST":
        kwargs.setdefault("json", TOOLS_LIST)
    return browser.request(method, path, headers=headers, **kwargs)


def prm_url(server: Any) -> str:
    return server.issuer + "/.well-known/oauth-protected-resource"


def mint(server: Any, claims: dict[str, Any]) -> str:
    return sign_claims(claims, server.app.config["SETTINGS"])


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def payload_of(token: str) -> dict[str, Any]:
    """The claims of a token we were issued, read without verifying them."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def forged(server: Any, user: dict[str, str], case: str) -> str:
    """A token that must be refused, built the way an attacker or a bug would."""
    secret = server.app.config["SETTINGS"].jwt_secret
    good = claims_for(server, user)
    if case == "garbage":
        return "not-a-jwt"
    if case == "expired":
        return mint(server, claims_for(server, user, iat=1_000, exp=2_000))
    if case == "wrong signature":
        other = dataclasses.replace(
            server.app.config["SETTINGS"], jwt_secret=secrets.token_urlsafe(32)
        )
        return sign_claims(good, other)
    if case == "tampered payload":
        header, _, signature = mint(server, good).split(".")
        return ".".join((header, b64({**good, "scope": "read write admin"}), signature))
    if case == "alg none":
        return f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(good)}."
    if case == "another algorithm":
        protected = {"alg": "HS512", "typ": "at+jwt"}
        return jwt.encode(
            protected, good, OctKey.import_key(secret), algorithms=["HS512"]
        )
    if case == "typ missing":
        return jwt.encode({"alg": "HS256"}, good, OctKey.import_key(secret))
    if case == "wrong typ":
        protected = {"alg": "HS256", "typ": "JWT"}
        return jwt.encode(protected, good, OctKey.import_key(secret))
    if case == "wrong audience":
        return mint(
            server, claims_for(server, user, aud="https://elsewhere.example/mcp")
        )
    if case == "audience of the issuer":
        return mint(server, claims_for(server, user, aud=server.issuer))
    if case == "no audience":
        return mint(server, claims_for(server, user, aud=None))
    if case == "wrong issuer":
        return mint(server, claims_for(server, user, iss="https://evil.example"))
    if case == "issuer with trailing slash":
        return mint(server, claims_for(server, user, iss=server.issuer + "/"))
    if case == "no expiry":
        return mint(server, claims_for(server, user, exp=None))
    raise AssertionError(case)


BAD_TOKENS = [
    "garbage",
    "expired",
    "wrong signature",
    "tampered payload",
    "alg none",
    "another algorithm",
    "typ missing",
    "wrong typ",
    "wrong audience",
    "audience of the issuer",
    "no audience",
    "wrong issuer",
    "issuer with trailing slash",
    "no expiry",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_token_gets_the_challenge_with_a_scope_hint(
    browser: Any, server: Any, endpoint: str
) -> None:
    response = call(browser, endpoint)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{prm_url(server)}", scope="read write"'
    )
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_scope_hint_is_what_the_resource_metadata_lists(
    browser: Any, endpoint: str
) -> None:
    # MCP authorization: a client asks first for the scope the 401 names.
    challenge = call(browser, endpoint).headers["WWW-Authenticate"]
    hint = challenge.split('scope="', 1)[1].split('"', 1)[0]
    document = browser.get("/.well-known/oauth-protected-resource").json()

    assert hint.split() == document["scopes_supported"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"]
)
def test_other_schemes_count_as_no_token(
    browser: Any, server: Any, endpoint: str, authorization: str
) -> None:
    # RFC 6750 §3.1: a request without a usable bearer token gets no error code.
    response = call(browser, endpoint, headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{prm_url(server)}", scope="read write"'
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_are_invalid_token(
    browser: Any, server: Any, user: dict[str, str], endpoint: str, case: str
) -> None:
    response = call(browser, endpoint, forged(server, user, case))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{prm_url(server)}"'
    )
    assert response.json()["error"] == "invalid_token"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_minted_good_token_passes(
    browser: Any, server: Any, user: dict[str, str], endpoint: str
) -> None:
    # The control for the table above: only the named defect makes it fail.
    response = call(browser, endpoint, mint(server, claims_for(server, user)))

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("how", ["jti", "consent", "user"])
def test_revoked_tokens_are_invalid_token(
    browser: Any, server: Any, user: dict[str, str], endpoint: str, how: str
) -> None:
    token = obtain_token(browser, user)
    assert call(browser, endpoint, token).status_code == 200
    claims = payload_of(token)
    with server.app.app_context():
        if how == "jti":
            deny_token(claims["jti"], claims["exp"])
        elif how == "consent":
            deny_consent(claims["consent_id"])
        else:
            deny_user_until_now(claims["sub"])

    response = call(browser, endpoint, token)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{prm_url(server)}"'
    )


def write_only_token(browser: Any, user: dict[str, str]) -> str:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user, scope="write")
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "write"
    return response.json()["access_token"]


def test_missing_scope_at_verify_is_insufficient_scope(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = write_only_token(browser, user)

    response = call(browser, "verify", token, params={"scope": "read"})

    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="read", '
        f'resource_metadata="{prm_url(server)}"'
    )
    assert response.json()["error"] == "insufficient_scope"


def test_missing_scope_for_a_tool_is_insufficient_scope(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = write_only_token(browser, user)
    whoami = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}},
    }

    listed = call(browser, "mcp", token)
    response = call(browser, "mcp", token, json=whoami)

    assert listed.status_code == 200  # tools/list needs no particular scope
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="read", '
        f'resource_metadata="{prm_url(server)}"'
    )


def test_verify_names_every_missing_scope(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = write_only_token(browser, user)

    response = call(browser, "verify", token, params={"scope": "read write"})

    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="read write", '
        f'resource_metadata="{prm_url(server)}"'
    )


def test_verify_reports_the_caller(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = obtain_token(browser, user)
    claims = payload_of(token)

    response = call(browser, "verify", token, params={"scope": "read"})

    assert response.status_code == 200
    assert response.headers["X-Auth-Subject"] == user["id"]
    assert response.headers["X-Auth-Client"] == claims["client_id"]
    assert response.headers["X-Auth-Scope"] == "read write"
    assert response.headers["Cache-Control"] == "no-store"


def test_verify_reports_the_api_key_of_an_api_key_token(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = api_key_token(server, user, "key-42")

    response = call(browser, "verify", token)

    assert response.status_code == 200
    assert response.headers["X-Auth-Subject"] == user["id"]
    assert response.headers["X-Auth-Client"] == "key-42"
    assert response.headers["X-Auth-Scope"] == "read"


@pytest.mark.parametrize("scope", ["admin", "read admin", "openid"])
def test_verify_refuses_unknown_scopes(
    browser: Any, server: Any, user: dict[str, str], scope: str
) -> None:
    token = mint(server, claims_for(server, user))

    response = call(browser, "verify", token, params={"scope": scope})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_verify_answers_get_only(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = mint(server, claims_for(server, user))

    response = browser.post(
        "/auth/verify", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 405


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_token_verified_before_is_refused_once_it_expires(
    browser: Any, server: Any, user: dict[str, str], endpoint: str
) -> None:
    # Verified tokens are remembered per process (app.oauth.tokens); the
    # memory must not outlive the token's exp.
    token = mint(server, claims_for(server, user, exp=int(time.time()) + 2))
    assert call(browser, endpoint, token).status_code == 200
    assert call(browser, endpoint, token).status_code == 200

    time.sleep(max(0.0, payload_of(token)["exp"] - time.time()) + 0.1)

    response = call(browser, endpoint, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_remembered_token_is_not_trusted_under_other_keys(
    make_server: Any, user: dict[str, str], server: Any
) -> None:
    # Another app in the same process (another issuer and key) must verify
    # the token afresh, and refuse it.
    token = obtain_token(server.browser(), user)
    assert call(server.browser(), "mcp", token).status_code == 200
    other = make_server(JWT_SECRET=secrets.token_urlsafe(32))
    assert call(other.browser(), "mcp", token).status_code == 401
