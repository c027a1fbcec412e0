"""The API-key endpoints programs call (docs/reference.md, "API keys").

``POST /auth/token`` trades a key for an access token. ``/api-keys`` lets a
client manage the keys it made for a person, with an OAuth access token that
holds ``write``: an application never gives itself more than the person gave
it, for no longer than ``API_KEY_MAX_DAYS``, and only while the consent lasts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from flask_babel import gettext as _

from ..api_key_exchange import exchange, note_use_after
from ..api_keys import (
    ApiKeyError,
    ConsentWithdrawn,
    KeyLimitReached,
    create_api_key,
    isoformat_utc,
    list_api_keys,
    parse_id,
    revoke,
    validate_new_key,
)
from ..config import current_settings
from ..db import db
from ..errors import challenge, empty_response, json_error
from ..models import ApiKey
from ..oauth.consent import find_consent
from ..oauth.constants import API_KEY_EXCHANGE_PATH, API_KEYS_PATH
from ..oauth.resource import (
    current_claims,
    deny_insufficient_scope,
    deny_invalid_token,
    require_token,
)
from ..oauth.resources import mcp_resource
from ..oauth.tokens import VIA_API_KEY
from ..rate_limits import limit, setting
from ..surfaces import same_origin_only
from ..users import get_active_user

bp = Blueprint("api_key_routes", __name__)

#: The one answer to every failed exchange, so that no failure can be told apart.
INVALID_CREDENTIALS = {"error": "Invalid credentials"}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _json_body() -> Any:
    """Return the request's JSON, or ``None`` when it is absent or unreadable."""
    try:
        return request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the parser follows: not a 500
        return None


@bp.post(API_KEY_EXCHANGE_PATH)
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
    # last_used_at is kept without slowing the answer.
    note_use_after(response, claims["api_key_id"])
    return response


@dataclass(frozen=True)
class Caller:
    """The person an OAuth token speaks for, and the consent it was issued under."""

    owner_id: uuid.UUID
    consent_id: uuid.UUID
    #: What the client may put in a key: in both the token and the consent.
    scopes: frozenset[str]


def _caller() -> Caller:
    """Identify the caller; refuse tokens exchanged from keys."""
    claims = current_claims()
    # A key must not be able to mint more keys, or revoking one would not
    # contain a leak: only a token from an OAuth grant manages keys.
    if claims.get("via") == VIA_API_KEY or "api_key_id" in claims:
        abort(
            json_error(
                403,
                "forbidden",
                _("A token obtained from an API key cannot manage API keys."),
            )
        )
    user = get_active_user(claims.get("sub"))
    client_id = claims.get("client_id")
    consent = (
        find_consent(user.id, client_id, str(claims["aud"]))
        if user is not None and isinstance(client_id, str)
        else None
    )
    if (
        user is None
        or consent is None
        # Only a token issued under that consent: one from an identity
        # assertion or a service client has none, and manages no keys.
        or claims.get("consent_id") != str(consent.id)
    ):
        deny_invalid_token()  # the account or the person's consent is gone
    return Caller(
        user.id,
        consent.id,
        frozenset(str(claims.get("scope", "")).split()) & set(consent.scope.split()),
    )


def _describe(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": isoformat_utc(key.created_at),
        "expires_at": isoformat_utc(key.expires_at),
    }


@bp.post(API_KEYS_PATH)
@same_origin_only
@require_token(mcp_resource, "write")
def create() -> Response:
    """Create a key; the answer is the only place the key ever appears."""
    caller = _caller()
    body = _json_body()
    if not isinstance(body, dict):
        return json_error(400, "invalid_request", _("The body must be a JSON object."))
    max_days = current_settings().api_key_max_days
    try:
        # A longer lifetime than allowed is refused rather than shortened: the
        # client learns the key dies sooner than it asked, instead of finding out.
        new_key = validate_new_key(
            body.get("name"),
            body.get("scopes"),
            body.get("expires_in_days"),
            # The token's resource: the key is bound to the consent it was
            # made under, which is for this resource.
            mcp_resource(),
            max_days=max_days,
            default_days=max_days,
        )
    except ApiKeyError as exc:
        return json_error(400, "invalid_request", str(exc))
    # RFC 6750 §3.1: asking for more than the token holds is insufficient_scope.
    if not set(new_key.scopes) <= caller.scopes:
        deny_insufficient_scope(*new_key.scopes)
    try:
        with db.transaction():
            key, secret = create_api_key(caller.owner_id, new_key, caller.consent_id)
    except ConsentWithdrawn:
        deny_invalid_token()
    except KeyLimitReached as exc:
        return json_error(403, "api_key_limit_exceeded", str(exc))
    return _json({**_describe(key), "key": secret}, 201)


@bp.get(API_KEYS_PATH)
@same_origin_only
@require_token(mcp_resource, "write")
def index() -> Response:
    """List the keys this client made for the caller that are not revoked."""
    caller = _caller()
    keys = list_api_keys(caller.owner_id, caller.consent_id)
    described = [
        {**_describe(key), "last_used_at": isoformat_utc(key.last_used_at)}
        for key in keys
    ]
    return _json({"api_keys": described})


@bp.delete(f"{API_KEYS_PATH}/<key_id>")
@same_origin_only
@require_token(mcp_resource, "write")
def delete(key_id: str) -> Response:
    """Revoke a key this client made, and the tokens exchanged from it."""
    caller = _caller()
    # A malformed id, an unknown one, someone else's and one this client did
    # not make all look the same.
    parsed = parse_id(key_id)
    with db.transaction():
        revoked = parsed is not None and revoke(
            caller.owner_id, parsed, caller.consent_id
        )
    if not revoked:
        return json_error(404, "not_found", _("There is no such API key."))
    return empty_response(204)
