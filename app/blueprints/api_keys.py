"""The API-key endpoints programs call (CONTRACT §7).

``POST /auth/token`` trades a key for an access token. ``/api-keys`` lets a
key's owner manage keys with an OAuth access token that holds ``write``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from flask_babel import gettext as _

from ..api_keys import (
    VIA_API_KEY,
    ApiKeyError,
    KeyLimitReached,
    create_api_key,
    exchange,
    isoformat_utc,
    list_api_keys,
    note_use_after,
    parse_id,
    revoke,
    validate_new_key,
)
from ..config import current_settings
from ..errors import challenge
from ..models import ApiKey
from ..oauth.resource import current_claims, deny_invalid_token, require_token
from ..rate_limits import limit, setting
from ..users import get_active_user

bp = Blueprint("api_keys", __name__)

#: The one answer to every failed exchange, so that no failure can be told apart.
INVALID_CREDENTIALS = {"error": "Invalid credentials"}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    # Answers carry tokens, keys or key metadata: nothing for a cache to keep.
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(status: int, error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, status)


def _json_body() -> Any:
    """Return the request's JSON, or ``None`` when it is absent or unreadable."""
    try:
        return request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the parser follows: not a 500
        return None


@bp.post("/auth/token")
@limit(setting("api_key_rate_limit"))
def exchange_token() -> Response:
    """Trade ``{"apiKey": ...}`` for an access token."""
    body = _json_body()
    issued = exchange(body.get("apiKey") if isinstance(body, dict) else None)
    if issued is None:
        response = _json(INVALID_CREDENTIALS, 401)
        # RFC 9110 §15.5.2: a 401 carries a challenge. No registered scheme
        # describes a key sent in a JSON body, so it is named for what it is.
        realm = current_settings().issuer
        response.headers["WWW-Authenticate"] = challenge("ApiKey", realm=realm)
        return response
    token, claims = issued
    response = _json({"token": token, "expiresIn": claims["exp"] - claims["iat"]})
    # CONTRACT §7: last_used_at is kept without slowing the answer.
    note_use_after(response, claims["api_key_id"])
    return response


def _owner_id() -> uuid.UUID:
    """Return whom this OAuth token speaks for; refuse tokens exchanged from keys."""
    claims = current_claims()
    # A key must not be able to mint more keys, or revoking one would not
    # contain a leak: only a token from an OAuth grant manages keys.
    if claims.get("via") == VIA_API_KEY or "api_key_id" in claims:
        abort(
            _error(
                403,
                "forbidden",
                _("A token obtained from an API key cannot manage API keys."),
            )
        )
    user = get_active_user(claims.get("sub"))
    if user is None:
        deny_invalid_token()
    return user.id


def _describe(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": isoformat_utc(key.created_at),
        "expires_at": isoformat_utc(key.expires_at),
    }


@bp.post("/api-keys")
@require_token("write")
def create() -> Response:
    """Create a key; the answer is the only place the key ever appears."""
    owner_id = _owner_id()
    body = _json_body()
    if not isinstance(body, dict):
        return _error(400, "invalid_request", _("The body must be a JSON object."))
    try:
        new_key = validate_new_key(
            body.get("name"), body.get("scopes"), body.get("expires_in_days")
        )
        key, secret = create_api_key(owner_id, new_key)
    except KeyLimitReached as exc:
        return _error(403, "api_key_limit_exceeded", str(exc))
    except ApiKeyError as exc:
        return _error(400, "invalid_request", str(exc))
    return _json({**_describe(key), "key": secret}, 201)


@bp.get("/api-keys")
@require_token("write")
def index() -> Response:
    """List the caller's keys that are not revoked, without any secret."""
    keys = list_api_keys(_owner_id())
    described = [
        {**_describe(key), "last_used_at": isoformat_utc(key.last_used_at)}
        for key in keys
    ]
    return _json({"api_keys": described})


@bp.delete("/api-keys/<key_id>")
@require_token("write")
def delete(key_id: str) -> Response:
    """Revoke a key and the tokens exchanged from it."""
    owner_id = _owner_id()
    # A malformed id, an unknown one and someone else's all look the same.
    parsed = parse_id(key_id)
    if parsed is None or not revoke(owner_id, parsed):
        return _error(404, "not_found", _("There is no such API key."))
    return Response(status=204, headers={"Cache-Control": "no-store"})
