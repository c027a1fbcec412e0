"""Dynamic client registration (RFC 7591)."""

from __future__ import annotations

from flask import Blueprint, Response

from ..oauth.server import get_server
from ..rate_limits import limit, setting

bp = Blueprint("register", __name__)


@bp.post("/register")
@limit(setting("registration_rate_limit"))
def register() -> Response:
    """RFC 7591 dynamic client registration."""
    return get_server().create_endpoint_response("client_registration")
