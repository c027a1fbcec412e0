"""Revocation (RFC 7009) and introspection (RFC 7662), at Authlib's hooks.

Revocation accepts our two kinds of token: JWT access tokens (which have
dots) and opaque refresh tokens (which have none). Ending either goes through
the one denylist path (:mod:`app.denylist`, a refresh token's by withdrawing
its consent: :func:`.consent.withdraw`).
Introspection is for resource servers, which have access tokens only, and
for clients that sign assertions, about their own access tokens.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint as BaseRevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as BaseIntrospectionEndpoint

from .. import audit
from ..config import current_settings
from ..denylist import deny_token, is_denied
from . import consent, refresh_liveness
from .client_auth import parse_basic_authorization
from .clients import Client
from .constants import AUTH_METHODS, PRIVATE_KEY_JWT
from .resources import default_resource, find_resource, registry
from .tokens import InvalidAccessToken, audience_of, decode_access_token

#: Longest token worth looking at; our JWTs are well under this.
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class AccessTokenClaims:
    """A verified, undenied JWT access token."""

    claims: dict[str, Any]

    def check_client(self, client: Any) -> bool:
        return self.claims.get("client_id") == client.get_client_id()

    def is_expired(self) -> bool:
        return False  # decode_access_token refused expired tokens

    def is_revoked(self) -> bool:
        return False  # query_token consulted the denylist


@dataclass(frozen=True)
class StoredRefreshToken:
    stored: refresh_liveness.StoredToken

    def check_client(self, client: Any) -> bool:
        return self.stored.record.check_client(client)

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return not self.stored.revocable


def find_access_token(token: Any) -> AccessTokenClaims | None:
    """A good, undenied access token of ours; ``None`` for anything else."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return None
    if "." not in token:
        return None  # a refresh token, or nothing of ours
    # Ours if it verifies for the resource it names, one we issue tokens for
    # (a removed resource's tokens are no longer anyone's).
    audience = audience_of(token)
    resource = find_resource(audience) if audience is not None else None
    if resource is None:
        return None
    try:
        claims = decode_access_token(token, resource)
    except InvalidAccessToken:
        return None
    return None if is_denied(claims) else AccessTokenClaims(claims)


def find_token(token: Any) -> AccessTokenClaims | StoredRefreshToken | None:
    """Our token, whichever kind; the hint is only a hint (RFC 7009 §2.1)."""
    if not isinstance(token, str) or "." in token:
        return find_access_token(token)
    settings = current_settings()
    stored = refresh_liveness.lookup(
        token, settings.refresh_token_idle_ttl, settings.refresh_grace_seconds
    )
    return StoredRefreshToken(stored) if stored is not None else None


def _check_token_parameter(request: Any) -> None:
    # An unknown or absent ``token_type_hint`` is ignored (RFC 7009 §2.1).
    if not request.form.get("token"):
        raise InvalidRequestError("Missing 'token' in request.")


class RevocationEndpoint(BaseRevocationEndpoint):
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def check_params(self, request: Any, client: Any) -> None:
        _check_token_parameter(request)

    def authenticate_token(self, request: Any, client: Any) -> Any:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], None)
        # RFC 7009 §2.2: another client's token is left alone, and the answer
        # is the same 200, so it tells the caller nothing.
        return token if token is not None and token.check_client(client) else None

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return find_token(token_string)

    def revoke_token(self, token: Any, request: Any) -> None:
        if isinstance(token, AccessTokenClaims):
            deny_token(str(token.claims["jti"]), int(token.claims["exp"]))
            return
        # RFC 7009 §2.1 lets us end the grant of a refresh token, but only a
        # token that could still be used: an expired or long-rotated one,
        # from a backup or a log, must not end the grant the person holds
        # today (which may share its consent, approved again since).
        if token.stored.revocable:
            record = token.stored.record
            consent.withdraw(record.user_id, record.consent_id, audit.CLIENT)

    def create_endpoint_response(self, request: Any) -> tuple[int, str, list]:
        super().create_endpoint_response(request)
        # RFC 7009 §2.2: the content of the response body is ignored; send none.
        return 200, "", [("Cache-Control", "no-store")]


@dataclass(frozen=True)
class ResourceServer:
    name: str
    #: URIs of the resources whose tokens it may introspect.
    resources: frozenset[str]


def authenticate_resource_server(request: Any) -> ResourceServer:
    """HTTP Basic against ``RESOURCE_SERVERS``, compared in constant time."""
    credentials = parse_basic_authorization(request.headers.get("Authorization"))
    if credentials is not None:
        name, secret = credentials
        digest = hashlib.sha256(secret.encode()).hexdigest()
        found = None
        for entry in current_settings().resource_servers:
            if hmac.compare_digest(entry.secret_hash, digest) and entry.name == name:
                found = entry
        if found is not None:
            return ResourceServer(name, _bound_resources(found.resources))
    raise InvalidClientError("Resource server authentication failed.", status_code=401)


def _bound_resources(uris: tuple[str, ...]) -> frozenset[str]:
    """The registered URIs an entry names (spelled as registered); without
    any, the default resource's (docs/settings.md, ``RESOURCE_SERVERS``)."""
    if not uris:
        return frozenset({default_resource().uri})
    found = (registry().named(uri) for uri in uris)
    return frozenset(resource.uri for resource in found if resource is not None)


class IntrospectionEndpoint(BaseIntrospectionEndpoint):
    def authenticate_endpoint_client(self, request: Any) -> ResourceServer | Client:
        # A client signing an assertion introspects the tokens issued to it;
        # a resource server, with its secret, the tokens meant for it.
        if "client_assertion" in request.form:
            if request.headers.get("Authorization") is not None:
                raise InvalidRequestError("Use only one client authentication method.")
            try:
                client = self.server.authenticate_client(
                    request, [PRIVATE_KEY_JWT], self.ENDPOINT_NAME
                )
            except InvalidClientError:
                raise InvalidClientError(
                    "Client authentication failed.", status_code=401
                ) from None
            request.client = client
            return client
        server = authenticate_resource_server(request)
        request.client = server
        return server

    def check_params(self, request: Any, client: Any) -> None:
        _check_token_parameter(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        # A refresh token is for our token endpoint, never a resource server:
        # it is described as inactive, like anything else not meant for them.
        return find_access_token(token_string)

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        # Only tokens meant for it (RFC 7662 §4); any other is "not active".
        if isinstance(client, Client):
            return token.check_client(client)
        return str(token.claims["aud"]) in client.resources

    def introspect_token(self, token: AccessTokenClaims) -> dict[str, Any]:
        claims = token.claims
        payload = {
            "active": True,
            "scope": claims.get("scope", ""),
            "client_id": claims.get("client_id"),
            "sub": claims["sub"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "iss": claims["iss"],
            "aud": claims["aud"],
            "token_type": "Bearer",
        }
        # An API key's token has no client (docs/reference.md, "API keys").
        return {k: v for k, v in payload.items() if v is not None}
