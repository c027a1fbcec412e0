"""Discovery (docs/reference.md) and who may call the service from a browser (CORS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import LiveServer
from helpers import SIGNING_ALGORITHMS, Browser

PATH_ISSUER = "https://www.example.com/prod-api"

AS_METADATA = "/.well-known/oauth-authorization-server"
PR_METADATA = "/.well-known/oauth-protected-resource"
AUTH_METHODS = {"client_secret_basic", "client_secret_post", "none", "private_key_jwt"}


def assert_authorization_server_metadata(document: dict, issuer: str) -> None:
    assert document["issuer"] == issuer
    assert document["authorization_endpoint"] == issuer + "/authorize"
    assert document["token_endpoint"] == issuer + "/token"
    assert document["registration_endpoint"] == issuer + "/register"
    assert document["response_types_supported"] == ["code"]
    assert document["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ]
    assert document["device_authorization_endpoint"] == issuer + "/device_authorization"
    assert document["authorization_grant_profiles_supported"] == [
        "urn:ietf:params:oauth:grant-profile:id-jag"
    ]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["token_endpoint_auth_methods_supported"]) == AUTH_METHODS
    assert len(document["token_endpoint_auth_methods_supported"]) == 4
    for endpoint in ("token", "revocation"):
        algorithms = document[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert set(algorithms) == SIGNING_ALGORITHMS
    # offline_access only here, never in the protected resource's (docs/reference.md).
    assert sorted(document["scopes_supported"]) == ["offline_access", "read", "write"]
    # Every URL the document names is built from the issuer, nothing else.
    for name, value in document.items():
        if name.endswith("_endpoint") or name.endswith("_uri"):
            assert value.startswith(issuer + "/"), (name, value)


def assert_protected_resource_metadata(document: dict, issuer: str) -> None:
    assert document["resource"] == issuer + "/mcp"
    assert document["authorization_servers"] == [issuer]
    assert sorted(document["scopes_supported"]) == ["read", "write"]
    assert document["bearer_methods_supported"] == ["header"]


# --- Authorization server metadata (RFC 8414) ---------------------------------


@pytest.mark.parametrize("path", [AS_METADATA, "/.well-known/openid-configuration"])
def test_authorization_server_metadata_names_every_endpoint(
    browser: Browser, server: LiveServer, path: Any
) -> None:
    response = browser.get(path)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert_authorization_server_metadata(response.json(), server.url)


def test_issuer_is_the_exact_base_url_without_trailing_slash(
    browser: Browser, server: LiveServer
) -> None:
    document = browser.get(AS_METADATA).json()

    assert document["issuer"] == server.url
    assert not document["issuer"].endswith("/")
    assert document["authorization_response_iss_parameter_supported"] is True


@pytest.mark.parametrize(
    ("path", "field"),
    [("/revoke", "revocation_endpoint"), ("/introspect", "introspection_endpoint")],
)
def test_every_further_endpoint_the_service_has_is_advertised(
    browser: Browser, server: LiveServer, path: Any, field: Any
) -> None:
    document = browser.get(AS_METADATA).json()
    exists = browser.post(path, data={"token": "x"}).status_code not in (404, 405)

    assert (field in document) == exists
    if exists:
        assert document[field] == server.url + path


def test_advertised_endpoints_exist(browser: Browser, server: LiveServer) -> None:
    document = browser.get(AS_METADATA).json()
    for field in ("token_endpoint", "registration_endpoint"):
        path = document[field].removeprefix(server.url)
        assert browser.post(path, data={}).status_code not in (404, 405), field
    path = document["authorization_endpoint"].removeprefix(server.url)
    assert browser.get(path).status_code == 400


# --- Protected resource metadata (RFC 9728) -----------------------------------


@pytest.mark.parametrize("path", [PR_METADATA, PR_METADATA + "/mcp"])
def test_protected_resource_metadata_describes_mcp(
    browser: Browser, server: LiveServer, path: Any
) -> None:
    response = browser.get(path)

    assert response.status_code == 200
    assert_protected_resource_metadata(response.json(), server.url)


# --- An issuer with a path (behind a proxy that forwards /prod-api/*) ---------


@pytest.fixture
def prefixed(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server whose ISSUER carries a path; note the trailing slash is dropped."""
    return make_server(ISSUER=PATH_ISSUER + "/")


@pytest.mark.parametrize(
    "path",
    [
        AS_METADATA + "/prod-api",  # RFC 8414 §3.1, for the proxy to expose at root
        "/.well-known/openid-configuration",  # ISSUER + this, reached via the proxy
        AS_METADATA,
    ],
)
def test_path_issuer_metadata_is_built_from_issuer(prefixed: Any, path: Any) -> None:
    response = prefixed.browser().get(path)

    assert response.status_code == 200
    assert_authorization_server_metadata(response.json(), PATH_ISSUER)


