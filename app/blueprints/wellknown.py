"""Discovery: RFC 8414 and RFC 9728 metadata, the RFC 7517 JWK Set, OpenAPI."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, jsonify

from ..config import current_settings
from ..oauth.metadata import (
    authorization_server_metadata,
    issuer_path,
    openid_configuration,
    protected_resource_metadata,
)
from ..oauth.tokens import public_jwks

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")

#: Metadata changes only with a deploy; let clients and proxies cache it briefly.
CACHE_CONTROL = "public, max-age=300"

#: The OpenAPI 3.1 description of the JSON endpoints, kept by hand beside the code
#: (tests/test_openapi.py holds it to the real answers).
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "openapi.json"
OPENAPI_PATH = "/openapi.json"


def _document(body: dict) -> Response:
    response = jsonify(body)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


@bp.get("/jwks.json")
def jwks() -> Response:
    # The same max-age as the metadata: a key added to JWT_VERIFY_KEYS is seen by
    # every cache within it, which the rotation procedure waits out.
    # HS256 signs with a shared secret, which is never published: the honest
    # set is then empty, and the OpenID document can still name it.
    return _document(public_jwks(current_settings()) or {"keys": []})


@bp.get("/oauth-authorization-server")
def authorization_server() -> Response:
    return _document(authorization_server_metadata(current_settings()))


@bp.get("/openid-configuration")
def openid_provider() -> Response:
    return _document(openid_configuration(current_settings()))


@bp.get("/oauth-authorization-server/<path:suffix>")
def authorization_server_for_path(suffix: str) -> Response:
    # RFC 8414 §3.1: an issuer with a path has its metadata at
    # /.well-known/oauth-authorization-server/<path> on the host.
    if "/" + suffix != issuer_path(current_settings()):
        abort(404)
    return authorization_server()


@bp.get("/oauth-protected-resource")
@bp.get("/oauth-protected-resource/mcp")
def protected_resource() -> Response:
    return _document(protected_resource_metadata(current_settings()))


@bp.get("/oauth-protected-resource/<path:suffix>")
def protected_resource_for_path(suffix: str) -> Response:
    # RFC 9728 §3.1: the resource's path follows the well-known segment.
    if "/" + suffix != issuer_path(current_settings()) + "/mcp":
        abort(404)
    return protected_resource()


@functools.cache
def _openapi_document(issuer: str) -> str:
    """The document as served: read once, with the issuer as its one server."""
    document: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    # OpenAPI 3.1 §4.8.1: paths are relative to the server URL, which is the
    # issuer (it may carry a path prefix, so "/" would point at the wrong place).
    document["servers"] = [{"url": issuer}]
    return json.dumps(document, ensure_ascii=False)


def openapi() -> Response:
    response = Response(
        _openapi_document(current_settings().issuer), mimetype="application/json"
    )
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


# The document belongs at the root, outside this blueprint's /.well-known prefix.
bp.record_once(lambda state: state.app.add_url_rule(OPENAPI_PATH, "openapi", openapi))
