"""POST /mcp: MCP JSON-RPC over Streamable HTTP (stateless, JSON responses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy
from helpers import api_key_token, obtain_token, result_of

SUPPORTED = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
ORIGIN = "https://inspector.example"


@pytest.fixture
def token(browser: Any, user: dict[str, str]) -> str:
    return obtain_token(browser, user)


def rpc(
    browser: Any,
    token: str,
    method: str,
    params: dict[str, Any] | None = None,
    request_id: Any = 1,
    **kwargs: Any,
) -> Any:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return post(browser, token, json=message, **kwargs)


def post(browser: Any, token: str, headers: dict | None = None, **kwargs: Any) -> Any:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        **(headers or {}),
    }
    return browser.post("/mcp", headers=headers, **kwargs)


def error_of(response: Any, status: int, code: int, request_id: Any = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    return body["error"]


# The lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED)
def test_initialize_echoes_a_supported_version(
    browser: Any, token: str, version: Any
) -> None:
    params = {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    }

    result = result_of(rpc(browser, token, "initialize", params))

    assert result["protocolVersion"] == version
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"]["name"] == "mcp-auth-server"
    assert result["serverInfo"]["version"]


@pytest.mark.parametrize("version", ["2026-07-28", "1999-01-01", "latest"])
def test_initialize_offers_the_latest_for_an_unknown_version(
    browser: Any, token: str, version: str
) -> None:
    # MCP lifecycle §Version Negotiation: answer with a version we support.
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {}}

    result = result_of(
        rpc(
            browser,
            token,
            "initialize",
            params,
            headers={"MCP-Protocol-Version": version},
        )
    )

    assert result["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize("params", [{}, {"protocolVersion": 20251125}])
def test_initialize_without_a_version_is_invalid_params(
    browser: Any, token: str, params: dict
) -> None:
    error_of(rpc(browser, token, "initialize", params), 200, -32602, 1)


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/unknown", "params": []},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": 4, "error": {"code": -1, "message": "no"}},
    ],
)
def test_notifications_and_responses_are_accepted(
    browser: Any, token: str, message: dict
) -> None:
    response = post(browser, token, json=message)

    assert response.status_code == 202
    assert response.content == b""
    # No body, so nothing to describe: certainly not as an HTML page.
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("request_id", [1, 0, -5, "abc", ""])
def test_ping_echoes_the_id(browser: Any, token: str, request_id: Any) -> None:
    response = rpc(browser, token, "ping", request_id=request_id)

    assert result_of(response, request_id) == {}
    assert response.headers["Cache-Control"] == "no-store"


# Tools -----------------------------------------------------------------------


def test_tools_list_names_whoami(browser: Any, token: str) -> None:
    (tool,) = result_of(rpc(browser, token, "tools/list", {}))["tools"]

    assert tool["name"] == "whoami"
    assert tool["inputSchema"]["type"] == "object"
    # A service client acting for itself has no email (docs/machines.md).
    assert tool["outputSchema"]["required"] == ["sub", "scope"]


def whoami(browser: Any, token: str, arguments: Any = None) -> Any:
    params = {"name": "whoami", "arguments": {} if arguments is None else arguments}
    return rpc(browser, token, "tools/call", params)


def test_whoami_describes_an_oauth_caller(
    browser: Any, token: str, user: dict[str, str]
) -> None:
    result = result_of(whoami(browser, token))

    assert result["isError"] is False
    (content,) = result["content"]
    assert content["type"] == "text"
    caller = json.loads(content["text"])
    assert set(caller) == {"sub", "email", "client_id", "scope"}
    assert caller["sub"] == user["id"]
    assert caller["email"] == user["email"]
    assert caller["client_id"].startswith("lessie-")
    assert caller["scope"] == "read write"
    assert result["structuredContent"] == caller


def test_whoami_describes_an_api_key_caller(
    browser: Any, server: Any, user: dict[str, str]
) -> None:
    token = api_key_token(server, user, "key-7")

    result = result_of(whoami(browser, token))

    assert json.loads(result["content"][0]["text"]) == {
        "sub": user["id"],
        "email": user["email"],
        "api_key_id": "key-7",
        "scope": "read",
    }


def test_whoami_for_a_disabled_account_is_invalid_token(
    browser: Any, server: Any, token: str, user: dict[str, str], engine: Any
) -> None:
    # Disabled behind the service's back (no revocation marker): still refused.
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE users SET is_active = false"))

    response = whoami(browser, token)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", resource_metadata="{server.issuer}'
        '/.well-known/oauth-protected-resource"'
    )


def test_whoami_with_arguments_is_a_tool_error(browser: Any, token: str) -> None:
    # MCP 2025-11-25: input errors are tool results, so a model can correct them.
    result = result_of(whoami(browser, token, {"verbose": True}))

    assert result["isError"] is True
    assert "no arguments" in result["content"][0]["text"]


@pytest.mark.parametrize(
    "params",
    [
        {"name": "rm -rf"},
        {"name": 5},
        {},
        {"name": "whoami", "arguments": ["x"]},
        {"name": "whoami", "arguments": "x"},
        # Empty, false or null is still not an object (MCP server/tools).
        {"name": "whoami", "arguments": []},
        {"name": "whoami", "arguments": ""},
        {"name": "whoami", "arguments": 0},
        {"name": "whoami", "arguments": False},
        {"name": "whoami", "arguments": None},
    ],
)
def test_bad_tool_calls_are_invalid_params(
    browser: Any, token: str, params: dict
) -> None:
    error_of(rpc(browser, token, "tools/call", params), 200, -32602, 1)


# Malformed JSON-RPC ----------------------------------------------------------


@pytest.mark.parametrize("method", ["resources/list", "server/discover", "", "x" * 500])
def test_unknown_methods_are_method_not_found(
    browser: Any, token: str, method: str
) -> None:
    error_of(rpc(browser, token, method), 200, -32601, 1)


def test_positional_params_are_invalid_params(browser: Any, token: str) -> None:
    response = post(
        browser, token, json={"jsonrpc": "2.0", "id": 9, "method": "ping", "params": []}
    )

    error_of(response, 200, -32602, 9)


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"\xff\xfe", b"NaN", b'{"a": Infinity}', b"[" * 60_000, b"{'a': 1}"],
)
def test_unparseable_bodies_are_parse_errors(
    browser: Any, token: str, body: bytes
) -> None:
    response = post(
        browser, token, data=body, headers={"Content-Type": "application/json"}
    )

    error_of(response, 400, -32700)


@pytest.mark.parametrize(
    "message",
    [
        [],
        [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
        42,
        "ping",
        None,
        {},
        {"id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
        {"jsonrpc": "2.0", "id": {}, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": None},
        # Lone surrogates: JSON can spell them, but they are not text, and
        # strict parsers refuse an answer that echoes them (RFC 8259 §8.2).
        {"jsonrpc": "2.0", "id": "\ud800", "method": "ping"},
        {"jsonrpc": "2.0", "id": "a\udfff", "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": "\ud800"},
    ],
)
def test_invalid_messages_are_invalid_request(
    browser: Any, token: str, message: Any
) -> None:
    response = post(
        browser,
        token,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json"},
    )

    error_of(response, 400, -32600)


def test_a_body_too_large_is_refused_in_json_rpc(browser: Any, token: str) -> None:
    padding = "x" * 70_000
    response = rpc(browser, token, "ping", {"_meta": {"padding": padding}})

    error_of(response, 413, -32600)


def test_a_chunked_body_too_large_is_refused_in_json_rpc(
    browser: Any, token: str
) -> None:
    message = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 70_000}}
    ).encode()
    # A generator makes requests send Transfer-Encoding: chunked and no
    # Content-Length, so only counting what arrives can find the size.
    chunks = (message[i : i + 8192] for i in range(0, len(message), 8192))

    response = post(
        browser, token, data=chunks, headers={"Content-Type": "application/json"}
    )

    error_of(response, 413, -32600)


def test_a_chunked_body_within_the_limit_is_read_whole(
    browser: Any, token: str
) -> None:
    message = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    chunks = (message[i : i + 5] for i in range(0, len(message), 5))

    response = post(
        browser, token, data=chunks, headers={"Content-Type": "application/json"}
    )

    assert result_of(response) == {}


def test_answers_never_echo_lone_surrogates(browser: Any, token: str) -> None:
    call = {"name": "\ud800"}
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    )
    response = post(
        browser, token, data=body, headers={"Content-Type": "application/json"}
    )

    error_of(response, 200, -32602, 1)
    assert "\\ud800" not in response.text.lower()


# Transport rules -------------------------------------------------------------


def test_other_content_types_are_refused(browser: Any, token: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    response = post(browser, token, data=body, headers={"Content-Type": "text/plain"})

    error_of(response, 415, -32600)


def test_a_client_that_cannot_accept_json_is_refused(browser: Any, token: str) -> None:
    response = rpc(browser, token, "ping", headers={"Accept": "text/event-stream"})

    error_of(response, 406, -32600)


@pytest.mark.parametrize("version", SUPPORTED)
def test_supported_protocol_version_headers_pass(
    browser: Any, token: str, version: Any
) -> None:
    response = rpc(browser, token, "ping", headers={"MCP-Protocol-Version": version})

    assert result_of(response) == {}


@pytest.mark.parametrize("version", ["1999-01-01", "2026-07-28", "not-a-version", ""])
def test_unsupported_protocol_version_headers_are_bad_requests(
    browser: Any, token: str, version: str
) -> None:
    # MCP basic/transports §Protocol Version Header: MUST answer 400.
    headers = {"MCP-Protocol-Version": version}

    request = rpc(browser, token, "tools/list", headers=headers)
    notification = rpc(
        browser, token, "notifications/initialized", request_id=None, headers=headers
    )

    error = error_of(request, 400, -32600)
    assert "2025-11-25" in error["message"]
    error_of(notification, 400, -32600)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_no_server_stream_and_no_session(browser: Any, token: str, method: str) -> None:
    response = browser.request(
        method,
        "/mcp",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_are_405_even_without_a_token(browser: Any, method: str) -> None:
    response = browser.request(method, "/mcp")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# Browser-based clients (CORS) ------------------------------------------------


def test_cors_preflight_on_mcp(browser: Any) -> None:
    response = browser.options(
        "/mcp",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                "authorization, content-type, mcp-protocol-version"
            ),
        },
    )

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {
        h.strip().lower()
        for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "mcp-protocol-version"} <= allowed


def test_a_browser_can_read_the_challenge(browser: Any, server: Any) -> None:
    response = browser.post("/mcp", json={}, headers={"Origin": ORIGIN})

    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    assert "www-authenticate" in exposed


def test_a_browser_can_read_answers(browser: Any, token: str) -> None:
    response = rpc(browser, token, "ping", headers={"Origin": ORIGIN})

    assert result_of(response) == {}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ],
)
def test_protected_resource_metadata_for_browsers(
    browser: Any, server: Any, path: str
) -> None:
    preflight = browser.options(
        path,
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    response = browser.get(path, headers={"Origin": ORIGIN})

    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.json() == {
        "resource": server.issuer + "/mcp",
        "authorization_servers": [server.issuer],
        "scopes_supported": ["read", "write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP",
    }


# Origins (MCP basic/transports §Security Warning: DNS rebinding) --------------

ALLOWED = "https://app.example, http://localhost:6274"


@pytest.fixture
def guarded(make_server: Any) -> Any:
    return make_server(ALLOWED_ORIGINS=ALLOWED)


def guarded_token(guarded: Any, user: dict[str, str]) -> tuple[Any, str]:
    browser = guarded.browser()
    return browser, obtain_token(browser, user)


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "https://app.example.evil", "http://app.example"],
)
def test_an_origin_not_allowed_is_forbidden(
    guarded: Any, user: dict, origin: str
) -> None:
    browser, token = guarded_token(guarded, user)

    response = rpc(browser, token, "ping", headers={"Origin": origin})

    error = error_of(response, 403, -32600)
    assert "origin" in error["message"].lower()


def test_the_origin_is_checked_before_the_token(guarded: Any) -> None:
    browser = guarded.browser()

    response = browser.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Origin": "https://evil.example"},
    )

    error_of(response, 403, -32600)
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "https://app.example"}, {"Origin": "http://localhost:6274"}],
    ids=["no Origin", "listed", "second listed"],
)
def test_listed_origins_and_no_origin_pass(
    guarded: Any, user: dict, headers: dict
) -> None:
    browser, token = guarded_token(guarded, user)

    assert result_of(rpc(browser, token, "ping", headers=headers)) == {}


def test_any_origin_passes_when_none_are_configured(browser: Any, token: str) -> None:
    response = rpc(browser, token, "ping", headers={"Origin": "https://evil.example"})

    assert result_of(response) == {}


# A server that ends the input stream itself (gunicorn sets
# wsgi.input_terminated) has the body read by its length: the same answers.


def terminated_post(app: Any, token: str, body: bytes) -> Any:
    return app.test_client().post(
        "/mcp",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        },
        environ_base={"wsgi.input_terminated": True},
    )


def test_a_body_the_server_terminates_is_read_by_its_length(
    app: Any, token: str
) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}).encode()

    response = terminated_post(app, token, body)

    assert response.status_code == 200, response.text
    assert response.get_json() == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_a_terminated_body_too_large_is_refused_in_json_rpc(
    app: Any, token: str
) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}
    message["params"] = {"padding": "x" * 70_000}

    response = terminated_post(app, token, json.dumps(message).encode())

    assert response.status_code == 413
    body = response.get_json()
    assert body["id"] is None and body["error"]["code"] == -32600, body


def test_a_terminated_body_that_is_not_json_is_a_parse_error(
    app: Any, token: str
) -> None:
    response = terminated_post(app, token, b"{not json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == -32700
