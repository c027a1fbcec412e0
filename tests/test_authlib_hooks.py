"""Fail loudly if an Authlib method we override or call changes its signature.

We customise Authlib at its hooks (app/oauth/server.py lists each deviation);
a renamed or re-ordered parameter there would otherwise fail silently or at
request time.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.hooks import Hookable, hooked
from authlib.oauth2.rfc6749.token_endpoint import TokenEndpoint
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

CodeGrant = grants.AuthorizationCodeGrant
RefreshGrant = grants.RefreshTokenGrant

EXPECTED = [
    (CodeGrant, "validate_token_request", ["self"]),
    (CodeGrant, "query_authorization_code", ["self", "code", "client"]),
    (CodeGrant, "delete_authorization_code", ["self", "authorization_code"]),
    (CodeGrant, "authenticate_user", ["self", "authorization_code"]),
    (CodeGrant, "save_authorization_code", ["self", "code", "request"]),
    (CodeGrant, "validate_no_multiple_request_parameter", ["request"]),
    (CodeGrant, "validate_authorization_redirect_uri", ["request", "client"]),
    (CodeGrant, "check_authorization_endpoint", ["request"]),
    (Hookable, "register_hook", ["self", "hook_type", "hook"]),
    (CodeChallenge, "validate_code_challenge", ["self", "grant", "redirect_uri"]),
    (CodeChallenge, "validate_code_verifier", ["self", "grant", "result"]),
    (AuthorizationServer, "get_authorization_grant", ["self", "request"]),
    (AuthorizationServer, "get_token_grant", ["self", "request"]),
    (AuthorizationServer, "create_token_response", ["self", "request"]),
    (AuthorizationServer, "create_endpoint_response", ["self", "name", "request"]),
    (AuthorizationServer, "handle_error_response", ["self", "request", "error"]),
    (
        AuthorizationServer,
        "handle_response",
        ["self", "status_code", "payload", "headers"],
    ),
    (AuthorizationServer, "create_oauth2_request", ["self", "request"]),
    (AuthorizationServer, "create_json_request", ["self", "request"]),
    # The token generator hook: our generator is called with these keywords,
    # and the grant's Issuance arrives as ``user``.
    (
        AuthorizationServer,
        "generate_token",
        [
            "self",
            "grant_type",
            "client",
            "user",
            "scope",
            "expires_in",
            "include_refresh_token",
        ],
    ),
    (AuthorizationServer, "register_token_generator", ["self", "grant_type", "func"]),
    (
        grants.BaseGrant,
        "generate_token",
        [
            "self",
            "user",
            "scope",
            "grant_type",
            "expires_in",
            "include_refresh_token",
        ],
    ),
    (AuthorizationServer, "save_token", ["self", "token", "request"]),
    (ResourceProtector, "acquire_token", ["self", "scopes", "kwargs"]),
    (ResourceProtector, "raise_error_response", ["self", "error"]),
    (
        ClientRegistrationEndpoint,
        "save_client",
        ["self", "client_info", "client_metadata", "request"],
    ),
    (ClientRegistrationEndpoint, "create_registration_response", ["self", "request"]),
    (RefreshGrant, "authenticate_refresh_token", ["self", "refresh_token"]),
    (RefreshGrant, "authenticate_user", ["self", "refresh_token"]),
    (RefreshGrant, "revoke_old_credential", ["self", "refresh_token"]),
    (RefreshGrant, "issue_token", ["self", "user", "refresh_token"]),
    (TokenEndpoint, "authenticate_endpoint_client", ["self", "request"]),
    (RevocationEndpoint, "authenticate_token", ["self", "request", "client"]),
    (RevocationEndpoint, "check_params", ["self", "request", "client"]),
    (RevocationEndpoint, "query_token", ["self", "token_string", "token_type_hint"]),
    (RevocationEndpoint, "revoke_token", ["self", "token", "request"]),
    (RevocationEndpoint, "create_endpoint_response", ["self", "request"]),
    (IntrospectionEndpoint, "check_params", ["self", "request", "client"]),
    (
        IntrospectionEndpoint,
        "query_token",
        ["self", "token_string", "token_type_hint"],
    ),
    (IntrospectionEndpoint, "check_permission", ["self", "token", "client", "request"]),
    (IntrospectionEndpoint, "introspect_token", ["self", "token"]),
]


def _unhooked(method: Any) -> Any:
    """The method inside Authlib's ``@hooked`` wrapper, which keeps no __wrapped__."""
    for cell in getattr(method, "__closure__", None) or ():
        if inspect.isfunction(cell.cell_contents):
            return cell.cell_contents
    return method


@pytest.mark.parametrize(
    ("owner", "name", "parameters"),
    EXPECTED,
    ids=[f"{owner.__name__}.{name}" for owner, name, _ in EXPECTED],
)
def test_authlib_signature_is_unchanged(
    owner: type, name: str, parameters: list[str]
) -> None:
    method = _unhooked(inspect.unwrap(getattr(owner, name)))
    assert list(inspect.signature(method).parameters) == parameters


def test_validate_token_request_still_runs_its_hooks() -> None:
    """PKCE's verifier check hangs on ``after_validate_token_request``, and
    our parameter checks in ``query_authorization_code`` rely on the client
    being authenticated first."""
    assert CodeGrant.validate_token_request.__qualname__.startswith("hooked.")
    source = inspect.getsource(_unhooked(CodeGrant.validate_token_request))
    authenticated = source.index("self.authenticate_token_endpoint_client()")
    assert authenticated < source.index("self.query_authorization_code(")

    class Probe(Hookable):
        @hooked
        def validate_token_request(self) -> None:
            calls.append("method")

    calls: list[str] = []
    probe = Probe()
    probe.register_hook(
        "before_validate_token_request", lambda grant: calls.append("before")
    )
    probe.register_hook(
        "after_validate_token_request", lambda grant, result: calls.append("after")
    )
    probe.validate_token_request()
    assert calls == ["before", "method", "after"]


@pytest.mark.parametrize("grant", [CodeGrant, RefreshGrant], ids=lambda g: g.__name__)
def test_the_grant_user_reaches_the_generator_and_save_token(grant: Any) -> None:
    """Our Issuance travels as Authlib's ``user``: ``authenticate_user``'s
    answer is what ``generate_token`` gets and what ``request.user`` holds
    when ``save_token`` runs."""
    source = inspect.getsource(_unhooked(grant.create_token_response))
    authenticated = source.index("self.authenticate_user(")
    assert authenticated < source.index("self.request.user = user")
    assert source.index("self.request.user = user") < source.index(
        "self.save_token(token)"
    )
