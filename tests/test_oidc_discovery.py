"""OpenID Connect discovery that strict clients accept (docs/reference.md).

Behind a proxy that forwards only ``/prod-api/*``, ``ISSUER/.well-known/
openid-configuration`` is the one metadata URL an MCP client reaches. The MCP
TypeScript SDK validates that answer against OpenID Connect Discovery 1.0 §3;
the SDK itself, run under Node, is the judge here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveServer
from helpers import Browser, npm_package

ROOT = Path(__file__).resolve().parent.parent
#: The SDK under test, pinned so the check does not drift under us.
SDK = "@modelcontextprotocol/sdk@1.32.2"
#: Git-ignored, and kept between runs so npm fetches the SDK once.
NODE_MODULES_HOME = ROOT / ".devdata" / "node"
SCRIPT = Path(__file__).resolve().parent / "js" / "sdk_discovery.mjs"
PREFIX = "/prod-api"
OIDC = "/.well-known/openid-configuration"


@pytest.fixture(scope="session")
def sdk_modules() -> Path:
    """``node_modules`` holding the MCP TypeScript SDK, installed on first use."""
    return npm_package(SDK, NODE_MODULES_HOME)


def sdk_discovery(modules: Path, mcp_url: str) -> dict:
    result = subprocess.run(
        ["node", str(SCRIPT), str(modules), mcp_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture
def prefixed(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A deployment at ``http://127.0.0.1:<port>/prod-api``; nothing else routed."""
    return make_server(prefix=PREFIX)


def test_openid_configuration_has_what_oidc_discovery_requires(
    browser: Browser, server: LiveServer
) -> None:
    document = browser.get(OIDC).json()

    assert document["issuer"] == server.issuer
    assert document["jwks_uri"] == server.issuer + "/.well-known/jwks.json"
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == ["HS256"]
    assert document["response_types_supported"] == ["code"]


def test_oauth_metadata_claims_nothing_of_openid_connect(browser: Browser) -> None:
    document = browser.get("/.well-known/oauth-authorization-server").json()

    assert "subject_types_supported" not in document
    assert "id_token_signing_alg_values_supported" not in document


def test_jwks_uri_serves_an_empty_key_set_for_shared_secret_tokens(
    browser: Browser, server: LiveServer
) -> None:
    jwks_uri = browser.get(OIDC).json()["jwks_uri"]

    response = browser.get(jwks_uri, headers={"Origin": "https://app.example"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    # HS256 keys are secret: publishing one would let anyone mint tokens.
    assert response.json() == {"keys": []}


def test_path_issuer_serves_openid_configuration_under_its_path(prefixed: Any) -> None:
    browser = prefixed.browser()

    document = browser.get(OIDC).json()

    assert prefixed.issuer.endswith(PREFIX)
    assert document["issuer"] == prefixed.issuer
    assert document["jwks_uri"] == prefixed.issuer + "/.well-known/jwks.json"
    assert browser.get(document["jwks_uri"]).json() == {"keys": []}


def test_typescript_sdk_discovers_a_path_issuer_behind_a_proxy(
    prefixed: Any, sdk_modules: Path
) -> None:
    found = sdk_discovery(sdk_modules, prefixed.issuer + "/mcp")

    assert found["ok"], found
    metadata = found["authorizationServerMetadata"]
    assert found["authorizationServerUrl"] == prefixed.issuer
    assert metadata["issuer"] == prefixed.issuer
    assert metadata["registration_endpoint"] == prefixed.issuer + "/register"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    # Only the OpenID Connect URL under the issuer's path is reachable.
    assert [url for url, status in found["fetched"] if status == 200] == [
        prefixed.issuer + "/.well-known/oauth-protected-resource",
        prefixed.issuer + OIDC,
    ]


def test_typescript_sdk_discovers_a_root_issuer(
    server: LiveServer, sdk_modules: Path
) -> None:
    found = sdk_discovery(sdk_modules, server.issuer + "/mcp")

    assert found["ok"], found
    assert found["authorizationServerMetadata"]["issuer"] == server.issuer
