"""The authorization-code grant with PKCE (S256 only) and resource indicators.

Authlib's own ``validate_token_request`` runs; what we add sits at its
storage hooks: ``query_authorization_code`` refuses a malformed request
(:func:`check_token_parameters`) and only then consumes the code atomically.
That is after Authlib has authenticated the client, so a stranger learns
nothing about the request before ``invalid_client``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import (
    CODE_VERIFIER_PATTERN,
    compare_s256_code_challenge,
)
from flask import session

from .. import audit
from ..config import current_settings
from ..denylist import deny_token
from ..models import utcnow
from .audience import check_resource
from .clients import Client, note_authorized
from .codes import AuthorizationCode, CodeStore
from .consent import ConsentedUser, live_consent_holder
from .constants import AUTH_METHODS
from .refresh import end_chain_of_code
from .tokens import new_jti

#: Parameters the token request must carry (CONTRACT §4); checked before the code
#: is consumed, so a malformed request does not burn a good code.
REQUIRED_TOKEN_PARAMETERS = ("code", "redirect_uri", "code_verifier")


def code_store() -> CodeStore:
    settings = current_settings()
    return CodeStore(settings.auth_code_ttl, settings.access_token_ttl)


def check_token_parameters(request: Any) -> None:
    """Refuse a token request that could never succeed, before its code is spent."""
    form = request.form
    for name in REQUIRED_TOKEN_PARAMETERS:
        if not form.get(name):
            raise InvalidRequestError(f"Missing '{name}' in request.")
    # RFC 7636 §4.1: a verifier of another shape can never match the challenge.
    if not CODE_VERIFIER_PATTERN.match(form["code_verifier"]):
        raise InvalidGrantError("Code challenge failed.")
    check_resource(request.payload.datalist.get("resource", []))


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
    """RFC 8707 at the authorization endpoint: only our ``/mcp`` resource."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook(
            "after_validate_authorization_request_payload", self.validate_resource
        )

    def validate_resource(self, grant: Any, redirect_uri: str) -> None:
        check_resource(grant.request.payload.datalist.get("resource", []))


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


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    #: Random bytes in a code: 192 bits, beyond the 128 required (RFC 6749 §10.10).
    AUTHORIZATION_CODE_BYTES = 24

    def generate_authorization_code(self) -> str:
        # Authlib draws each of its characters by a separate call on
        # SystemRandom; one read of the same source costs a fraction of that.
        return secrets.token_urlsafe(self.AUTHORIZATION_CODE_BYTES)

    @staticmethod
    def validate_no_multiple_request_parameter(request: Any) -> None:
        # Only repeats that leave the client or its redirect URI in doubt are
        # shown on a page; SingleParameters reports the rest by redirect.
        datalist = request.payload.datalist
        for name in ("client_id", "redirect_uri"):
            if len(datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"Multiple '{name}' in request.")

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: Client) -> str:
        # Authlib quotes the URI in its message, and a quote or control character
        # in it makes building the error fail (a 500); the message stays fixed.
        redirect_uri = request.payload.redirect_uri
        if redirect_uri:
            if not client.check_redirect_uri(redirect_uri):
                raise InvalidRequestError(
                    "The redirect_uri is not registered for this client."
                )
            return redirect_uri
        default = client.get_default_redirect_uri()
        if not default:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        return default

    def save_authorization_code(self, code: str, request: Any) -> None:
        client: Client = request.client
        # The authorization view passes the person with the consent they gave.
        subject: ConsentedUser = request.user
        code_store().save(
            code,
            AuthorizationCode(
                client_id=client.client_id,
                # The URI as sent (port included) or the one default, as
                # validated above; /token must repeat it exactly.
                redirect_uri=self.redirect_uri,
                scope=request.scope,
                user_id=subject.get_user_id(),
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method="S256",
                resource=current_settings().mcp_resource,
                auth_time=int(session.get("auth_time") or time.time()),
                consent_id=str(subject.consent_id),
                token_jti=new_jti(),
            ),
        )

    def query_authorization_code(
        self, code: str, client: Client
    ) -> AuthorizationCode | None:
        # Codes are single-use: a request that could never succeed must not
        # burn one. Then consumed atomically: of concurrent redemptions one wins.
        check_token_parameters(self.request)
        consumed = code_store().consume(code, client.client_id)
        if consumed.replayed_jti:
            # RFC 6749 §4.1.2: a code used twice revokes what it produced.
            deny_token(consumed.replayed_jti)
            audit.record(
                audit.AUTHORIZATION_CODE_REPLAYED,
                client_id=client.client_id,
                user_id=consumed.replayed_user_id,
                revoked_jti=consumed.replayed_jti,
            )
            end_chain_of_code(consumed.replayed_jti)
        return consumed.code

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: consuming the code already deleted it."""

    def authenticate_user(
        self, authorization_code: AuthorizationCode
    ) -> ConsentedUser | None:
        # One query: the person is enabled and the consent the code was issued
        # under is still the live one (a revoked consent never comes back);
        # a client's first authorization is recorded by the same statement.
        client: Client = self.request.client
        unmarked = client.row.last_authorized_at is None
        user_id = live_consent_holder(
            authorization_code.user_id,
            authorization_code.consent_id,
            mark_client=client.client_id if unmarked else None,
        )
        if user_id is None:
            raise InvalidGrantError("The authorization was revoked.")
        if unmarked:
            note_authorized(client, utcnow())  # so save_token skips it
        return ConsentedUser(
            user_id,
            uuid.UUID(authorization_code.consent_id),
            authorization_code.token_jti,
        )
