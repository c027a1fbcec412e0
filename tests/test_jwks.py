"""Asymmetric tokens (docs/reference.md): verifiers nobody here wrote accept them.

PyJWT's ``PyJWKClient`` and a FastMCP resource server reached by the official
MCP SDK check our tokens against the published JWK Set alone, keys rotate
without a rejected token, and nothing that can mint a token is ever published.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import jwt as pyjwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastmcp import FastMCP
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from helpers import claims_for, obtain_token
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_sdk_client import Person, oauth_provider, run_session

from app.oauth.tokens import sign_claims

JWKS_PATH = "/.well-known/jwks.json"
AS_METADATA = "/.well-known/oauth-authorization-server"
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "impostor", "version": "1"},
    },
}
#: Members of a private JWK (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
#: One issuer for servers that stand for one deployment before and after a restart.
DEPLOYMENT_ISSUER = "http://127.0.0.1:8000"


def new_key(algorithm: str) -> Any:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def header_of(token: str) -> dict[str, Any]:
    return pyjwt.get_unverified_header(token)


def pyjwt_verify(jwks_uri: str, token: str, issuer: str) -> dict[str, Any]:
    """Verify the way a resource server using PyJWT would."""
    signing_key = pyjwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(token)
    return pyjwt.decode(
        token,
        signing_key,
        algorithms=["ES256", "EdDSA"],
        audience=issuer + "/mcp",
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "jti"]},
    )


def mcp_status(server: Any, token: str) -> int:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    return server.browser().post("/mcp", json=TOOLS_LIST, headers=headers).status_code


@pytest.fixture(params=["ES256", "EdDSA"])
def algorithm(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def signing_server(make_server: Any, algorithm: str) -> Any:
    return make_server(JWT_SIGNING_KEY=private_pem(new_key(algorithm)))


# --- The JWK Set ----------------------------------------------------------------


def test_jwks_publishes_the_public_key_named_by_its_thumbprint(
    signing_server: Any, algorithm: str
) -> None:
    browser = signing_server.browser()
    metadata = browser.get(AS_METADATA).json()
    response = browser.get(JWKS_PATH, headers={"Origin": "https://app.example"})

    assert metadata["jwks_uri"] == signing_server.issuer + JWKS_PATH
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    (key,) = response.json()["keys"]
    assert not PRIVATE_MEMBERS & set(key)
    assert key["kid"] == thumbprint(key)
    assert (key["alg"], key["use"]) == (algorithm, "sig")
    assert key["kty"] == ("EC" if algorithm == "ES256" else "OKP")


def test_tokens_name_their_key_and_pyjwt_verifies_them(
    signing_server: Any, user: dict[str, str], algorithm: str
) -> None:
    issuer = signing_server.issuer
    token = obtain_token(signing_server.browser(), user)
    jwks_uri = signing_server.browser().get(AS_METADATA).json()["jwks_uri"]
    (key,) = signing_server.browser().get(JWKS_PATH).json()["keys"]

    assert header_of(token) == {"alg": algorithm, "typ": "at+jwt", "kid": key["kid"]}
    claims = pyjwt_verify(jwks_uri, token, issuer)
    assert (claims["sub"], claims["scope"]) == (user["id"], "read write")
    with pytest.raises(pyjwt.InvalidAudienceError):
        client = pyjwt.PyJWKClient(jwks_uri)
        pyjwt.decode(
            token,
            client.get_signing_key_from_jwt(token),
            algorithms=[algorithm],
            audience=issuer + "/other",
            issuer=issuer,
        )
    with pytest.raises(pyjwt.InvalidIssuerError):
        pyjwt_verify(jwks_uri, token, "https://elsewhere.example")
    assert mcp_status(signing_server, token) == 200


# --- The existing flows, signed with a key ----------------------------------------


def test_mcp_sdk_completes_the_whole_flow_on_an_asymmetric_server(
    signing_server: Any, user: dict[str, str], algorithm: str
) -> None:
    person = Person(signing_server.browser(), user)
    provider = oauth_provider(signing_server, person)

    outcome = anyio.run(run_session, signing_server, provider)

    assert outcome["whoami"]["sub"] == user["id"]
    tokens = provider.context.current_tokens
    assert tokens is not None
    assert header_of(tokens.access_token)["alg"] == algorithm


def test_api_key_tokens_are_signed_with_the_same_key(
    signing_server: Any, user: dict[str, str], algorithm: str
) -> None:
    browser = signing_server.browser()
    oauth_token = obtain_token(browser, user)
    created = browser.post(
        "/api-keys",
        json={"name": "laptop"},
        headers={"Authorization": f"Bearer {oauth_token}"},
    )
    assert created.status_code == 201, created.text
    exchanged = browser.post("/auth/token", json={"apiKey": created.json()["key"]})
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["token"]

    assert header_of(token)["kid"] == header_of(oauth_token)["kid"]
    issuer = signing_server.issuer
    claims = pyjwt_verify(issuer + JWKS_PATH, token, issuer)
    assert claims["sub"] == user["id"]
    verify = browser.get("/auth/verify", headers={"Authorization": f"Bearer {token}"})
    assert verify.status_code == 200


def forged(server: Any, user: dict[str, str], case: str) -> str:
    """A token an ES256 server must refuse, built the way an attacker would."""
    settings = server.app.config["SETTINGS"]
    claims = claims_for(server, user, jti="forged", client_id=None)
    our_kid = server.browser().get(JWKS_PATH).json()["keys"][0]["kid"]
    stranger = ECKey.import_key(private_pem(new_key("ES256")))
    if case == "HS256 under JWT_SECRET":
        header = {"alg": "HS256", "typ": "at+jwt"}
        return jose_jwt.encode(header, claims, OctKey.import_key(settings.jwt_secret))
    if case == "HS256 under the public key":
        # The classic confusion: the published key used as an HMAC secret.
        ours = serialization.load_pem_private_key(
            settings.jwt_signing_key.encode(), None
        )
        header = {"alg": "HS256", "typ": "at+jwt", "kid": our_kid}
        signing_input = ".".join(
            b64(json.dumps(part).encode()) for part in (header, claims)
        )
        mac = hmac.new(public_pem(ours).encode(), signing_input.encode(), "sha256")
        return f"{signing_input}.{b64(mac.digest())}"
    if case == "another key, its own kid":
        other = dataclasses.replace(
            settings, jwt_signing_key=private_pem(new_key("ES256"))
        )
        return sign_claims(claims, other)
    if case == "another key, our kid":
        header = {"alg": "ES256", "typ": "at+jwt", "kid": our_kid}
        return jose_jwt.encode(header, claims, stranger)
    if case == "no kid":
        return jose_jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, stranger)
    if case == "alg none":
        unsigned = b64(
            json.dumps({"alg": "none", "typ": "at+jwt", "kid": our_kid}).encode()
        )
        return f"{unsigned}.{b64(json.dumps(claims).encode())}."
    if case == "expired":
        return sign_claims({**claims, "iat": 1000, "exp": 2000}, settings)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "HS256 under JWT_SECRET",
        "HS256 under the public key",
        "another key, its own kid",
        "another key, our kid",
        "no kid",
        "alg none",
        "expired",
    ],
)
def test_an_asymmetric_server_refuses_forged_tokens(
    make_server: Any, user: dict[str, str], case: str
) -> None:
    server = make_server(JWT_SIGNING_KEY=private_pem(new_key("ES256")))
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {forged(server, user, case)}"}

    response = server.browser().post("/mcp", json=TOOLS_LIST, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer error="invalid_token"'
    )


# --- A FastMCP resource server that trusts our JWK Set ----------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def fastmcp_server(issuer: str, jwks_uri: str, algorithm: str) -> Iterator[str]:
    """Serve a FastMCP app guarded by its own JWTVerifier; yield its /mcp URL."""
    verifier = JWTVerifier(
        jwks_uri=jwks_uri, issuer=issuer, audience=issuer + "/mcp", algorithm=algorithm
    )
    resource = FastMCP("resource server", auth=verifier)

    @resource.tool
    def subject() -> str:
        """Who the bearer token speaks for."""
        token = get_access_token()
        assert token is not None
        return token.claims["sub"]

    port = free_port()
    config = uvicorn.Config(
        resource.http_app(path="/mcp"), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def call_subject(url: str, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        return await session.call_tool("subject", {})


# FastMCP verifies EdDSA with joserfc's stock registry, which warns that RFC 9864
# prefers the name "Ed25519"; PyJWT knows only "EdDSA", so that is what we sign.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
def test_a_fastmcp_server_accepts_our_tokens_through_the_mcp_sdk(
    signing_server: Any, user: dict[str, str], algorithm: str
) -> None:
    issuer = signing_server.issuer
    jwks_uri = signing_server.browser().get(AS_METADATA).json()["jwks_uri"]
    token = obtain_token(signing_server.browser(), user)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    stranger = private_pem(new_key(algorithm))
    impostors = [
        # A key of its own, named by its own kid ...
        sign_claims(
            claims,
            dataclasses.replace(
                signing_server.app.config["SETTINGS"], jwt_signing_key=stranger
            ),
        ),
        # ... and the same key claiming to be ours.
        pyjwt.encode(
            claims,
            stranger,  # PyJWT loads the PEM itself
            algorithm=algorithm,
            headers={"typ": "at+jwt", "kid": header_of(token)["kid"]},
        ),
    ]

    with fastmcp_server(issuer, jwks_uri, algorithm) as url:
        result = anyio.run(call_subject, url, token)
        refusals = [
            httpx2.post(
                url,
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {impostor}"},
            )
            for impostor in impostors
        ]

    assert result.is_error is False
    assert result.content[0].text == user["id"]
    for refused in refusals:
        assert refused.status_code == 401
        assert "invalid_token" in refused.headers["WWW-Authenticate"]


# --- Rotation -------------------------------------------------------------------


def test_keys_rotate_without_a_rejected_token(
    make_server: Any, user: dict[str, str]
) -> None:
    old, new = new_key("ES256"), new_key("EdDSA")
    before = make_server(ISSUER=DEPLOYMENT_ISSUER, JWT_SIGNING_KEY=private_pem(old))
    old_token = obtain_token(before.browser(), user)

    # The old key moves to JWT_VERIFY_KEYS (as a public key, beside another
    # retired one given as a private key); the new key signs.
    older = new_key("ES256")
    rotated = make_server(
        ISSUER=DEPLOYMENT_ISSUER,
        JWT_SIGNING_KEY=private_pem(new),
        JWT_VERIFY_KEYS=public_pem(old) + private_pem(older),
    )
    new_token = obtain_token(rotated.browser(), user)
    jwks = rotated.browser().get(JWKS_PATH)

    assert header_of(new_token)["kid"] != header_of(old_token)["kid"]
    assert [key["alg"] for key in jwks.json()["keys"]] == ["EdDSA", "ES256", "ES256"]
    assert '"d"' not in jwks.text
    for key in jwks.json()["keys"]:
        assert not PRIVATE_MEMBERS & set(key)
    for token in (old_token, new_token):
        assert mcp_status(rotated, token) == 200
        claims = pyjwt_verify(rotated.url + JWKS_PATH, token, DEPLOYMENT_ISSUER)
        assert claims["sub"] == user["id"]

    # Once the old tokens have expired, the old key is dropped from the list.
    retired = make_server(ISSUER=DEPLOYMENT_ISSUER, JWT_SIGNING_KEY=private_pem(new))
    assert mcp_status(retired, old_token) == 401
    assert mcp_status(retired, new_token) == 200
    with pytest.raises(pyjwt.PyJWKClientError):
        pyjwt_verify(retired.url + JWKS_PATH, old_token, DEPLOYMENT_ISSUER)
