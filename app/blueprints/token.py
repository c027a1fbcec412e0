"""The token endpoint and its companions: revocation and introspection."""

from __future__ import annotations

from flask import Blueprint, Response

from ..config import current_settings
from ..errors import json_error
from ..oauth.constants import (
    DEVICE_AUTHORIZATION_PATH,
    INTROSPECTION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
)
from ..oauth.server import DEVICE_AUTHORIZATION, get_server
from ..rate_limits import limit, setting

bp = Blueprint("token", __name__)

#: What ``/introspect`` answers while no resource server may call it.
INTROSPECTION_OFF = (
    "Token introspection is off on this server: RESOURCE_SERVERS is not set."
)


@bp.post(TOKEN_PATH)
def token() -> Response:
    """RFC 6749 §3.2, with PKCE (RFC 7636) and resource indicators (RFC 8707)."""
    return get_server().create_token_response()


@bp.post(REVOCATION_PATH)
def revoke() -> Response:
    """RFC 7009 token revocation."""
    response = get_server().create_endpoint_response("revocation")
    if response.status_code == 200:
        # RFC 7009 §2.2: the body is empty, and an empty body has no media
        # type (RFC 9110 §8.3); Flask would otherwise label it text/html.
        del response.headers["Content-Type"]
    return response


@bp.post(INTROSPECTION_PATH)
def introspect() -> Response:
    """RFC 7662 token introspection, for the configured resource servers only."""
    if not current_settings().resource_servers:
        # Not Werkzeug's page about a mistyped URL: the caller is a resource
        # server (or its operator) that must learn the endpoint is off here.
        return json_error(404, "not_found", INTROSPECTION_OFF)
    return get_server().create_endpoint_response("introspection")


@bp.post(DEVICE_AUTHORIZATION_PATH)
@limit(setting("device_authorization_rate_limit"))
def device_authorization() -> Response:
    """RFC 8628 §3.1: a device asks for a device code and a user code."""
    return get_server().create_endpoint_response(DEVICE_AUTHORIZATION)
