"""docs/nginx-forward-auth.conf, run by a real nginx in front of a stub MCP server.

The shipped example is filled in and served by Debian's nginx on a free port:
``/mcp`` goes to a tiny upstream once ``/auth/verify`` on a live instance of
this service has accepted the token, and everything else is this service,
whose ISSUER is the nginx origin, exactly as the example tells operators.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import LiveServer, make_user
from demo_nginx import start_nginx, stop_nginx
from devservices import free_port
from helpers import Browser, get_code, obtain_token, redeem, register_client

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "nginx-forward-auth.conf"
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


@dataclass
class Upstream:
    """A stand-in MCP server that records what reaches it."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                upstream.seen.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": self.rfile.read(length),
                    }
                )
                body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def render_example(values: dict[str, str]) -> str:
    """The shipped example with its placeholders filled in, as envsubst would."""
    text = EXAMPLE.read_text()
    assert set(PLACEHOLDER.findall(text)) == set(values)
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@dataclass
class Gateway:
    url: str
    service: LiveServer
    upstream: Upstream

    def browser(self) -> Browser:
        """A browser that reaches the service only through nginx."""
        return Browser(SimpleNamespace(url=self.url))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(base_env: dict[str, str]) -> Iterator[Gateway]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        service = LiveServer(base_env, {"ISSUER": url, "TRUSTED_PROXY_HOPS": "1"})
        stack.callback(service.stop)
        upstream = Upstream()
        stub = ThreadingHTTPServer(("127.0.0.1", 0), upstream.handler())
        stack.callback(stub.server_close)
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        stack.callback(stub.shutdown)
        site = render_example(
            {
                "LISTEN": f"127.0.0.1:{port}",
                "SERVER_NAME": "127.0.0.1",
                "AUTH_SERVICE": service.url,
                "MCP_UPSTREAM": f"http://127.0.0.1:{stub.server_port}/mcp",
            }
        )
        directory = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="nginx-auth-"))
        )
        directory.chmod(0o755)  # workers run as nobody when we are root
        stack.callback(stop_nginx, start_nginx(directory, site, port))
        yield Gateway(url, service, upstream)


@pytest.fixture
def person(gateway: Gateway) -> dict[str, str]:
    return make_user(gateway.service, f"{secrets.token_hex(4)}@example.com")


def post_mcp(gateway: Gateway, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    return gateway.browser().post("/mcp", json=message, headers=headers)


def test_a_good_token_reaches_the_upstream_with_the_caller(
    gateway: Gateway, person: dict[str, str]
) -> None:
    # The whole OAuth flow runs through nginx too: registration, login, token.
    browser = gateway.browser()
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, person)
    token = redeem(browser, client, code, verifier).json()["access_token"]
    gateway.upstream.seen.clear()

    response = post_mcp(gateway, token, **{"X-Auth-Subject": "someone-else"})

    assert response.status_code == 200, response.text
    assert response.json()["result"] == {}
    (request,) = gateway.upstream.seen
    assert request["path"] == "/mcp"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["x-auth-subject"] == person["id"]  # not the client's claim
    assert headers["x-auth-client"] == client["client_id"]
    assert headers["x-auth-scope"] == "read write"
    assert headers["authorization"] == f"Bearer {token}"
    assert json.loads(request["body"])["method"] == "tools/list"


def test_no_token_is_challenged_and_never_reaches_the_upstream(
    gateway: Gateway,
) -> None:
    gateway.upstream.seen.clear()

    response = post_mcp(gateway)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{gateway.url}/.well-known/oauth-protected-resource"'
        ', scope="read write"'
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]
    assert gateway.upstream.seen == []


def test_a_bad_token_is_invalid_token(gateway: Gateway) -> None:
    gateway.upstream.seen.clear()

    response = post_mcp(gateway, "not-a-jwt")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", resource_metadata='
        f'"{gateway.url}/.well-known/oauth-protected-resource"'
    )
    assert gateway.upstream.seen == []


def test_a_token_without_read_is_insufficient_scope(
    gateway: Gateway, person: dict[str, str]
) -> None:
    browser = gateway.browser()
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, person, scope="write")
    token = redeem(browser, client, code, verifier).json()["access_token"]
    gateway.upstream.seen.clear()

    response = post_mcp(gateway, token)

    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="read", resource_metadata='
        f'"{gateway.url}/.well-known/oauth-protected-resource"'
    )
    assert gateway.upstream.seen == []


def test_a_token_for_the_direct_service_is_another_audience(
    gateway: Gateway, server: LiveServer, user: dict[str, str]
) -> None:
    # A token minted for another issuer's /mcp must not open this one.
    token = obtain_token(server.browser(), user)

    response = post_mcp(gateway, token)

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_discovery_through_nginx_names_the_public_origin(gateway: Gateway) -> None:
    browser = gateway.browser()

    resource = browser.get("/.well-known/oauth-protected-resource").json()
    server = browser.get("/.well-known/oauth-authorization-server").json()

    assert resource["resource"] == gateway.url + "/mcp"
    assert resource["authorization_servers"] == [gateway.url]
    assert server["issuer"] == gateway.url


def test_cors_preflight_is_answered_by_nginx(gateway: Gateway) -> None:
    response = gateway.browser().options(
        "/mcp",
        headers={
            "Origin": "https://inspector.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, mcp-protocol-version",
        },
    )

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "MCP-Protocol-Version" in response.headers["Access-Control-Allow-Headers"]
