"""Discovery: RFC 8414 and RFC 9728 metadata, and the RFC 7517 JWK Set."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify

from ..config import current_settings
from ..oauth.constants import (
    AUTHORIZATION_SERVER_METADATA_PATH,
    JWKS_PATH,
    MCP_PATH,
    OPENID_CONFIGURATION_PATH,
    RESOURCE_METADATA_PATH,
)
from ..oauth.metadata import (
    authorization_server_metadata,
    issuer_path,
    protected_resource_metadata,
)
from ..oauth.server import get_server
from ..oauth.tokens import public_jwks

bp = Blueprint("wellknown", __name__)


def _document(body: dict) -> Response:
    # Cached briefly by clients and proxies: the DOCUMENT surface's Cache-Control.
    return jsonify(body)


@bp.get(JWKS_PATH)
def jwks() -> Response:
    # The same max-age as the metadata: a key added to JWT_VERIFY_KEYS is seen by
    # every cache within it, which the rotation procedure waits out.
    document = public_jwks(current_settings())
    if document is None:
        abort(404)  # HS256: the key is a shared secret; there is nothing to publish
    return _document(document)


@bp.get(AUTHORIZATION_SERVER_METADATA_PATH)
@bp.get(OPENID_CONFIGURATION_PATH)
def authorization_server() -> Response:
    document = authorization_server_metadata(current_settings(), get_server())
    return _document(document)


@bp.get(f"{AUTHORIZATION_SERVER_METADATA_PATH}/<path:suffix>")
def authorization_server_for_path(suffix: str) -> Response:
    # RFC 8414 §3.1: an issuer with a path has its metadata at
    # /.well-known/oauth-authorization-server/<path> on the host.
    if "/" + suffix != issuer_path(current_settings()):
        abort(404)
    return authorization_server()


@bp.get(RESOURCE_METADATA_PATH)
@bp.get(RESOURCE_METADATA_PATH + MCP_PATH)
def protected_resource() -> Response:
    return _document(protected_resource_metadata(current_settings()))


@bp.get(f"{RESOURCE_METADATA_PATH}/<path:suffix>")
def protected_resource_for_path(suffix: str) -> Response:
    # RFC 9728 §3.1: the resource's path follows the well-known segment.
    if "/" + suffix != issuer_path(current_settings()) + MCP_PATH:
        abort(404)
    return protected_resource()
