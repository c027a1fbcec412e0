"""Forward authentication for reverse proxies (nginx ``auth_request``, Traefik).

The proxy asks ``GET /auth/verify`` with the client's ``Authorization`` header
before it lets a request through to the protected upstream. ``200`` lets it
pass, with who the caller is in ``X-Auth-*`` headers for the proxy to forward;
``401``/``403`` carry the same ``WWW-Authenticate`` challenge as ``/mcp``, so
MCP clients behind the proxy discover this authorization server as usual.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import json_error
from ..oauth.constants import SCOPES
from ..oauth.resource import authenticate_request

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
    return scopes if all(scope in SCOPES for scope in scopes) else None


@bp.get("/verify")
def verify() -> Response:
    """Tell the proxy whether the request's bearer token may pass, and whose it is."""
    scopes = _demanded_scopes()
    if scopes is None:
        return json_error(
            400, "invalid_scope", f"'scope' may only name {', '.join(SCOPES)}."
        )
    claims = authenticate_request(*scopes)
    response = Response(status=200)
    response.headers[SUBJECT_HEADER] = str(claims["sub"])
    response.headers[CLIENT_HEADER] = str(
        claims.get("api_key_id") or claims.get("client_id") or ""
    )
    response.headers[SCOPE_HEADER] = str(claims.get("scope", ""))
    return response
