"""The authorization-code grant with PKCE (S256 only) and resource indicators.

Authlib's own ``validate_token_request`` runs; what we add sits at its
storage hooks: ``query_authorization_code`` refuses a malformed request
(:func:`check_token_parameters`) and only then consumes the code atomically.
That is after Authlib has authenticated the client, so a stranger learns
nothing about the request before ``invalid_client``. ``authenticate_user``
turns the code into the :class:`~app.oauth.issuance.Issuance` it was for.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN

from ... import audit
from ...config import current_settings
from ...denylist import deny_token
from ...models import utcnow
from ...signin import current_sign_in
from .. import consent, refresh_store
from ..clients import Client
from ..codes import AuthorizationCode, CodeStore, Consumed
from ..constants import AUTH_METHODS
from ..issuance import ChainStart, Issuance
from ..oauth_errors import InvalidTargetError
from ..resources import find_resource, resolve_resource
from ..tokens import new_jti

#: Parameters the token request must carry (RFC 6749 §4.1.3, RFC 7636 §4.5);
#: checked before the code is consumed, so a malformed request does not burn
#: a good code.
REQUIRED_TOKEN_PARAMETERS = ("code", "redirect_uri", "code_verifier")


def code_store() -> CodeStore:
    settings = current_settings()
    return CodeStore(settings.auth_code_ttl, settings.access_token_ttl)


def sign_in_time() -> int:
    """When the person approving signed in (OpenID Connect ``auth_time``)."""
    # Asked of the sign-in seam, whatever the method was; now, for a
    # session from before it kept the time.
    signed_in = current_sign_in()
    return signed_in.auth_time if signed_in else int(time.time())


def check_token_parameters(request: Any) -> str:
    """Refuse a token request that could never succeed, before its code is spent;
    return the URI of the resource it names ('': none)."""
    form = request.form
    for name in REQUIRED_TOKEN_PARAMETERS:
        if not form.get(name):
            raise InvalidRequestError(f"Missing '{name}' in request.")
    # RFC 7636 §4.1: a verifier of another shape can never match the challenge.
    if not CODE_VERIFIER_PATTERN.match(form["code_verifier"]):
        raise InvalidGrantError("Code challenge failed.")
    # A resource we do not serve could never be the code's. Without one, the
    # code's own resource (RFC 8707 §2.2), whatever the default is now.
    values = request.payload.datalist.get("resource", [])
    return resolve_resource(values).uri if values else ""


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
        subject: consent.ConsentedUser = request.user
        resource = resolve_resource(request.payload.datalist.get("resource", []))
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
                resource=resource.uri,
                auth_time=sign_in_time(),
                consent_id=str(subject.consent_id),
                # Chosen now, so that a replayed code can deny its token.
                token_jti=new_jti(),
            ),
        )

    def query_authorization_code(
        self, code: str, client: Client
    ) -> AuthorizationCode | None:
        # Codes are single-use: a request that could never succeed must not
        # burn one. Then consumed atomically: of concurrent redemptions one wins.
        resource = check_token_parameters(self.request)
        consumed = code_store().consume(code, client.client_id, resource)
        if consumed.other_resource:
            raise InvalidTargetError()  # RFC 8707 §2.2: the code's resource only
        if consumed.replayed_jti:
            _end_replayed_grant(consumed, client)
        return consumed.code

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: consuming the code already deleted it."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Issuance:
        code = authorization_code
        return consented_issuance(
            self.request,
            user_id=code.user_id,
            consent_id=code.consent_id,
            scope=code.scope,
            resource_uri=code.resource,
            jti=code.token_jti,
        )


def consented_issuance(
    request: Any,
    *,
    user_id: str,
    consent_id: str,
    scope: str,
    resource_uri: str,
    jti: str,
) -> Issuance:
    """The token a person's approval yields, once redeemed at ``/token``.

    The code grant and the device grant alike: one query finds the person
    enabled and the consent the approval was given under still the live one
    (a withdrawn consent never comes back); it also records that the client
    has been used. A refresh chain begins when the client registered the grant.
    """
    client: Client = request.client
    holder = consent.live_consent_holder(user_id, consent_id, client.client_id)
    if holder is None:
        raise InvalidGrantError("The authorization was revoked.")
    # Approved again with fewer scopes since: the token gets no scope the
    # consent no longer has.
    scope = " ".join(consent.narrow(scope.split(), holder.scope))
    resource = find_resource(resource_uri)
    if resource is None:
        raise InvalidGrantError("The resource is no longer served.")
    requested = request.payload.datalist.get("resource", [])
    if requested and resolve_resource(requested).uri != resource.uri:
        raise InvalidTargetError()  # RFC 8707 §2.2: the approval's resource only
    refresh = client.check_grant_type("refresh_token")
    ttl = timedelta(seconds=current_settings().refresh_token_ttl)
    return Issuance(
        user_id=holder.user_id,
        client_id=client.client_id,
        resource=resource,
        scope=scope,
        jti=jti,
        consent_id=uuid.UUID(consent_id),
        refresh_token=refresh_store.new_refresh_token() if refresh else None,
        chain=ChainStart(expires_at=utcnow() + ttl) if refresh else None,
    )


def _end_replayed_grant(consumed: Consumed, client: Client) -> None:
    """RFC 6749 §4.1.2: a code used twice revokes what it produced, and the
    refresh chain it began ends with its consent."""
    jti = str(consumed.replayed_jti)
    deny_token(jti)
    audit.record(
        audit.AUTHORIZATION_CODE_REPLAYED,
        client_id=client.client_id,
        user_id=consumed.replayed_user_id,
        revoked_jti=jti,
    )
    chain = refresh_store.chain_of_code(jti)
    if chain is not None:
        consent.withdraw(*chain, audit.SERVICE)
