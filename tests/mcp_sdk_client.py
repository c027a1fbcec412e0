"""The official MCP Python SDK as a client: OAuth provider and a session."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from helpers import Browser
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

#: A loopback redirect URI, as a desktop MCP client registers (RFC 8252 §7.3).
REDIRECT_URI = "http://127.0.0.1:33418/callback"


class MemoryStorage:
    """The SDK's TokenStorage protocol, kept in memory for one test."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Person:
    """Plays the user in a browser: signs in and approves on the real pages."""

    def __init__(self, browser: Browser, user: dict[str, str]) -> None:
        self.browser = browser
        self.user = user
        self.authorization_urls: list[str] = []
        self.result: AuthorizationCodeResult | None = None

    def approve(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        to_login = self.browser.get(authorization_url)
        assert to_login.status_code == 302, to_login.text
        consent_url = self.sign_in(to_login.headers["Location"])
        consent_page = self.browser.get(consent_url)
        assert consent_page.status_code == 200, consent_page.text
        answer = self.browser.post(
            consent_url, data={**self.browser.form(consent_page), "decision": "approve"}
        )
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.result = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    def sign_in(self, login_url: str) -> str:
        """Sign in on the page at ``login_url``; where it sends the browser on."""
        login_page = self.browser.get(login_url)
        assert login_page.status_code == 200, login_page.text
        signed_in = self.browser.post(
            login_url,
            data={
                **self.browser.form(login_page),
                "email": self.user["email"],
                "password": self.user["password"],
            },
        )
        assert signed_in.status_code == 302, signed_in.text
        return str(signed_in.headers["Location"])

    async def redirect_handler(self, authorization_url: str) -> None:
        # The live server runs in another thread; keep the event loop free.
        await anyio.to_thread.run_sync(self.approve, authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def oauth_provider(server: Any, person: Person, **metadata: Any) -> OAuthClientProvider:
    client_metadata = OAuthClientMetadata(
        client_name="MCP SDK test client",
        redirect_uris=[AnyUrl(REDIRECT_URI)],
        **metadata,
    )
    return OAuthClientProvider(
        server_url=server.url + "/mcp",
        client_metadata=client_metadata,
        storage=MemoryStorage(),
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )


def whoami_of(result: Any) -> dict[str, Any]:
    assert result.is_error is False
    (content,) = result.content
    assert content.type == "text"
    return json.loads(content.text)


async def run_session(server: Any, provider: OAuthClientProvider) -> dict[str, Any]:
    """Connect with ClientSession, initialize, list tools and call whoami."""
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30) as http,
        streamable_http_client(server.url + "/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        initialized = await session.initialize()
        await session.send_ping()
        tools = await session.list_tools()
        called = await session.call_tool("whoami", {})
    return {
        "initialized": initialized,
        "tools": tools,
        "whoami": whoami_of(called),
        "structured": called.structured_content,
    }
