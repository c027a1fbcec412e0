"""Discovery documents: RFC 8414 (authorization server) and RFC 9728 (resource)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssMetadata

from ..config import Settings
from ..config_uris import split_resource_uri
from .constants import (
    AUTH_METHODS,
    AUTHORIZATION_PATH,
    DEVICE_AUTHORIZATION_PATH,
    DEVICE_CODE,
    ID_JAG_PROFILE,
    INTROSPECTION_PATH,
    JWKS_PATH,
    JWT_BEARER,
    PRIVATE_KEY_JWT,
    REGISTRATION_PATH,
    RESOURCE_METADATA_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
)
from .key_sets import ALGORITHMS
from .resources import Resource, builtin_resource
from .scopes import OFFLINE_ACCESS
from .tokens import keys_of


class Offers(Protocol):
    """What the authorization server offers (``AuthServer``): the registered
    grants' types, in registration order."""

    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]


def authorization_server_metadata(
    settings: Settings, server: Offers, resources: Sequence[Resource]
) -> dict[str, Any]:
    """The RFC 8414 document; grant and response types are the server's own,
    the scopes those of ``resources`` (every registered one)."""
    issuer = settings.issuer
    scopes = dict.fromkeys(s for resource in resources for s in resource.scope_names)
    document = {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "registration_endpoint": issuer + REGISTRATION_PATH,
        "response_types_supported": list(server.response_types),
        "response_modes_supported": ["query"],
        "grant_types_supported": list(server.grant_types),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        # private_key_jwt (RFC 8414 §2): asymmetric algorithms only.
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        # offline_access is accepted for clients that ask for it (docs/reference.md).
        "scopes_supported": [*scopes, OFFLINE_ACCESS],
        # RFC 9207: every authorization response carries ``iss``.
        "authorization_response_iss_parameter_supported": True,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        # RFC 9728 §4: the resources this server issues tokens for.
        "protected_resources": [resource.uri for resource in resources],
    }
    if settings.client_metadata_documents:
        # draft-ietf-oauth-client-id-metadata-document §5.
        document["client_id_metadata_document_supported"] = True
    if settings.jwt_signing_key or settings.managed_keys:
        # Only public keys can be published; an HS256 secret never is (RFC 7517).
        document["jwks_uri"] = issuer + JWKS_PATH
    if settings.resource_servers:
        document["introspection_endpoint"] = issuer + INTROSPECTION_PATH
        # Resource servers with their secret; clients by signed assertion.
        document["introspection_endpoint_auth_methods_supported"] = [
            "client_secret_basic",
            PRIVATE_KEY_JWT,
        ]
        document["introspection_endpoint_auth_signing_alg_values_supported"] = list(
            ALGORITHMS
        )
    if DEVICE_CODE in server.grant_types:
        document["device_authorization_endpoint"] = issuer + DEVICE_AUTHORIZATION_PATH
    if JWT_BEARER in server.grant_types:
        document["authorization_grant_profiles_supported"] = [ID_JAG_PROFILE]
    return document


def openid_configuration(
    settings: Settings, server: Offers, resources: Sequence[Resource]
) -> dict[str, Any]:
    """The RFC 8414 document with the fields OpenID Connect Discovery 1.0 §3 requires.

    Strict clients (the MCP TypeScript SDK) validate this URL's answer against
    that schema. No ID tokens are issued, so the values only describe what
    exists: one subject per person, the tokens' algorithm, the key set.
    """
    return {
        "jwks_uri": settings.issuer + JWKS_PATH,
        **authorization_server_metadata(settings, server, resources),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys_of(settings).algorithm],
    }


def validate_metadata(settings: Settings, server: Offers) -> None:
    """Check the document against RFC 8414 at start-up (raises ``ValueError``)."""
    document = authorization_server_metadata(
        settings, server, [builtin_resource(settings)]
    )
    metadata = AuthorizationServerMetadata(document)
    metadata.validate(metadata_classes=[IssMetadata])


def protected_resource_metadata(
    settings: Settings, resource: Resource
) -> dict[str, Any]:
    """The RFC 9728 document of ``resource``."""
    return {
        "resource": resource.uri,
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(resource.scope_names),
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
    }


def resource_metadata_url(settings: Settings, resource: Resource) -> str:
    """Where ``resource``'s RFC 9728 document is: inserted between its host
    and path (§3.1); the built-in one's also under the issuer, as it always was."""
    if resource.builtin:
        return settings.issuer + RESOURCE_METADATA_PATH
    origin, path = split_resource_uri(resource.uri)
    return origin + RESOURCE_METADATA_PATH + path


def served_resource(
    settings: Settings, resources: Sequence[Resource], path: str
) -> Resource | None:
    """The resource on the issuer's origin whose document is at
    ``RESOURCE_METADATA_PATH + path`` (RFC 9728 §3.1)."""
    origin, _ = split_resource_uri(settings.issuer)
    for resource in resources:
        if split_resource_uri(resource.uri) == (origin, path.rstrip("/")):
            return resource
    return None


def issuer_path(settings: Settings) -> str:
    """The issuer's path component ('' when the issuer is a bare origin)."""
    return urlsplit(settings.issuer).path.rstrip("/")
