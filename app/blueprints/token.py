"""The OAuth endpoints programs call: token and dynamic client registration."""

from __future__ import annotations

from flask import Blueprint, Response

from ..oauth.server import get_server
from ..rate_limits import limit, setting

bp = Blueprint("oauth", __name__)


@bp.post("/token")
def token() -> Response:
    """RFC 6749 §3.2, with PKCE (RFC 7636) and resource indicators (RFC 8707)."""
    return get_server().create_token_response()


@bp.post("/register")
@limit(setting("registration_rate_limit"))
def register() -> Response:
    """RFC 7591 dynamic client registration."""
    return get_server().create_endpoint_response("client_registration")
