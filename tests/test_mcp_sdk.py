"""The official MCP Python SDK completes the whole flow against the live server.

Discovery (RFC 9728, RFC 8414), dynamic registration (RFC 7591), authorization
with PKCE through the real login and consent pages, the token exchange, then
MCP over Streamable HTTP: nothing here is specific to this server.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp_sdk_client import Person, oauth_provider, run_session, whoami_of


@pytest.mark.parametrize(
    "auth_method", ["client_secret_basic", "client_secret_post", "none"]
)
def test_sdk_client_session_completes_the_whole_flow(
    server: Any, user: dict[str, str], auth_method: str
) -> None:
    person = Person(server.browser(), user)
    provider = oauth_provider(server, person, token_endpoint_auth_method=auth_method)

    outcome = anyio.run(run_session, server, provider)

    assert len(person.authorization_urls) == 1
    authorize = parse_qs(urlsplit(person.authorization_urls[0]).query)
    assert authorize["resource"] == [server.issuer + "/mcp"]
    assert authorize["code_challenge_method"] == ["S256"]
    # The SDK adds offline_access because the metadata lists it (docs/reference.md);
    # it is accepted, and the token's scope is still just what was granted.
    assert set(authorize["scope"][0].split()) == {"read", "write", "offline_access"}

    initialized = outcome["initialized"]
    assert initialized.protocol_version == "2025-11-25"
    assert initialized.server_info.name == "mcp-auth-server"
    assert initialized.capabilities.tools is not None
    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]

    client_info = provider.context.client_info
    assert client_info is not None
    client_id = client_info.client_id
    assert outcome["whoami"] == {
        "sub": user["id"],
        "email": user["email"],
        "client_id": client_id,
        "scope": "read write",
    }
    assert outcome["structured"] == outcome["whoami"]
    assert client_info.token_endpoint_auth_method == auth_method


async def run_client(server: Any, provider: OAuthClientProvider) -> dict[str, Any]:
    """Connect as the SDK's high-level Client does by default (``mode="auto"``)."""
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        transport = streamable_http_client(server.url + "/mcp", http_client=http)
        async with Client(transport) as client:
            version = client.session.protocol_version
            tools = await client.list_tools()
            called = await client.call_tool("whoami", {})
    return {"version": version, "tools": tools, "whoami": whoami_of(called)}


def test_sdk_high_level_client_falls_back_to_the_initialize_handshake(
    server: Any, user: dict[str, str]
) -> None:
    # Client(mode="auto") first probes the 2026 `server/discover`; a server of
    # the handshake era must refuse it so that the client initializes instead.
    person = Person(server.browser(), user)
    provider = oauth_provider(server, person)

    outcome = anyio.run(run_client, server, provider)

    assert outcome["version"] == "2025-11-25"
    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]
    assert outcome["whoami"]["email"] == user["email"]
    assert len(person.authorization_urls) == 1


def test_sdk_client_refreshes_without_a_second_sign_in(
    make_server: Any, user: dict[str, str]
) -> None:
    # docs/reference.md: the SDK asks for refresh_token and uses it when the access
    # token has expired, in a new session, instead of the browser.
    live = make_server(ACCESS_TOKEN_TTL="2")
    person = Person(live.browser(), user)
    provider = oauth_provider(live, person)

    first = anyio.run(run_session, live, provider)
    issued = provider.context.current_tokens
    time.sleep(3)
    second = anyio.run(run_session, live, provider)

    assert first["whoami"]["email"] == second["whoami"]["email"] == user["email"]
    assert len(person.authorization_urls) == 1
    client_info = provider.context.client_info
    assert client_info is not None
    assert "refresh_token" in client_info.grant_types
    refreshed = provider.context.current_tokens
    assert issued is not None and refreshed is not None
    assert issued.refresh_token and refreshed.refresh_token
    assert refreshed.refresh_token != issued.refresh_token
    assert refreshed.access_token != issued.access_token
