"""``private_key_jwt``: a client authenticates with a JWT signed by its key.

RFC 7523 §2.2 and §3, as OpenID Connect Core §9 names it, at every endpoint
where clients authenticate (``/token`` for every grant, ``/revoke``,
``/introspect``). Authlib's :class:`JWTBearerClientAssertion` does the
claim checks (``iss`` = ``sub``, ``aud``, ``exp``, ``jti`` through its
``validate_jti`` hook); what it leaves open is closed here:

- the key set is the client's own, inline or fetched from its ``jwks_uri``
  (:mod:`.key_sets`), and only asymmetric algorithms verify (:mod:`.assertions`);
- ``aud`` is the issuer or the token endpoint; ``exp`` at most
  :data:`MAX_LIFETIME` ahead, so a leaked assertion is short-lived and its
  ``jti`` need not be kept long; a ``jti`` is spent once across instances;
- a form ``client_id`` must name the same client (RFC 7521 §4.2);
- every failure is "no client" (a ``401 invalid_client``), never a 400 or a
  500, as for the other methods (:mod:`.client_auth`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion

from .. import audit
from ..config import current_settings
from .assertions import (
    LEEWAY,
    BadAssertion,
    is_numeric_date,
    is_usable_jti,
    spend_jti,
    verify_signature,
)
from .client_auth import MAX_CREDENTIAL_LENGTH
from .constants import PRIVATE_KEY_JWT, TOKEN_PATH
from .key_sets import KeySetBusy, KeySetProblem, key_set_at, parse_key_set
from .oauth_errors import BusyError

log = logging.getLogger(__name__)

#: ``client_assertion_type`` of a JWT assertion (RFC 7523 §2.2).
ASSERTION_TYPE = JWTBearerClientAssertion.CLIENT_ASSERTION_TYPE
#: Longest an assertion may live from now: a few minutes.
MAX_LIFETIME = 300
#: Longest assertion looked at.
MAX_ASSERTION_LENGTH = 8192


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)

    def __call__(self, query_client: Any, request: Any) -> Any:
        form = request.form
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return None
        if not isinstance(assertion, str) or not assertion:
            return None
        if len(assertion) > MAX_ASSERTION_LENGTH:
            return None
        try:
            return self._authenticate(query_client, request, assertion)
        except InvalidClientError as error:
            log.debug("client assertion refused: %s", error.description)
            return None

    def _authenticate(self, query_client: Any, request: Any, assertion: str) -> Any:
        headers, claims = self.extract_assertion(assertion)
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or len(client_id) > MAX_CREDENTIAL_LENGTH:
            raise InvalidClientError(description="Invalid claim: 'sub'")
        named = request.form.get("client_id")
        if named is not None and named != client_id:
            raise InvalidClientError(description="client_id is not the assertion's")
        client = query_client(client_id)
        if client is None or not client.has_keys:
            raise InvalidClientError(description="No such client with keys.")
        # The method is the client's before any key is fetched for it.
        self.authenticate_client(client)
        kid = headers.get("kid")
        try:
            if client.row.jwks is not None:
                key_set = parse_key_set(client.row.jwks)
            else:
                key_set = key_set_at(client.row.jwks_uri, kid, client.is_service)
            verified = verify_signature(assertion, key_set, kid)
        except KeySetBusy as busy:
            raise BusyError(busy.status, busy.retry_after) from None
        except (KeySetProblem, BadAssertion):
            raise InvalidClientError(description="The signature is not good.") from None
        self.verify_claims(verified)
        request.client = client
        return client

    def extract_assertion(self, assertion: str) -> tuple[dict, dict]:
        try:
            return super().extract_assertion(assertion)
        except RecursionError:
            raise InvalidClientError(description="Invalid JWT payload.") from None

    def verify_claims(self, claims: Any) -> None:
        expires = claims.get("exp")
        # The signer's clock may run ahead of ours by the leeway.
        horizon = time.time() + MAX_LIFETIME + LEEWAY
        if not is_numeric_date(expires) or expires > horizon:
            raise InvalidClientError(description="'exp' is missing or too far ahead.")
        if not is_usable_jti(claims.get("jti")):
            raise InvalidClientError(description="Invalid claim: 'jti'")
        super().verify_claims(claims)

    def get_audiences(self) -> list[str]:
        issuer = current_settings().issuer
        return [issuer, issuer + TOKEN_PATH]

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        # Called once the signature verified: a replay is the client's key
        # at work twice, worth an audit event.
        client_id = str(claims["iss"])
        if spend_jti("client", client_id, jti, claims["exp"]):
            return True
        audit.record(audit.ASSERTION_REPLAYED, issuer=client_id, client_id=client_id)
        return False
