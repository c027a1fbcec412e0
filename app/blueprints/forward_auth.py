"""Forward authentication for reverse proxies (nginx ``auth_request``, Traefik).

The proxy asks ``GET /auth/verify`` with the client's ``Authorization`` header
before it lets a request through to the protected upstream. ``200`` lets it
pass, with who the caller is in ``X-Auth-*`` headers for the proxy to forward;
``401``/``403`` carry the same ``WWW-Authenticate`` challenge as ``/mcp``, so
MCP clients behind the proxy discover this authorization server as usual.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..config import current_settings
from ..errors import json_error
from ..oauth.resource import authenticate_request
from ..oauth.resources import Resource, builtin_resource

bp = Blueprint("forward_auth", __name__, url_prefix="/auth")

#: Response headers naming the caller, for the proxy to pass upstream.
SUBJECT_HEADER = "X-Auth-Subject"
CLIENT_HEADER = "X-Auth-Client"
SCOPE_HEADER = "X-Auth-Scope"


def _demanded_scopes() -> list[str] | None:
    """Scopes from ``?scope=``; ``None`` if one is unknown (a proxy set-up error)."""
    if not request.query_string:
        return []  # the usual call: nothing demanded beyond a valid token
    scopes = [s for value in request.args.getlist("scope") for s in value.split()]
    known = _guarded_scopes()
    return scopes if all(scope in known for scope in scopes) else None


def _guarded() -> Resource:
    """The resource the proxy guards: today the built-in one."""
    return builtin_resource(current_settings())


def _guarded_scopes() -> tuple[str, ...]:
    return _guarded().scope_names


@bp.get("/verify")
def verify() -> Response:
    """Tell the proxy whether the request's bearer token may pass, and whose it is."""
    scopes = _demanded_scopes()
    if scopes is None:
        return json_error(
            400,
            "invalid_scope",
            f"'scope' may only name {', '.join(_guarded_scopes())}.",
        )
    claims = authenticate_request(_guarded(), *scopes)
    response = Response(status=200)
    response.headers[SUBJECT_HEADER] = str(claims["sub"])
    response.headers[CLIENT_HEADER] = str(
        claims.get("api_key_id") or claims.get("client_id") or ""
    )
    response.headers[SCOPE_HEADER] = str(claims.get("scope", ""))
    return response
