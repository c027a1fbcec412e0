"""Enterprise-managed authorization: an identity assertion traded for a token.

MCP's ``io.modelcontextprotocol/enterprise-managed-authorization`` extension
(draft-ietf-oauth-identity-assertion-authz-grant): a person signed in to
their company's identity provider reaches the company's MCP servers with no
consent screen, because the company already decided. The client presents
the provider's Identity Assertion JWT Authorization Grant (ID-JAG, ``typ:
oauth-id-jag+jwt``) with the RFC 7523 jwt-bearer grant.

Authlib's :class:`JWTBearerGrant` takes the assertion's issuer to be the
client; here the client authenticates as at any grant and the issuer is a
provider the operator trusts (:mod:`app.trusted_issuers`). So the request
is validated here, through Authlib's own steps (client authentication,
``extract_assertion``, ``verify_claims``) and hooks
(``resolve_issuer_client`` finds the trusted issuer,
``resolve_client_public_key`` its keys, ``authenticate_user`` the person).
Every check of the draft applies: ``typ``, the algorithm allow-list, the
signature, ``iss``, ``aud``, ``client_id``, ``resource``, ``exp``, ``iat``
and a ``jti`` used once across every instance. The token is for the
asserted resource, with the scopes both asked for and asserted, and comes
with no refresh token: the client asks the provider for a new assertion,
which keeps the company's decision current.
"""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc7523 import JWTBearerGrant

from ... import audit, trusted_issuers
from ...config import current_settings
from ...db import is_storable
from ...identities import owner_of
from ...identity_providers import signs_in
from ...models import User
from ...upstream_identity import (
    MAX_SUBJECT_LENGTH,
    UpstreamIdentity,
    email_domain,
    is_entra,
    verified_email,
)
from ...users import find_by_email
from ..assertions import (
    LEEWAY,
    BadAssertion,
    is_numeric_date,
    is_usable_jti,
    spend_jti,
    verify_signature,
)
from ..clients import Client
from ..constants import AUTH_METHODS, JWT_BEARER
from ..issuance import Issuance
from ..key_sets import KeySetBusy, KeySetProblem, key_set_at
from ..oauth_errors import BusyError, InvalidTargetError
from ..resources import Resource, resolve_resource
from ..scopes import OFFLINE_ACCESS, scope_tokens
from ..tokens import new_jti

#: The ID-JAG's media type (draft §3.1), in its ``typ`` header.
ID_JAG_TYPE = "oauth-id-jag+jwt"
#: Longest an assertion may live from now; its ``jti`` is kept that long.
MAX_LIFETIME = 3600
#: Longest assertion looked at.
MAX_ASSERTION_LENGTH = 16384
#: The ``provider`` an assertion's identity is looked up as (the issuer decides).
PROVIDER = "enterprise"


