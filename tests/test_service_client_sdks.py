"""The official MCP SDKs' machine-to-machine providers reach the service's /mcp.

A service client made with the real command gets its token through the SDK's
own discovery (RFC 9728, RFC 8414) and ``client_credentials`` grant, with a
secret or a signed assertion (RFC 7523 §2.2), then lists the tools and calls
``whoami`` over Streamable HTTP: the Python SDK 2.3's
``ClientCredentialsOAuthProvider`` and ``PrivateKeyJWTOAuthProvider``, and the
TypeScript SDK's ``ClientCredentialsProvider`` and ``PrivateKeyJwtProvider``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import LiveServer
from helpers import (
    claims_of,
    public_jwks,
    run_command,
    signing_key,
)
from mcp.client.auth.exceptions import OAuthTokenError
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp_sdk_client import MemoryStorage, run_session
from test_oidc_discovery import sdk_modules  # noqa: F401  (a fixture, the pinned SDK)

TS_SCRIPT = Path(__file__).resolve().parent / "js" / "sdk_client_credentials.mjs"


def create_service(server: Any, *options: str, jwks: Any = None) -> dict[str, Any]:
    """``clients create-service`` for the built-in /mcp; its JSON."""
    args = ["clients", "create-service", "sdk-service"]
    args += ["--resource", server.issuer + "/mcp", "--scopes", "read write", *options]
    with tempfile.TemporaryDirectory() as folder:
        if jwks is not None:
            path = Path(folder) / "jwks.json"
            path.write_text(json.dumps(jwks))
            args += ["--jwks-file", str(path)]
        result = run_command(server, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def private_pem(key: Any) -> str:
    return key.as_pem(private=True).decode()


# --- The Python SDK ----------------------------------------------------------------


def test_python_sdk_client_credentials_with_a_secret(
    server: LiveServer, user: dict[str, str]
) -> None:
    client = create_service(server, "--for", user["email"])
    storage = MemoryStorage()
    provider = ClientCredentialsOAuthProvider(
        server_url=server.url + "/mcp",
        storage=storage,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        issuer=server.issuer,
    )

    outcome = anyio.run(run_session, server, provider)

    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]
    assert outcome["whoami"]["sub"] == user["id"]
    assert outcome["whoami"]["client_id"] == client["client_id"]
    assert storage.tokens is not None and storage.tokens.refresh_token is None
    claims = claims_of(storage.tokens.access_token)
    assert claims["aud"] == server.issuer + "/mcp"
    assert claims["client_id"] == client["client_id"]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_python_sdk_private_key_jwt(
    server: LiveServer, user: dict[str, str], alg: str
) -> None:
    key = signing_key(alg)
    client = create_service(server, "--for", user["email"], jwks=public_jwks(key))
    assert client["token_endpoint_auth_method"] == "private_key_jwt"
    signed = SignedJWTParameters(
        issuer=client["client_id"],
        subject=client["client_id"],
        signing_key=private_pem(key),
        signing_algorithm=alg,
    )
    storage = MemoryStorage()
    provider = PrivateKeyJWTOAuthProvider(
        server_url=server.url + "/mcp",
        storage=storage,
        client_id=client["client_id"],
        assertion_provider=signed.create_assertion_provider(),
        issuer=server.issuer,
    )

    outcome = anyio.run(run_session, server, provider)

    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]
    assert outcome["whoami"]["sub"] == user["id"]
    assert outcome["whoami"]["client_id"] == client["client_id"]
    assert storage.tokens is not None
    assert claims_of(storage.tokens.access_token)["client_id"] == client["client_id"]


def test_python_sdk_with_a_wrong_secret_gets_no_session(
    server: LiveServer, user: dict[str, str]
) -> None:
    client = create_service(server, "--for", user["email"])
    provider = ClientCredentialsOAuthProvider(
        server_url=server.url + "/mcp",
        storage=MemoryStorage(),
        client_id=client["client_id"],
        client_secret=client["client_secret"] + "x",
        issuer=server.issuer,
    )

    with pytest.raises(ExceptionGroup) as raised:
        anyio.run(run_session, server, provider)

    failed = raised.value.subgroup(OAuthTokenError)
    assert failed is not None, raised.value
    assert "(401)" in str(failed.exceptions[0])
    assert "invalid_client" in str(failed.exceptions[0])


# --- The TypeScript SDK ------------------------------------------------------------


def run_ts(modules: Path, options: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(TS_SCRIPT), str(modules), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, (done.returncode, done.stderr)
    outcome = json.loads(lines[-1])
    assert done.returncode == 0 and "error" not in outcome, outcome
    return outcome


def test_typescript_sdk_client_credentials_provider(
    server: LiveServer,
    user: dict[str, str],
    sdk_modules: Path,  # noqa: F811
) -> None:
    client = create_service(server, "--for", user["email"])

    outcome = run_ts(
        sdk_modules,
        {
            "url": server.url + "/mcp",
            "issuer": server.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "tool": "whoami",
        },
    )

    assert outcome["tools"] == ["whoami"]
    assert outcome["is_error"] is False
    assert outcome["result"]["sub"] == user["id"]
    assert outcome["result"]["client_id"] == client["client_id"]
    assert claims_of(outcome["access_token"])["client_id"] == client["client_id"]


def test_typescript_sdk_private_key_jwt_provider(
    server: LiveServer,
    user: dict[str, str],
    sdk_modules: Path,  # noqa: F811
) -> None:
    key = signing_key("ES256")
    client = create_service(server, "--for", user["email"], jwks=public_jwks(key))

    outcome = run_ts(
        sdk_modules,
        {
            "url": server.url + "/mcp",
            "issuer": server.issuer,
            "client_id": client["client_id"],
            "private_key": private_pem(key),
            "algorithm": "ES256",
            "tool": "whoami",
        },
    )

    assert outcome["tools"] == ["whoami"]
    assert outcome["result"]["sub"] == user["id"]
    assert outcome["result"]["client_id"] == client["client_id"]