@pytest.mark.parametrize("path", [PR_METADATA, PR_METADATA + "/prod-api/mcp"])
def test_path_issuer_protected_resource_metadata(prefixed: Any, path: Any) -> None:
    response = prefixed.browser().get(path)

    assert response.status_code == 200
    assert_protected_resource_metadata(response.json(), PATH_ISSUER)


@pytest.mark.parametrize(
    "path", [AS_METADATA + "/other", AS_METADATA + "/prod-api/extra"]
)
def test_path_issuer_metadata_is_not_served_for_other_paths(
    prefixed: Any, path: Any
) -> None:
    assert prefixed.browser().get(path).status_code == 404


def test_metadata_ignores_the_host_header(browser: Browser, server: LiveServer) -> None:
    response = browser.get(AS_METADATA, headers={"Host": "evil.example"})

    assert response.json()["issuer"] == server.url
    assert "evil.example" not in response.text


# --- CORS: metadata, registration and token answer any origin -----------------

ORIGIN = "https://inspector.example"

OPEN_ROUTES = [
    ("GET", AS_METADATA),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", PR_METADATA),
    ("GET", PR_METADATA + "/mcp"),
    ("POST", "/register"),
    ("POST", "/token"),
]


@pytest.mark.parametrize(("method", "path"), OPEN_ROUTES)
def test_open_routes_allow_any_origin(browser: Browser, method: Any, path: Any) -> None:
    response = browser.request(method, path, headers={"Origin": ORIGIN}, json={})

    assert response.headers.get("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize(("method", "path"), OPEN_ROUTES)
def test_open_routes_answer_preflight(browser: Browser, method: Any, path: Any) -> None:
    response = browser.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": (
                "authorization, content-type, mcp-protocol-version"
            ),
        },
    )

    assert response.status_code in (200, 204)
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    allowed = response.headers.get("Access-Control-Allow-Headers", "").lower()
    for header in ("authorization", "content-type", "mcp-protocol-version"):
        assert header in allowed
    assert method in response.headers.get("Access-Control-Allow-Methods", "")


CORS_ROUTES = [*OPEN_ROUTES, ("POST", "/mcp"), ("POST", "/auth/token")]


@pytest.mark.parametrize(("method", "path"), CORS_ROUTES)
def test_preflights_advertise_only_the_routes_methods(
    browser: Browser, method: Any, path: Any
) -> None:
    advertised = browser.options(
        path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": method}
    ).headers["Access-Control-Allow-Methods"]
    other = browser.options(
        path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"}
    )

    assert {m.strip() for m in advertised.split(",")} == {method}
    assert "Access-Control-Allow-Methods" not in other.headers


def test_token_errors_expose_www_authenticate(browser: Browser) -> None:
    response = browser.post(
        "/token",
        data={"grant_type": "authorization_code"},
        auth=("nobody", "nothing"),
        headers={"Origin": ORIGIN},
    )

    assert response.status_code == 401
    exposed = response.headers.get("Access-Control-Expose-Headers", "").lower()
    assert "www-authenticate" in exposed


@pytest.mark.parametrize("path", ["/authorize", "/login"])
@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_pages_for_people_do_not_answer_other_origins(
    browser: Browser, path: str, method: str
) -> None:
    response = browser.request(
        method,
        path,
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )

    assert "Access-Control-Allow-Origin" not in response.headers


# --- The JWK Set (docs/reference.md): published only when there are public keys ------

JWKS = "/.well-known/jwks.json"


def ec_private_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def test_an_hs256_server_publishes_no_key_and_no_jwks_uri(
    browser: Browser, server: LiveServer
) -> None:
    secret = server.app.config["SETTINGS"].jwt_secret

    document = browser.get(AS_METADATA).json()
    response = browser.get(JWKS)

    assert "jwks_uri" not in document
    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert secret not in response.text


@pytest.mark.parametrize("path", [AS_METADATA, AS_METADATA + "/prod-api"])
def test_jwks_uri_is_advertised_from_the_issuer_with_a_signing_key(
    make_server: Callable[..., LiveServer], path: Any
) -> None:
    keyed = make_server(ISSUER=PATH_ISSUER, JWT_SIGNING_KEY=ec_private_pem())

    document = keyed.browser().get(path).json()

    assert_authorization_server_metadata(document, PATH_ISSUER)
    assert document["jwks_uri"] == PATH_ISSUER + JWKS
    assert keyed.browser().get(JWKS).status_code == 200


def test_the_jwk_set_answers_any_origin_and_preflight(
    make_server: Callable[..., LiveServer],
) -> None:
    keyed = make_server(JWT_SIGNING_KEY=ec_private_pem())
    browser = keyed.browser()

    response = browser.get(JWKS, headers={"Origin": ORIGIN})
    preflight = browser.options(
        JWKS, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )

    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert preflight.headers.get("Access-Control-Allow-Origin") == "*"
    assert "GET" in preflight.headers.get("Access-Control-Allow-Methods", "")
