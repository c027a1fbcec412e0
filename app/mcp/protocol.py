"""MCP methods over JSON-RPC: initialize, ping, tools/list and tools/call.

The server is stateless (MCP basic/transports §Streamable HTTP without a
session): every request stands alone, so ``initialize`` only negotiates and
describes, and nothing is remembered between requests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import jsonrpc
from .jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, Message, RpcError
from .tools import TOOLS, Claims

#: Revisions this server speaks, newest first. All reach it through the
#: ``initialize`` handshake; none needs a feature the server lacks.
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
#: MCP basic/transports §Protocol Version Header: assumed when a client sends none.
DEFAULT_VERSION = "2025-03-26"

SERVER_NAME = "mcp-auth-server"
INSTRUCTIONS = (
    "This server exists to show who an access token belongs to: call the whoami tool."
)


@functools.cache
def _server_version() -> str:
    try:
        return version(SERVER_NAME)
    except PackageNotFoundError:
        return "0"


def negotiate(requested: Any) -> str:
    """MCP lifecycle §Version Negotiation: echo a supported version, else our latest."""
    return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION


def initialize(params: dict[str, Any], claims: Claims) -> dict[str, Any]:
    requested = params.get("protocolVersion")
    if not isinstance(requested, str):
        raise RpcError(INVALID_PARAMS, "Invalid params: 'protocolVersion' is required.")
    return {
        "protocolVersion": negotiate(requested),
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": SERVER_NAME, "version": _server_version()},
        "instructions": INSTRUCTIONS,
    }


def ping(params: dict[str, Any], claims: Claims) -> dict[str, Any]:
    return {}


def list_tools(params: dict[str, Any], claims: Claims) -> dict[str, Any]:
    # Every tool is listed to any valid token; calling one checks its scopes.
    return {"tools": [tool.describe() for tool in TOOLS.values()]}


def call_tool(params: dict[str, Any], claims: Claims) -> dict[str, Any]:
    name = params.get("name")
    if not isinstance(name, str) or not jsonrpc.is_text(name):
        raise RpcError(INVALID_PARAMS, "Invalid params: 'name' must be a string.")
    tool = TOOLS.get(name)
    if tool is None:
        # MCP server/tools §Error Handling: an unknown tool is a protocol error.
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:100]}")
    # MCP server/tools §Calling Tools: ``arguments``, when present, is an
    # object; an empty list or a null is a malformed call, not "no arguments".
    arguments = params.get("arguments", {})
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "Invalid params: 'arguments' must be an object.")
    return tool.call(claims, arguments)


METHODS: dict[str, Callable[[dict[str, Any], Claims], dict[str, Any]]] = {
    "initialize": initialize,
    "ping": ping,
    "tools/list": list_tools,
    "tools/call": call_tool,
}


def handle(message: Message, claims: Claims) -> dict[str, Any] | None:
    """Answer one request; return ``None`` for notifications and responses."""
    if message.id is None or message.method is None:
        # Notifications (notifications/initialized, cancelled ...) need no action
        # from a stateless server, and JSON-RPC forbids replying to them.
        return None
    method = METHODS.get(message.method)
    try:
        if method is None:
            raise RpcError(
                METHOD_NOT_FOUND, f"Method not found: {message.method[:100]}"
            )
        if not isinstance(message.params, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: expected an object.")
        return jsonrpc.result(message.id, method(message.params, claims))
    except RpcError as exc:
        return jsonrpc.error(message.id, exc)
