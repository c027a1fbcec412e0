"""Dynamic client registration (RFC 7591)."""

from __future__ import annotations

from flask import Blueprint, Response

from ..oauth.constants import REGISTRATION_PATH
from ..oauth.server import get_server
from ..rate_limits import limit, setting

bp = Blueprint("register", __name__)


@bp.post(REGISTRATION_PATH)
@limit(setting("registration_rate_limit"))
def register() -> Response:
    """RFC 7591 dynamic client registration."""
    return get_server().create_endpoint_response("client_registration")
