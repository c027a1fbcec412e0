"""Bearer-token protection for resource routes (RFC 6750, RFC 9728).

``require_token(mcp_resource, "read")`` guards a view of a resource; the
verified claims (their audience that resource) are then in
:func:`current_claims`. Failures answer as RFC 6750 §3 and RFC 9728 §5.1 say:

- no token: ``401 Bearer resource_metadata="<PRM URL>", scope="read write"``
  (the scopes the protected resource metadata lists)
- bad, expired, forged, revoked or foreign token:
  ``401 Bearer error="invalid_token", resource_metadata="<PRM URL>"``
- missing scope: ``403 Bearer error="insufficient_scope", scope="...",
  resource_metadata="<PRM URL>"`` (MCP authorization §Step-Up: the client
  finds where to ask for more scope from the challenge alone)

A view that learns only later what it needs (an MCP tool's scopes) refuses
with :func:`deny_insufficient_scope` or :func:`deny_invalid_token`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc6750.errors import InsufficientScopeError, InvalidTokenError
from flask import abort, g

from ..compat import acquire_bearer_token
from ..config import current_settings
from ..denylist import is_denied
from ..errors import json_error
from .metadata import resource_metadata_url
from .resources import Resource
from .tokens import InvalidAccessToken, decode_access_token


class AccessToken(TokenMixin):
    """Verified claims of a JWT access token, in Authlib's token interface."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def get_scope(self) -> str:
        return self.claims.get("scope", "")

    def check_client(self, client: Any) -> bool:
        return self.claims.get("client_id") == client.get_client_id()

    def get_expires_in(self) -> int:
        return int(self.claims["exp"]) - int(self.claims["iat"])

    def is_expired(self) -> bool:
        return False  # decode_access_token already refused expired tokens

    def is_revoked(self) -> bool:
        return False  # authenticate_token already consulted the denylist


class JWTAccessTokenValidator(BearerTokenValidator):
    """Verify our own JWTs: signature, type, issuer, audience, expiry, denylist."""

    def authenticate_token(self, token_string: str) -> AccessToken | None:
        try:
            claims = decode_access_token(token_string, _guarded())
        except InvalidAccessToken:
            return None
        if is_denied(claims):
            return None
        return AccessToken(claims)


def _guarded() -> Resource:
    """The resource the current request's guard protects (its tokens' audience)."""
    resource = g.get("guarded_resource")
    if not isinstance(resource, Resource):
        raise RuntimeError("no resource guards this request (require_token)")
    return resource


class BearerProtector(ResourceProtector):
    """Authlib's protector with the exact RFC 6750 and RFC 9728 challenges."""

    def acquire_token(self, scopes: Any = None, **kwargs: Any) -> TokenMixin:
        # Authlib's own steps with a lighter request wrapper (app/compat.py).
        return acquire_bearer_token(self, current_settings().issuer, scopes, **kwargs)

    def raise_error_response(self, error: OAuth2Error) -> NoReturn:
        metadata = resource_metadata_url(current_settings(), _guarded())
        if isinstance(error, InsufficientScopeError):
            scope = " ".join(g.get("required_scopes") or [])
            challenge = (
                f'Bearer error="insufficient_scope", scope="{scope}", '
                f'resource_metadata="{metadata}"'
            )
            body = {
                "error": "insufficient_scope",
                "error_description": f"This request needs the scope '{scope}'.",
            }
            status = 403
        elif isinstance(error, InvalidTokenError):
            challenge = f'Bearer error="invalid_token", resource_metadata="{metadata}"'
            body = {
                "error": "invalid_token",
                "error_description": "The access token is invalid, expired or revoked.",
            }
            status = 401
        else:
            # No token, or not a Bearer one: RFC 6750 §3.1 says to add no error
            # code. The scope hint (RFC 6750 §3, MCP authorization "Scope
            # Challenge Handling") names the scopes the protected resource
            # metadata lists, so a client knows what to ask for at once.
            hint = " ".join(_guarded().scope_names)
            challenge = f'Bearer resource_metadata="{metadata}", scope="{hint}"'
            body = {
                "error": "unauthorized",
                "error_description": "A Bearer access token is required.",
            }
            status = 401
        response = json_error(status, body["error"], body["error_description"])
        response.headers["WWW-Authenticate"] = challenge
        abort(response)


protector = BearerProtector()
protector.register_token_validator(JWTAccessTokenValidator())


def require_token(guarded: Callable[[], Resource], *scopes: str) -> Callable:
    """Guard a view of the resource ``guarded()`` with a bearer token for it
    holding every scope in ``scopes``.

    ``guarded`` is called per request: resources are built from the settings
    of the app serving it (e.g. :func:`.resources.mcp_resource`).
    """
    required = " ".join(scopes) or None

    def decorator(view: Callable) -> Callable:
        protected = protector(required)(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.guarded_resource = guarded()
            g.required_scopes = list(scopes)
            return protected(*args, **kwargs)

        return wrapper

    return decorator


def current_claims() -> dict[str, Any]:
    """The verified claims of the token on this request (inside ``require_token``)."""
    # Authlib's documented proxy to the token its protector accepted.
    token = current_token._get_current_object()
    if not isinstance(token, AccessToken):
        raise RuntimeError("current_claims() is only for views in require_token")
    return token.claims


def authenticate_request(resource: Resource, *scopes: str) -> dict[str, Any]:
    """Check the request's bearer token for ``resource`` without a decorator;
    abort as above."""
    g.guarded_resource = resource
    g.required_scopes = list(scopes)
    try:
        token = protector.acquire_token(" ".join(scopes) or None)
    except OAuth2Error as error:
        protector.raise_error_response(error)
    return token.claims


def deny_insufficient_scope(*scopes: str) -> NoReturn:
    """Abort with the 403 ``insufficient_scope`` challenge naming ``scopes``."""
    g.required_scopes = list(scopes)
    protector.raise_error_response(InsufficientScopeError())


def deny_invalid_token() -> NoReturn:
    """Abort with the 401 ``invalid_token`` challenge (e.g. the account is gone)."""
    protector.raise_error_response(InvalidTokenError())
