"""The protected MCP endpoint: Streamable HTTP, stateless, JSON responses.

MCP basic/transports §Streamable HTTP: the client POSTs one JSON-RPC message
per request; a request gets an ``application/json`` answer, a notification
or response gets ``202 Accepted``. Without sessions there is no server stream
to open with GET and nothing to end with DELETE, so both are ``405``.

Transport refusals answer with a JSON-RPC error whose ``id`` is null, the
HTTP status saying what went wrong (403 origin, 406, 413, 415, 400).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..config import current_settings
from ..config_values import MCP_PATH
from ..errors import empty_response
from ..mcp import jsonrpc, protocol
from ..mcp.jsonrpc import INVALID_REQUEST, RpcError
from ..mcp.tools import ScopeRequired, UnknownCaller
from ..oauth.resource import (
    current_claims,
    deny_insufficient_scope,
    deny_invalid_token,
    require_token,
)
from ..oauth.resources import mcp_resource
from ..surfaces import same_origin_only

bp = Blueprint("mcp_endpoint", __name__)

PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
#: Where WSGI puts it. The views read headers from the environ, as
#: werkzeug's ``request.headers`` does, without its per-call key mangling.
PROTOCOL_VERSION_ENVIRON = "HTTP_MCP_PROTOCOL_VERSION"


#: MCP answers are plain JSON-RPC: lists, dicts, strings and numbers only.
_ENCODER = json.JSONEncoder(ensure_ascii=True)


def _reply(body: dict[str, Any] | None, status: int = 200) -> Response:
    if body is None:
        return empty_response(status)
    # Encoded directly: Flask's jsonify sorts keys and looks up the app's
    # provider on every call, for a body that needs neither.
    return Response(
        _ENCODER.encode(body) + "\n", status=status, mimetype="application/json"
    )


def _refuse(status: int, exc: RpcError) -> Response:
    # The message's id is unknown or irrelevant here, so it is null (JSON-RPC §5).
    return _reply(jsonrpc.error(None, exc), status)


@bp.before_request
def check_origin() -> Response | None:
    """Refuse a browser page from an origin not in ``ALLOWED_ORIGINS``.

    MCP basic/transports §Security Warning: servers validate ``Origin`` to
    stop DNS rebinding; one that is present and not allowed gets a 403,
    before anything else is looked at. No ``Origin``: not a browser page.
    """
    origin = request.environ.get("HTTP_ORIGIN")
    if origin is None:
        return None
    allowed = current_settings().allowed_origins
    if not allowed or origin.lower() in allowed:
        return None
    return _refuse(
        403,
        RpcError(INVALID_REQUEST, f"Forbidden: this Origin may not call {MCP_PATH}."),
    )


def _check_transport(environ: dict[str, Any]) -> Response | None:
    """Refuse requests the transport rules out before reading the body."""
    accept = environ.get("HTTP_ACCEPT")
    if accept and not _accepts_json(accept):
        return _refuse(
            406, RpcError(INVALID_REQUEST, "Not Acceptable: accept application/json.")
        )
    if not _is_json(environ.get("CONTENT_TYPE", "")):
        return _refuse(
            415,
            RpcError(INVALID_REQUEST, "Unsupported Media Type: send application/json."),
        )
    return None


#: Accept items that admit JSON; without q-values, any one of them is enough.
_JSON_RANGES = frozenset({"application/json", "application/*", "*/*"})


def _is_json(content_type: str) -> bool:
    # The type without its parameters (charset), case-insensitive (RFC 9110 §8.3.1).
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _accepts_json(accept: str) -> bool:
    # Every MCP client sends "application/json, text/event-stream"; only a
    # header with parameters (q=0 refuses a type) needs the full parser.
    if ";" not in accept:
        return not _JSON_RANGES.isdisjoint(
            item.strip().lower() for item in accept.split(",")
        )
    return bool(request.accept_mimetypes["application/json"])


def _check_protocol_version(
    message: jsonrpc.Message, environ: dict[str, Any]
) -> Response | None:
    # MCP basic/transports §Protocol Version Header: an unsupported value is a
    # 400. ``initialize`` is exempt: it negotiates the version in its body.
    requested = environ.get(PROTOCOL_VERSION_ENVIRON)
    if requested is None or message.method == "initialize":
        return None
    if requested in protocol.SUPPORTED_VERSIONS:
        return None
    supported = ", ".join(protocol.SUPPORTED_VERSIONS)
    return _refuse(
        400,
        RpcError(
            INVALID_REQUEST,
            f"Bad Request: unsupported protocol version {requested[:40]!r} "
            f"(supported: {supported}).",
        ),
    )


@bp.post(MCP_PATH)
@require_token(mcp_resource)
def endpoint() -> Response:
    """Answer one JSON-RPC message from an authenticated MCP client."""
    environ = request.environ
    refused = _check_transport(environ)
    if refused is not None:
        return refused
    try:
        message = jsonrpc.parse(jsonrpc.decode(_body(environ)))
    except RequestEntityTooLarge:
        return _refuse(413, RpcError(INVALID_REQUEST, "The body is too large."))
    except RpcError as exc:
        return _refuse(400, exc)
    refused = _check_protocol_version(message, environ)
    if refused is not None:
        return refused
    try:
        answer = protocol.handle(message, current_claims())
    except ScopeRequired as exc:
        # MCP authorization §Scope Challenge Handling: 403 names what is missing.
        deny_insufficient_scope(*exc.scopes)
    except UnknownCaller:
        deny_invalid_token()
    if answer is None:
        return _reply(None, 202)
    return _reply(answer)


def _body(environ: dict[str, Any]) -> bytes:
    """The body, as ``request.get_data(cache=False)`` reads it.

    When the server ends the input stream at the body's end itself
    (``wsgi.input_terminated``, as gunicorn does) and states its length,
    the body is that many bytes, after the same size check werkzeug makes
    (413 above ``MAX_CONTENT_LENGTH``): werkzeug's ``LimitedStream``
    wrapper, which guards streams that do not end, costs several times the
    read. Anything else (no length, a streamed body) is werkzeug's to read.
    """
    length = environ.get("CONTENT_LENGTH")
    if (
        not environ.get("wsgi.input_terminated")
        or "HTTP_TRANSFER_ENCODING" in environ
        or not length
        or not (length.isascii() and length.isdigit())
    ):
        return request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and int(length) > limit:
        raise RequestEntityTooLarge()
    body: bytes = environ["wsgi.input"].read(int(length))
    return body


# Routed only to say 405 (no stream, no session): a browser is not invited to
# send GET or DELETE from another origin.
@bp.route(MCP_PATH, methods=["GET", "DELETE"])
@same_origin_only
def no_stream() -> Response:
    """Refuse GET (no server-initiated stream) and DELETE (no session to end).

    No token is needed to learn that: the answer reveals nothing, and the
    MCP Streamable HTTP transport allows a 405 for GET whoever asks.
    """
    response = _refuse(405, RpcError(INVALID_REQUEST, "Method Not Allowed."))
    response.headers["Allow"] = "POST"
    return response
