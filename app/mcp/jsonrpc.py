"""JSON-RPC 2.0 framing: parse one message, build responses and errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: JSON-RPC 2.0 §5.1 error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

VERSION = "2.0"


class RpcError(Exception):
    """An error to answer with a JSON-RPC error object."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Message:
    """A valid message: a request has an ``id``, a response to us has no ``method``."""

    method: str | None
    id: str | int | None = None
    #: An object, or a list (positional), which no MCP method accepts.
    params: dict[str, Any] | list[Any] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259 §6); Python would accept them.
    raise ValueError(f"{name} is not valid JSON")


#: Made once: ``json.loads`` with an option builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(body: bytes) -> Any:
    """Decode a request body as JSON, or raise a parse error (-32700)."""
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RpcError(
            PARSE_ERROR, "Parse error: the body is not valid JSON."
        ) from None


def is_text(value: str) -> bool:
    """Tell whether ``value`` is Unicode text, with no lone surrogate in it.

    JSON can spell a lone surrogate (``"\\ud800"``) though it is no character
    (RFC 8259 §8.2); echoed back, it makes the answer one that strict
    parsers refuse.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_id(value: Any) -> bool:
    # MCP (basic §Requests): a string or integer, never null; bool is not an int here.
    if isinstance(value, str):
        return is_text(value)
    return isinstance(value, int) and not isinstance(value, bool)


def parse(document: Any) -> Message:
    """Check one decoded message against JSON-RPC 2.0 and MCP's rules."""
    if isinstance(document, list):
        # MCP 2025-06-18 removed JSON-RPC batching; one message per POST.
        raise RpcError(INVALID_REQUEST, "Invalid Request: batches are not supported.")
    if not isinstance(document, dict) or document.get("jsonrpc") != VERSION:
        raise RpcError(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message.")
    if "method" not in document:
        if "id" in document and ("result" in document or "error" in document):
            return Message(method=None, id=None)  # a response to us; nothing to do
        raise RpcError(INVALID_REQUEST, "Invalid Request: 'method' is missing.")
    method = document["method"]
    if not isinstance(method, str) or not is_text(method):
        raise RpcError(INVALID_REQUEST, "Invalid Request: 'method' must be a string.")
    if "id" in document and not _valid_id(document["id"]):
        raise RpcError(
            INVALID_REQUEST, "Invalid Request: 'id' must be a string or an integer."
        )
    params = document.get("params", {})
    if not isinstance(params, dict | list):
        raise RpcError(INVALID_REQUEST, "Invalid Request: 'params' must be structured.")
    return Message(method=method, id=document.get("id"), params=params)


def result(request_id: str | int, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": VERSION, "id": request_id, "result": value}


def error(request_id: str | int | None, exc: RpcError) -> dict[str, Any]:
    return {"jsonrpc": VERSION, "id": request_id, "error": exc.to_error()}