class IdentityAssertionGrant(JWTBearerGrant):
    GRANT_TYPE = JWT_BEARER
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    LEEWAY = LEEWAY
    CLAIMS_OPTIONS = {
        "iss": {"essential": True},
        "sub": {"essential": True},
        "aud": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
        "jti": {"essential": True},
        "client_id": {"essential": True},
        "resource": {"essential": True},
    }

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client cannot use identity assertions.")
        self.request.client = client
        assertion = self.request.form.get("assertion")
        if not assertion:
            raise InvalidRequestError("Missing 'assertion' in request.")
        if len(assertion) > MAX_ASSERTION_LENGTH:
            raise InvalidGrantError("The assertion is too long.")
        headers, unverified = self.extract_assertion(assertion)
        typ = headers.get("typ")
        # RFC 7515 §4.1.9: the media type may be written without "application/".
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != (
            ID_JAG_TYPE
        ):
            raise InvalidGrantError(f"The assertion's 'typ' must be '{ID_JAG_TYPE}'.")
        trusted = self.resolve_issuer_client(unverified.get("iss"))
        if trusted is None:
            raise InvalidGrantError("The assertion's issuer is not trusted here.")
        self.request.trusted_issuer = trusted
        if client.is_public and not trusted.allow_public_clients:
            raise UnauthorizedClientError(
                "Public clients cannot present this issuer's assertions."
            )
        try:
            key_set = self.resolve_client_public_key(trusted, headers.get("kid"))
            claims = verify_signature(assertion, key_set, headers.get("kid"))
        except KeySetBusy as busy:
            raise BusyError(busy.status, busy.retry_after) from None
        except (KeySetProblem, BadAssertion):
            raise InvalidGrantError("The assertion's signature is not good.") from None
        self.verify_claims(claims)
        if claims["iss"] != trusted.issuer:
            raise InvalidGrantError("The assertion's issuer is not trusted here.")
        if claims["client_id"] != client.client_id:
            raise InvalidGrantError("The assertion was issued to another client.")
        resource = _asserted_resource(claims["resource"], self.request)
        scope = _granted_scope(
            self.request.payload.scope, claims.get("scope"), resource
        )
        # Every check passed: spending the jti also records that the client
        # is in use, which keeps it from being pruned (it has no consent).
        spent = spend_jti(
            "id-jag", trusted.issuer, claims["jti"], claims["exp"], client.client_id
        )
        if not spent:
            _replayed(trusted.issuer, client.client_id)
            raise InvalidGrantError("The assertion was used before.")
        user = self.authenticate_user(claims)
        if user is None:
            raise InvalidGrantError("No account here belongs to the asserted person.")
        self.request.user = Issuance(
            user_id=user.id,
            client_id=client.client_id,
            resource=resource,
            scope=scope,
            jti=new_jti(),
        )

    def extract_assertion(self, assertion: str) -> tuple[dict, dict]:
        try:
            return super().extract_assertion(assertion)
        except RecursionError:
            raise InvalidGrantError("Invalid JWT payload.") from None

    def verify_claims(self, claims: Any) -> None:
        super().verify_claims(claims)
        now = time.time()
        # The issuer's clock may run ahead of ours by the leeway.
        horizon = now + MAX_LIFETIME + LEEWAY
        if not is_numeric_date(claims["exp"]) or claims["exp"] > horizon:
            raise InvalidGrantError("The assertion lives too long.")
        if not is_numeric_date(claims["iat"]) or claims["iat"] > now + LEEWAY:
            raise InvalidGrantError("The assertion was issued in the future.")
        for name in ("sub", "jti", "client_id", "resource"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidGrantError(f"Invalid claim: '{name}'")
        if not is_usable_jti(claims["jti"]):
            raise InvalidGrantError("Invalid claim: 'jti'")

    def get_audiences(self) -> list[str]:
        # The draft (§4.3): the assertion's audience is this issuer, exactly.
        return [current_settings().issuer]

    def resolve_issuer_client(self, issuer: Any) -> trusted_issuers.Trusted | None:
        if not isinstance(issuer, str):
            return None
        return trusted_issuers.find(issuer)

    def resolve_client_public_key(
        self, client: trusted_issuers.Trusted, kid: Any = None
    ) -> Any:
        # The operator registered the issuer's key set URL: a vetted one.
        kid = kid if isinstance(kid, str) else None
        return key_set_at(client.jwks_uri, kid, vetted=True)

    def authenticate_user(self, claims: Any) -> User | None:
        """The person whose (issuer, subject) identity this is.

        Failing that, an existing account with the assertion's verified
        email, where the operator listed its domain for the issuer. That is
        looked up afresh each time and never stored as an identity: a stored
        one would sign in through the provider (if it is, or becomes, a
        sign-in provider) without the proof a link needs. Never an issuer
        people sign in with here (they link by signing in), never Entra
        (whose ``email`` is not believed), never a new account.
        """
        issuer, subject = claims["iss"], claims["sub"]
        if len(subject) > MAX_SUBJECT_LENGTH or not is_storable(subject):
            return None
        identity = UpstreamIdentity(
            provider=PROVIDER,
            issuer=issuer,
            subject=subject,
            email=None,
            domains=frozenset(),
        )
        user = owner_of(identity)
        if user is None:
            user = _by_email(claims, self.request.trusted_issuer)
        return user if user is not None and user.is_active else None

    def create_token_response(self) -> tuple[int, Any, Any]:
        issuance: Issuance = self.request.user
        token = self.generate_token(
            user=issuance, scope=issuance.scope, include_refresh_token=False
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _asserted_resource(claimed: str, request: Any) -> Resource:
    """The registered resource the assertion names; a request that names one
    must name the same (RFC 8707)."""
    resource = resolve_resource([claimed])
    values = request.payload.datalist.get("resource", [])
    if values and resolve_resource(values) != resource:
        raise InvalidTargetError("The assertion is for another resource.")
    return resource


def _granted_scope(requested: Any, asserted: Any, resource: Resource) -> str:
    """Those asked for (all asserted when none) that were asserted, among the
    resource's own."""
    if not isinstance(asserted, str):
        asserted = ""
    allowed = set(scope_tokens(asserted))
    wanted = [s for s in scope_tokens(requested) if s != OFFLINE_ACCESS]
    chosen = set(wanted) if wanted else allowed
    scope = [s for s in resource.scope_names if s in chosen and s in allowed]
    if not scope:
        raise InvalidScopeError("No scope both asked for and asserted.")
    return " ".join(scope)


def _replayed(issuer: str, client_id: str) -> None:
    # Recorded at once: the failing request's transaction is rolled back.
    audit.record(audit.ASSERTION_REPLAYED, issuer=issuer, client_id=client_id)


def _by_email(claims: Any, trusted: trusted_issuers.Trusted) -> User | None:
    """The existing account the assertion's verified email names, if its
    issuer may name people so (:meth:`IdentityAssertionGrant.authenticate_user`)."""
    issuer = claims["iss"]
    if not trusted.email_domains or "tid" in claims or is_entra(issuer):
        return None
    if signs_in(issuer):
        return None
    email = verified_email(claims.get("email"), claims.get("email_verified"))
    if email is None or email_domain(email) not in trusted.email_domains:
        return None
    return find_by_email(email)
