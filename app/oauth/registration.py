"""Dynamic client registration (RFC 7591), strict where it matters.

The request is reduced to the fields this service stores before Authlib's
claims validation sees it: redirect URIs are held to our rules (docs/reference.md),
grant and response types the service does not offer are dropped (RFC 7591 §2
lets the server replace requested values), and every other field is ignored.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.requests import JsonPayload
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7591.errors import (
    InvalidClientMetadataError,
    InvalidRedirectURIError,
)

from ..config import current_settings
from ..models import utcnow
from ..rate_limits import client_address
from .client_names import client_name
from .clients import (
    Client,
    ClientRow,
    generate_client_id,
    generate_client_secret,
    hash_secret,
)
from .constants import (
    AUTH_METHODS,
    CLIENT_CREDENTIALS,
    CONTINUING_GRANT_TYPES,
    DEFAULT_GRANT_TYPES,
    DEFAULT_RESPONSE_TYPES,
    PRIVATE_KEY_JWT,
)
from .key_sets import KeySetProblem, check_key_set_url, parse_key_set
from .metadata import authorization_server_metadata
from .redirect_uris import redirect_uri_problem
from .registration_caps import insert_within_caps
from .resources import all_scopes, known_resources

MAX_REDIRECT_URIS = 20
#: Methods with no secret: a public client's, and one that signs with its key.
SECRETLESS_METHODS = frozenset({"none", PRIVATE_KEY_JWT})


class _Payload(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


def _string_list(data: dict[str, Any], name: str, default: list[str]) -> list[str]:
    value = data.get(name)
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadataError(f"'{name}' must be a list of strings.")
    return value


def _redirect_uris(data: dict[str, Any], grant_types: list[str]) -> list[str]:
    """RFC 7591 §2: redirect URIs, required of a client of a redirect-based
    grant. A client of other grants only (a device's) has none: any it sends
    are dropped, since nobody approving it ever sees them, and an approval
    must not make one a place people are sent to."""
    uris = data.get("redirect_uris")
    if "authorization_code" not in grant_types:
        return []
    if not isinstance(uris, list) or not uris:
        raise InvalidRedirectURIError("'redirect_uris' must be a non-empty list.")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectURIError("Too many redirect URIs.")
    allowed_schemes = current_settings().allowed_redirect_schemes
    for uri in uris:
        problem = redirect_uri_problem(uri, allowed_schemes)
        if problem:
            raise InvalidRedirectURIError(f"Each redirect URI {problem}.")
    return list(dict.fromkeys(uris))


def _grant_types(requested: list[str], offered: tuple[str, ...]) -> list[str]:
    """The offered grant types requested, as long as one can begin a grant.

    Client credentials are never among them: only service clients have them,
    made by a person or an operator (app/service_clients.py).
    """
    offered = tuple(value for value in offered if value != CLIENT_CREDENTIALS)
    kept = [value for value in offered if value in requested]
    beginning = [value for value in offered if value not in CONTINUING_GRANT_TYPES]
    if not any(value in beginning for value in kept):
        raise InvalidClientMetadataError(
            "'grant_types' must include one of: " + ", ".join(beginning) + "."
        )
    return kept


def _response_types(
    requested: list[str], offered: tuple[str, ...], grant_types: list[str]
) -> list[str]:
    """RFC 7591 §2.1: ``code`` goes with the authorization-code grant, and
    only with it; a client of other grants needs no response type."""
    kept = [value for value in offered if value in requested]
    if "authorization_code" in grant_types and "code" not in kept:
        raise InvalidClientMetadataError("'response_types' must include 'code'.")
    return kept if "authorization_code" in grant_types else []


def _auth_method(data: dict[str, Any]) -> str:
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidClientMetadataError(
            "'token_endpoint_auth_method' must be one of "
            + ", ".join(AUTH_METHODS)
            + "."
        )
    return method


def _keys(data: dict[str, Any], method: str) -> dict[str, Any]:
    """A ``private_key_jwt`` client's keys: exactly one of ``jwks`` and
    ``jwks_uri`` (RFC 7591 §2), public asymmetric keys only. Other clients'
    keys are ignored, as any unknown field."""
    if method != PRIVATE_KEY_JWT:
        return {}
    jwks, jwks_uri = data.get("jwks"), data.get("jwks_uri")
    if (jwks is None) == (jwks_uri is None):
        raise InvalidClientMetadataError(
            "private_key_jwt needs exactly one of 'jwks' and 'jwks_uri'."
        )
    try:
        if jwks is not None:
            parse_key_set(jwks)
        else:
            check_key_set_url(jwks_uri)
    except KeySetProblem as problem:
        raise InvalidClientMetadataError(f"Unusable keys: {problem}.") from None
    return {"jwks": jwks} if jwks is not None else {"jwks_uri": jwks_uri}


def _scope(data: dict[str, Any]) -> str:
    """The scopes the client may ask for; only those of resources it names
    are limited by it (:meth:`.resources.Resource.allowed_scope`)."""
    scope = data.get("scope")
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        # No limit of the client's own: each resource's scopes limit it.
        return ""
    if not isinstance(scope, str):
        raise InvalidClientMetadataError("'scope' must be a space-separated string.")
    # Unknown scopes are dropped (RFC 7591 §2), but never replaced by wider ones.
    requested = scope.split()
    known = all_scopes()
    kept = [s for s in known if s in requested]
    if not kept:
        raise InvalidClientMetadataError(
            "'scope' must include at least one of: " + ", ".join(known) + "."
        )
    return " ".join(kept)


def clean_metadata(
    data: Any, grant_types: tuple[str, ...], response_types: tuple[str, ...]
) -> dict[str, Any]:
    """Reduce a registration request to what is registered, or raise.

    ``grant_types`` and ``response_types`` are those the server offers.
    """
    if not isinstance(data, dict):
        raise InvalidClientMetadataError("The request body must be a JSON object.")
    kept_grant_types = _grant_types(
        _string_list(data, "grant_types", list(DEFAULT_GRANT_TYPES)), grant_types
    )
    method = _auth_method(data)
    return {
        **_keys(data, method),
        "redirect_uris": _redirect_uris(data, kept_grant_types),
        "token_endpoint_auth_method": method,
        "grant_types": kept_grant_types,
        "response_types": _response_types(
            _string_list(data, "response_types", list(DEFAULT_RESPONSE_TYPES)),
            response_types,
            kept_grant_types,
        ),
        "client_name": client_name(data),
        "scope": _scope(data),
    }


class RegistrationClaims(ClientMetadataClaims):
    """Authlib's RFC 7591 claims, with our redirect URI rules in place of its own."""

    def validate_redirect_uris(self) -> None:
        # Authlib wants a host, which a private-use URI such as
        # ``com.example.app:/cb`` lacks (RFC 8252 §7.1); :func:`clean_metadata`
        # has already held every URI to :func:`redirect_uri_problem`.
        return None


class RegistrationEndpoint(ClientRegistrationEndpoint):
    """RFC 7591 with open registration, capped per source address and in total."""

    def __init__(self, server: Any = None) -> None:
        super().__init__(server, claims_classes=[RegistrationClaims])

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration, as MCP clients expect; limits apply instead

    def get_server_metadata(self) -> dict[str, Any]:
        return authorization_server_metadata(
            current_settings(), self.server, known_resources()
        )

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        cleaned = clean_metadata(
            request.payload.data, self.server.grant_types, self.server.response_types
        )
        request.payload = _Payload(cleaned)
        return super().extract_client_metadata(request)

    def generate_client_id(self, request: Any) -> str:
        return generate_client_id(current_settings().client_id_prefix)

    def generate_client_secret(self, request: Any) -> str:
        return generate_client_secret()

    def create_registration_response(self, request: Any) -> tuple[int, dict, list]:
        status, body, headers = super().create_registration_response(request)
        if body["token_endpoint_auth_method"] in SECRETLESS_METHODS:
            body.pop("client_secret", None)  # they prove themselves otherwise
        if not body.get("scope"):
            body.pop("scope", None)  # none registered: each resource's own
        return status, body, headers

    def save_client(
        self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any
    ) -> Client:
        settings = current_settings()
        source = client_address()
        secretless = client_metadata["token_endpoint_auth_method"] in SECRETLESS_METHODS
        values = {
            "client_id": client_info["client_id"],
            "client_secret_hash": None
            if secretless
            else hash_secret(client_info["client_secret"]),
            "client_name": client_metadata["client_name"],
            "redirect_uris": client_metadata["redirect_uris"],
            "grant_types": client_metadata["grant_types"],
            "response_types": client_metadata["response_types"],
            "token_endpoint_auth_method": client_metadata["token_endpoint_auth_method"],
            "scope": client_metadata["scope"],
            "registered_from": source,
            "created_at": utcnow(),
            "last_authorized_at": None,
            "jwks": client_metadata.get("jwks"),
            "jwks_uri": client_metadata.get("jwks_uri"),
        }
        insert_within_caps(values, settings)
        return Client(ClientRow(**values))
