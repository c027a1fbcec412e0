"""What the authorization endpoint adds to Authlib's checks, as grant extensions.

Registered with the code grant (:func:`app.oauth.server.init_app`); each
hangs on Authlib's ``after_validate_authorization_request_payload`` hook,
so a failure is redirected to the client once its redirect URI is known good.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge

from ..resources import resolve_resource


class S256CodeChallenge(CodeChallenge):
    """PKCE that every client must use, with ``S256`` only (OAuth 2.1 §4.1.1)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'.")
        # RFC 7636 §4.3 defaults an absent method to "plain", which we refuse.
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be 'S256'.")
        super().validate_code_challenge(grant, redirect_uri)


class ResourceIndicator:
    """RFC 8707 at the authorization endpoint: only a resource we serve, and
    only scopes it has (each resource has its own)."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook(
            "after_validate_authorization_request_payload", self.validate_resource
        )

    def validate_resource(self, grant: Any, redirect_uri: str) -> None:
        request = grant.request
        resource = resolve_resource(request.payload.datalist.get("resource", []))
        scope = resource.allowed_scope(
            request.payload.scope, grant.client.registered_scope
        )
        if scope is None:
            raise InvalidScopeError()
        request.scope = scope


class SingleParameters:
    """RFC 6749 §3.1: parameters appear once; once the redirect URI is known
    good, a repeat is reported to the client rather than on a page."""

    PARAMETERS = (
        "response_type",
        "scope",
        "state",
        "code_challenge_method",
        "prompt",
    )

    def __call__(self, grant: Any) -> None:
        grant.register_hook(
            "after_validate_authorization_request_payload", self.validate_single
        )

    def validate_single(self, grant: Any, redirect_uri: str) -> None:
        datalist = grant.request.payload.datalist
        for name in self.PARAMETERS:
            if len(datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"Multiple '{name}' in request.")
