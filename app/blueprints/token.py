"""The token endpoint programs call (RFC 6749 §3.2)."""

from __future__ import annotations

from flask import Blueprint, Response

from ..oauth.constants import TOKEN_PATH
from ..oauth.server import get_server

bp = Blueprint("token", __name__)


@bp.post(TOKEN_PATH)
def token() -> Response:
    """RFC 6749 §3.2, with PKCE (RFC 7636) and resource indicators (RFC 8707)."""
    return get_server().create_token_response()
