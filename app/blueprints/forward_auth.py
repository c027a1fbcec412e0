"""Forward authentication for reverse proxies (nginx ``auth_request``, Traefik).

The proxy asks ``GET /auth/verify`` with the client's ``Authorization`` header
before it lets a request through to the protected upstream. ``200`` lets it
pass, with who the caller is in ``X-Auth-*`` headers for the proxy to forward;
``401``/``403`` carry the same ``WWW-Authenticate`` challenge as ``/mcp``, so
MCP clients behind the proxy discover this authorization server as usual.

One service guards many MCP servers (docs/resource-servers.md): the proxy
says which one this request is for, with ``X-MCP-Resource`` or with the
``X-Forwarded-Host`` and ``X-Forwarded-Uri`` of the original request, and
only a token for that resource passes. nginx hands the client's own headers
to the subrequest, so a proxy must set these itself, and the service
believes them only once ``VERIFY_RESOURCE_HEADERS`` says every proxy does:
a proxy set up before there were resources would hand on whatever a client
sent. When both forms come they must agree, so that one the client
smuggled in cannot move the check to a resource its token is good for.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..config import current_settings
from ..config_uris import HOST_PORT
from ..errors import json_error
from ..oauth.resource import authenticate_request
from ..oauth.resources import Resource, builtin_resource, registry

bp = Blueprint("forward_auth", __name__, url_prefix="/auth")

#: Response headers naming the caller, for the proxy to pass upstream.
SUBJECT_HEADER = "X-Auth-Subject"
CLIENT_HEADER = "X-Auth-Client"
SCOPE_HEADER = "X-Auth-Scope"


def _demanded_scopes(guarded: Resource) -> list[str] | None:
    """Scopes from ``?scope=``; ``None`` if one is unknown (a proxy set-up error)."""
    if not request.query_string:
        return []  # the usual call: nothing demanded beyond a valid token
    scopes = [s for value in request.args.getlist("scope") for s in value.split()]
    known = guarded.scope_names
    return scopes if all(scope in known for scope in scopes) else None


#: Names the guarded resource outright.
RESOURCE_HEADER = "X-MCP-Resource"


def _forwarded_uri() -> str | None:
    """The original request's URI, from the proxy's ``X-Forwarded-*``."""
    host = request.headers.get("X-Forwarded-Host")
    uri = request.headers.get("X-Forwarded-Uri")
    if host is None or uri is None:
        return None
    scheme = request.headers.get("X-Forwarded-Proto")
    if scheme is None:
        scheme = current_settings().issuer.partition(":")[0]
    path = uri.partition("?")[0]
    # One value each: a list means a proxy appended to what the client sent.
    # The host is only a host: anything more would move the path.
    if not HOST_PORT.fullmatch(host) or "," in scheme:
        return ""
    if "," in path or not path.startswith("/"):
        return ""
    return f"{scheme}://{host}{path}"


def _guarded() -> Resource | None:
    """The resource the proxy guards; the built-in one when it says nothing;
    ``None`` if nothing registered is there, or the two headers disagree."""
    settings = current_settings()
    # Off, the headers may be a client's own, handed on by a proxy that was
    # set up before there were resources to name: believe none of them.
    if not settings.verify_resource_headers:
        return builtin_resource(settings)
    named = request.headers.get(RESOURCE_HEADER)
    forwarded = _forwarded_uri()
    if named is None and forwarded is None:
        return builtin_resource(settings)
    found = {
        registry().match(value) for value in (named, forwarded) if value is not None
    }
    return found.pop() if len(found) == 1 else None


@bp.get("/verify")
def verify() -> Response:
    """Tell the proxy whether the request's bearer token may pass, and whose it is."""
    guarded = _guarded()
    if guarded is None:
        return json_error(
            403, "invalid_target", "No registered resource is at this address."
        )
    scopes = _demanded_scopes(guarded)
    if scopes is None:
        return json_error(
            400,
            "invalid_scope",
            f"'scope' may only name {', '.join(guarded.scope_names)}.",
        )
    claims = authenticate_request(guarded, *scopes)
    response = Response(status=200)
    response.headers[SUBJECT_HEADER] = str(claims["sub"])
    response.headers[CLIENT_HEADER] = str(
        claims.get("api_key_id") or claims.get("client_id") or ""
    )
    response.headers[SCOPE_HEADER] = str(claims.get("scope", ""))
    return response
