"""The OAuth endpoints programs call: token, revocation, introspection, registration."""

from __future__ import annotations

from flask import Blueprint, Response, abort

from ..config import current_settings
from ..oauth.server import get_server
from ..rate_limits import limit, setting

bp = Blueprint("oauth", __name__)


@bp.post("/token")
def token() -> Response:
    """RFC 6749 §3.2, with PKCE (RFC 7636) and resource indicators (RFC 8707)."""
    return get_server().create_token_response()


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009 token revocation."""
    return get_server().create_endpoint_response("revocation")


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662 token introspection, for the configured resource servers only."""
    if not current_settings().resource_servers:
        abort(404)
    return get_server().create_endpoint_response("introspection")


@bp.post("/register")
@limit(setting("registration_rate_limit"))
def register() -> Response:
    """RFC 7591 dynamic client registration."""
    return get_server().create_endpoint_response("client_registration")
