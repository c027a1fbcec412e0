"""The token endpoint and the access tokens it issues (docs/reference.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from conftest import LiveServer, make_user
from helpers import (
    Browser,
    authorize_params,
    consent,
    pkce_pair,
    query_of,
    redeem,
    register_client,
    token_request,
)
from joserfc import jwt
from joserfc.jwk import OctKey

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

#: RFC 7636 Appendix B.
RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

#: A code that was never issued; good enough when the request fails before.
UNKNOWN_CODE = "never-issued-code-0123456789abcdefghij"


@pytest.fixture
def client(browser: Browser) -> dict[str, Any]:
    return register_client(browser)


def approve(browser: Browser, client: dict, **extra: str) -> tuple[str, str, dict]:
    """Approve as the signed-in user; return the code, verifier and params."""
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, **extra)
    response = consent(browser, params)
    assert response.status_code == 302, response.text
    return query_of(response.headers["Location"])["code"], verifier, params


def decode(token: str, secret: str) -> tuple[dict, dict]:
    """Verify with the configured JWT secret; return header and claims."""
    decoded = jwt.decode(token, OctKey.import_key(secret), algorithms=["HS256"])
    return decoded.header, decoded.claims


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


# --- The whole flow, through the real login and consent forms -----------------


def walk_to_code(
    browser: Browser, server: LiveServer, client: dict, user: dict, challenge: str
) -> dict:
    """Start at /authorize signed out, sign in on the form, approve on the form."""
    params = authorize_params(client, challenge)
    start = browser.get("/authorize?" + urlencode(params))
    assert start.status_code == 302
    login_url = start.headers["Location"]
    assert login_url.startswith(server.issuer + "/login?")

    login_page = browser.get(login_url)
    form = {**browser.form(login_page), "email": user["email"]}
    form["password"] = user["password"]
    back = browser.post(login_url, data=form)
    assert back.status_code == 302
    assert back.headers["Location"].startswith(server.issuer + "/authorize?")

    consent_page = browser.get(back.headers["Location"])
    soup = BeautifulSoup(consent_page.text, "html.parser")
    approve_button = soup.select_one("form [name=decision][value=approve]")
    assert approve_button is not None
    approved = browser.post(
        back.headers["Location"],
        data={**browser.form(consent_page), "decision": "approve"},
    )
    assert approved.status_code == 302
    assert approved.headers["Location"].startswith(client["redirect_uris"][0] + "?")
    query = query_of(approved.headers["Location"])
    assert query["state"] == params["state"]
    assert query["iss"] == server.issuer
    return query


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_full_flow_for_each_client_authentication_method(
    browser: Browser,
    server: LiveServer,
    user: dict[str, str],
    base_env: dict[str, str],
    method: Any,
) -> None:
    client = register_client(browser, token_endpoint_auth_method=method)
    verifier, challenge = pkce_pair()
    code = walk_to_code(browser, server, client, user, challenge)["code"]
    before = int(time.time())

    response = redeem(browser, client, code, verifier)

    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["Cache-Control"]
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read write"

    header, claims = decode(body["access_token"], base_env["JWT_SECRET"])
    assert header["alg"] == "HS256"
    assert header["typ"] == "at+jwt"
    assert claims["iss"] == server.issuer
    assert claims["sub"] == user["id"]
    assert claims["aud"] in (server.issuer + "/mcp", [server.issuer + "/mcp"])
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == 3600
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["scope"] == "read write"
    assert claims["client_id"] == client["client_id"]


def test_tokens_have_distinct_ids(
    signed_in: Browser, client: Any, base_env: dict[str, str]
) -> None:
    tokens = []
    for _ in range(2):
        code, verifier, _ = approve(signed_in, client)
        tokens.append(redeem(signed_in, client, code, verifier).json()["access_token"])

    jtis = {decode(token, base_env["JWT_SECRET"])[1]["jti"] for token in tokens}
    assert len(jtis) == 2


def test_token_carries_the_scope_approved(
    signed_in: Browser, client: Any, base_env: dict[str, str]
) -> None:
    code, verifier, _ = approve(signed_in, client, scope="read")

    body = redeem(signed_in, client, code, verifier).json()

    assert body["scope"] == "read"
    assert decode(body["access_token"], base_env["JWT_SECRET"])[1]["scope"] == "read"


def test_rfc7636_appendix_b_vector_in_a_real_flow(
    signed_in: Browser, client: Any
) -> None:
    params = authorize_params(client, RFC7636_CHALLENGE)
    code = query_of(consent(signed_in, params).headers["Location"])["code"]

    response = redeem(signed_in, client, code, RFC7636_VERIFIER)

    assert response.status_code == 200, response.text


# --- RFC 8707 resource indicators ---------------------------------------------


def test_our_resource_is_accepted_and_becomes_the_audience(
    signed_in: Browser, server: LiveServer, client: Any, base_env: dict[str, str]
) -> None:
    resource = server.issuer + "/mcp"
    code, verifier, _ = approve(signed_in, client, resource=resource)

    response = redeem(signed_in, client, code, verifier, resource=resource)

    assert response.status_code == 200, response.text
    claims = decode(response.json()["access_token"], base_env["JWT_SECRET"])[1]
    assert claims["aud"] in (resource, [resource])


@pytest.mark.parametrize(
    "resource", ["https://other.example/mcp", "{issuer}", "{issuer}/mcp2"]
)
def test_other_resource_at_token_is_invalid_target(
    signed_in: Browser, server: LiveServer, client: Any, resource: str
) -> None:
    code, verifier, _ = approve(signed_in, client, resource=server.issuer + "/mcp")

    response = redeem(
        signed_in,
        client,
        code,
        verifier,
        resource=resource.format(issuer=server.issuer),
    )

    assert_error(response, 400, "invalid_target")


# --- Client authentication: the method registered, and nothing else -----------

WRONG_METHODS = [
    ("client_secret_basic", "client_secret_post"),
    ("client_secret_basic", "none"),
    ("client_secret_post", "client_secret_basic"),
    ("client_secret_post", "none"),
]


@pytest.mark.parametrize(("registered", "used"), WRONG_METHODS)
def test_client_must_use_the_method_it_registered(
    browser: Browser, registered: Any, used: Any
) -> None:
    client = register_client(browser, token_endpoint_auth_method=registered)
    data = {
        "grant_type": "authorization_code",
        "code": UNKNOWN_CODE,
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": pkce_pair()[0],
    }

    # With its own method the client gets past authentication to the code...
    assert_error(token_request(browser, client, data), 400, "invalid_grant")
    # ...with another it does not.
    assert_error(
        token_request(browser, client, data, method=used), 401, "invalid_client"
    )


@pytest.mark.parametrize(
    ("auth", "secret_in_form"),
    [(True, False), (False, True)],
    ids=["Basic header", "client_secret in the form"],
)
def test_public_client_may_not_present_a_secret(
    browser: Browser, auth: Any, secret_in_form: Any
) -> None:
    client = register_client(browser, token_endpoint_auth_method="none")
    data = token_form(client, client_id=client["client_id"])
    if secret_in_form:
        data["client_secret"] = "sk-made-up"
    basic = (client["client_id"], "sk-made-up") if auth else None

    response = browser.post("/token", data=data, auth=basic)

    assert_error(response, 401, "invalid_client")


def token_form(client: dict, **changes: Any) -> dict:
    form = {
        "grant_type": "authorization_code",
        "code": UNKNOWN_CODE,
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": pkce_pair()[0],
        **changes,
    }
    return {name: value for name, value in form.items() if value is not None}


@pytest.mark.parametrize(
    "credentials",
    [
        {"auth": ("{client_id}", "")},
        {"auth": ("{client_id}", "{client_secret}x")},
        {"auth": ("{client_id}", "sk-wrong")},
        {"data": {"client_id": "{client_id}", "client_secret": "sk-wrong"}},
        {"data": {"client_id": "{client_id}", "client_secret": ""}},
    ],
    ids=[
        "basic, empty secret",
        "basic, secret with a suffix",
        "basic, wrong secret",
        "post, wrong secret",
        "post, empty secret",
    ],
)
def test_confidential_client_with_bad_credentials_is_refused(
    browser: Browser, client: Any, credentials: Any
) -> None:
    def fill(value: str) -> str:
        return value.format(**client)

    auth: Any = tuple(fill(part) for part in credentials.get("auth", ())) or None
    extra = {name: fill(value) for name, value in credentials.get("data", {}).items()}

    response = browser.post("/token", data=token_form(client, **extra), auth=auth)

    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    ("auth", "data"),
    [
        (("lessie-unknownclient0000000", "sk-whatever"), {}),
        (None, {"client_id": "lessie-unknownclient0000000", "client_secret": "sk-x"}),
        (None, {"client_id": "lessie-unknownclient0000000"}),
        (None, {}),
    ],
    ids=["basic", "post", "none", "no authentication"],
)
def test_unknown_client_is_refused(
    browser: Browser, client: Any, auth: Any, data: Any
) -> None:
    response = browser.post("/token", data=token_form(client, **data), auth=auth)

    assert_error(response, 401, "invalid_client")


def test_failed_basic_authentication_names_the_scheme(
    browser: Browser, server: LiveServer, client: Any
) -> None:
    response = browser.post(
        "/token", data=token_form(client), auth=(client["client_id"], "sk-wrong")
    )

    assert response.status_code == 401
    # RFC 6749 §5.2: a failed Authorization header gets a challenge back, and
    # RFC 7617 §2 makes the realm a required parameter of a Basic challenge.
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Basic realm="{server.issuer}", ')
    assert 'error="invalid_client"' in challenge


# --- Malformed token requests -------------------------------------------------


@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "AUTHORIZATION_CODE",
    ],
)
def test_unsupported_grant_type(browser: Browser, client: Any, grant_type: str) -> None:
    response = token_request(browser, client, token_form(client, grant_type=grant_type))

    assert_error(response, 400, "unsupported_grant_type")


def test_client_credentials_are_for_service_clients_only(
    browser: Browser, client: Any
) -> None:
    # A registered client has no client credentials (docs/machines.md).
    form = token_form(client, grant_type="client_credentials")

    assert_error(token_request(browser, client, form), 400, "unauthorized_client")


@pytest.mark.parametrize("missing", ["code", "redirect_uri", "code_verifier"])
@pytest.mark.parametrize("method", AUTH_METHODS)
def test_missing_parameter_is_invalid_request(
    browser: Browser, method: Any, missing: str
) -> None:
    client = register_client(browser, token_endpoint_auth_method=method)

    response = token_request(browser, client, token_form(client, **{missing: None}))

    assert_error(response, 400, "invalid_request")


def test_unknown_code_is_invalid_grant(browser: Browser, client: Any) -> None:
    response = token_request(browser, client, token_form(client))

    assert_error(response, 400, "invalid_grant")


# --- Codes bound to what they were issued for ---------------------------------


def test_another_clients_code_is_invalid_grant(signed_in: Browser, client: Any) -> None:
    code, verifier, _ = approve(signed_in, client)
    thief = register_client(signed_in)

    response = redeem(signed_in, thief, code, verifier)

    assert_error(response, 400, "invalid_grant")
    # Another client's attempt does not burn the code for its own client.
    assert redeem(signed_in, client, code, verifier).status_code == 200


def test_pkce_mismatch_is_invalid_grant(signed_in: Browser, client: Any) -> None:
    code, _, _ = approve(signed_in, client)

    response = redeem(signed_in, client, code, pkce_pair()[0])

    assert_error(response, 400, "invalid_grant")


def test_rfc7636_challenge_with_another_verifier_is_invalid_grant(
    signed_in: Browser, client: Any
) -> None:
    params = authorize_params(client, RFC7636_CHALLENGE)
    code = query_of(consent(signed_in, params).headers["Location"])["code"]

    response = redeem(signed_in, client, code, RFC7636_VERIFIER[:-1] + "K")

    assert_error(response, 400, "invalid_grant")


@pytest.mark.parametrize(
    "at_token",
    [
        "http://127.0.0.1:6666/callback",  # another loopback port than at /authorize
        "http://127.0.0.1/callback",  # the registered URI, without the port used
        "http://localhost:5555/callback",
        "http://127.0.0.1:5555/callback/",
    ],
)
def test_redirect_uri_must_repeat_the_authorization_requests(
    signed_in: Browser, client: Any, at_token: str
) -> None:
    code, verifier, _ = approve(
        signed_in, client, redirect_uri="http://127.0.0.1:5555/callback"
    )

    response = redeem(signed_in, client, code, verifier, redirect_uri=at_token)

    assert_error(response, 400, "invalid_grant")


def test_code_lives_ten_minutes_in_redis(
    signed_in: Browser, client: Any, redis_client: Any
) -> None:
    approve(signed_in, client)

    [key] = redis_client.keys("oauth:code:*")
    assert 590 <= redis_client.ttl(key) <= 600


def test_expired_code_is_invalid_grant(
    make_server: Callable[..., LiveServer], redis_client: Any
) -> None:
    live = make_server(AUTH_CODE_TTL="30")
    browser = live.browser()
    person = make_user(live, "carol@example.com")
    browser.login(person["email"], person["password"])
    client = register_client(browser)
    code, verifier, _ = approve(browser, client)
    [key] = redis_client.keys("oauth:code:*")
    assert 0 < redis_client.ttl(key) <= 30

    redis_client.expire(key, 0)  # its lifetime is over

    assert_error(redeem(browser, client, code, verifier), 400, "invalid_grant")


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "has spaces" * 5])
def test_malformed_verifier_is_invalid_grant_and_spares_the_code(
    signed_in: Browser, client: Any, verifier: Any
) -> None:
    code, good_verifier, _ = approve(signed_in, client)

    assert_error(redeem(signed_in, client, code, verifier), 400, "invalid_grant")
    assert redeem(signed_in, client, code, good_verifier).status_code == 200


# --- Loose requests: one value per parameter, in the body, one method ----------


def code_form(code: str, verifier: str, client: dict) -> list[tuple[str, str]]:
    return [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", client["redirect_uris"][0]),
        ("code_verifier", verifier),
    ]


def basic(client: dict) -> tuple[str, str]:
    return client["client_id"], client["client_secret"]


@pytest.mark.parametrize(
    "repeated",
    ["code", "grant_type", "redirect_uri", "code_verifier", "client_id", "scope"],
)
def test_a_repeated_parameter_is_invalid_request_and_spares_the_code(
    signed_in: Browser, client: Any, repeated: str
) -> None:
    code, verifier, _ = approve(signed_in, client)
    form = code_form(code, verifier, client)
    first = {**dict(form), "client_id": client["client_id"], "scope": "read"}[repeated]
    # RFC 6749 §3.2: parameters MUST NOT be included more than once; the
    # first value is the good one, so a lenient server would answer 200.
    form += [(repeated, first), (repeated, "another")]

    response = signed_in.post("/token", data=form, auth=basic(client))

    assert_error(response, 400, "invalid_request")
    assert redeem(signed_in, client, code, verifier).status_code == 200


@pytest.mark.parametrize(
    ("moved", "copied"),
    [("grant_type", None), (None, "code"), (None, "state")],
    ids=["grant_type moved to the query", "code also in the query", "state"],
)
def test_parameters_in_the_query_string_are_invalid_request(
    signed_in: Browser, client: Any, moved: Any, copied: Any
) -> None:
    code, verifier, _ = approve(signed_in, client)
    form = dict(code_form(code, verifier, client))
    # RFC 6749 §3.2: the token endpoint takes its parameters in the form body.
    query = {moved: form.pop(moved)} if moved else {copied: form.get(copied, "x")}

    response = signed_in.post(
        f"/token?{urlencode(query)}", data=form, auth=basic(client)
    )

    assert_error(response, 400, "invalid_request")


def test_a_json_body_is_invalid_request(signed_in: Browser, client: Any) -> None:
    code, verifier, _ = approve(signed_in, client)

    response = signed_in.post(
        "/token", json=dict(code_form(code, verifier, client)), auth=basic(client)
    )

    assert_error(response, 400, "invalid_request")


def test_a_form_without_grant_type_is_invalid_request(
    browser: Browser, client: Any
) -> None:
    response = token_request(browser, client, token_form(client, grant_type=None))

    assert_error(response, 400, "invalid_request")


def test_basic_for_one_client_and_form_credentials_for_another(
    signed_in: Browser, client: Any
) -> None:
    code, verifier, _ = approve(signed_in, client)
    other = register_client(signed_in, token_endpoint_auth_method="client_secret_post")
    form = code_form(code, verifier, client) + [
        ("client_id", other["client_id"]),
        ("client_secret", other["client_secret"]),
    ]

    response = signed_in.post("/token", data=form, auth=basic(client))

    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "extra",
    [
        [("client_secret", "{client_secret}")],
        [("client_id", "{client_id}"), ("client_secret", "{client_secret}")],
        [("client_id", "lessie-someoneelse00000000")],
    ],
    ids=["same secret in the form", "same credentials in the form", "other client_id"],
)
def test_basic_with_a_second_method_is_invalid_request(
    signed_in: Browser, client: Any, extra: Any
) -> None:
    code, verifier, _ = approve(signed_in, client)
    form = code_form(code, verifier, client)
    form += [(name, value.format(**client)) for name, value in extra]

    response = signed_in.post("/token", data=form, auth=basic(client))

    assert_error(response, 400, "invalid_request")


def test_other_authorization_scheme_with_form_credentials_is_invalid_request(
    browser: Browser,
) -> None:
    client = register_client(browser, token_endpoint_auth_method="client_secret_post")
    form = token_form(
        client, client_id=client["client_id"], client_secret=client["client_secret"]
    )

    response = browser.post(
        "/token", data=form, headers={"Authorization": "Bearer something"}
    )

    assert_error(response, 400, "invalid_request")


def test_basic_with_its_own_client_id_in_the_form_is_fine(
    signed_in: Browser, client: Any
) -> None:
    # RFC 6749 §3.2.1 lets a client name itself with client_id; only a second
    # credential, or another client, makes a second method.
    code, verifier, _ = approve(signed_in, client)
    form = code_form(code, verifier, client) + [("client_id", client["client_id"])]

    response = signed_in.post("/token", data=form, auth=basic(client))

    assert response.status_code == 200, response.text


def test_several_resource_indicators_are_not_repeats(
    signed_in: Browser, server: LiveServer, client: Any
) -> None:
    # RFC 8707 §2: ``resource`` is the one parameter that may be repeated.
    resource = server.issuer + "/mcp"
    code, verifier, _ = approve(signed_in, client, resource=resource)
    form = code_form(code, verifier, client) + [("resource", resource)] * 2

    response = signed_in.post("/token", data=form, auth=basic(client))

    assert response.status_code == 200, response.text
