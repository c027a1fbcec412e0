"""Discovery documents: RFC 8414 (authorization server) and RFC 9728 (resource)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssMetadata

from ..config import Settings
from .clients import AUTH_METHODS, OFFLINE_ACCESS, SCOPES

#: Endpoint paths, relative to the issuer.
AUTHORIZATION_PATH = "/authorize"
TOKEN_PATH = "/token"
REGISTRATION_PATH = "/register"
REVOCATION_PATH = "/revoke"
INTROSPECTION_PATH = "/introspect"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    metadata = {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "registration_endpoint": issuer + REGISTRATION_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(offered_grant_types(settings)),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        # offline_access is accepted for clients that ask for it (CONTRACT §10).
        "scopes_supported": [*SCOPES, OFFLINE_ACCESS],
        # RFC 9207: every authorization response carries ``iss``.
        "authorization_response_iss_parameter_supported": True,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
    }
    if settings.resource_servers:
        metadata["introspection_endpoint"] = issuer + INTROSPECTION_PATH
        metadata["introspection_endpoint_auth_methods_supported"] = [
            "client_secret_basic"
        ]
    return metadata


def offered_grant_types(settings: Settings) -> tuple[str, ...]:
    """Grant types clients may register and use."""
    if settings.refresh_tokens:
        return ("authorization_code", "refresh_token")
    return ("authorization_code",)


def validate_metadata(settings: Settings) -> None:
    """Check the document against RFC 8414 at start-up (raises ``ValueError``)."""
    metadata = AuthorizationServerMetadata(authorization_server_metadata(settings))
    metadata.validate(metadata_classes=[IssMetadata])


def protected_resource_metadata(settings: Settings) -> dict[str, Any]:
    return {
        "resource": settings.mcp_resource,
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP",
    }


def resource_metadata_url(settings: Settings) -> str:
    return settings.issuer + RESOURCE_METADATA_PATH


def issuer_path(settings: Settings) -> str:
    """The issuer's path component ('' when the issuer is a bare origin)."""
    return urlsplit(settings.issuer).path.rstrip("/")
