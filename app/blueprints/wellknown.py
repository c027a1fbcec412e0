"""Discovery: RFC 8414 and RFC 9728 metadata, the RFC 7517 JWK Set, OpenAPI."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, jsonify

from ..config import current_settings
from ..config_values import MCP_PATH
from ..oauth.constants import (
    AUTHORIZATION_SERVER_METADATA_PATH,
    JWKS_PATH,
    OPENID_CONFIGURATION_PATH,
    RESOURCE_METADATA_PATH,
)
from ..oauth.metadata import (
    authorization_server_metadata,
    issuer_path,
    openid_configuration,
    protected_resource_metadata,
    served_resource,
)
from ..oauth.resources import builtin_resource, known_resources
from ..oauth.server import get_server
from ..oauth.tokens import public_jwks

bp = Blueprint("wellknown", __name__)

#: The OpenAPI 3.1 description of the JSON endpoints, kept by hand beside the code
#: (tests/test_openapi.py holds it to the real answers).
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "openapi.json"
OPENAPI_PATH = "/openapi.json"


def _document(body: dict) -> Response:
    # Cached briefly by clients and proxies: the DOCUMENT surface's Cache-Control.
    return jsonify(body)


@bp.get(JWKS_PATH)
def jwks() -> Response:
    # The same max-age as the metadata: a key added to JWT_VERIFY_KEYS is seen by
    # every cache within it, which the rotation procedure waits out.
    # HS256 signs with a shared secret, which is never published: the honest
    # set is then empty, and the OpenID document can still name it.
    return _document(public_jwks(current_settings()) or {"keys": []})


@bp.get(AUTHORIZATION_SERVER_METADATA_PATH)
def authorization_server() -> Response:
    document = authorization_server_metadata(
        current_settings(), get_server(), known_resources()
    )
    return _document(document)


@bp.get(OPENID_CONFIGURATION_PATH)
def openid_provider() -> Response:
    document = openid_configuration(current_settings(), get_server(), known_resources())
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
    settings = current_settings()
    resource = builtin_resource(settings)
    return _document(protected_resource_metadata(settings, resource))


@bp.get(f"{RESOURCE_METADATA_PATH}/<path:suffix>")
def protected_resource_for_path(suffix: str) -> Response:
    # RFC 9728 §3.1: the resource's path follows the well-known segment;
    # every resource on the issuer's origin has its document here.
    settings = current_settings()
    resource = served_resource(settings, known_resources(), "/" + suffix)
    if resource is None:
        abort(404)
    return _document(protected_resource_metadata(settings, resource))


@functools.cache
def _openapi_document(issuer: str) -> str:
    """The document as served: read once, with the issuer as its one server."""
    document: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    # OpenAPI 3.1 §4.8.1: paths are relative to the server URL, which is the
    # issuer (it may carry a path prefix, so "/" would point at the wrong place).
    document["servers"] = [{"url": issuer}]
    return json.dumps(document, ensure_ascii=False)


@bp.get(OPENAPI_PATH)
def openapi() -> Response:
    # Cached briefly, as the DOCUMENT surface's other answers are.
    return Response(
        _openapi_document(current_settings().issuer), mimetype="application/json"
    )
