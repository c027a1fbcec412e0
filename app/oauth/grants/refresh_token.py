"""The refresh-token grant: rotation, a grace window, reuse detection.

Authlib's RefreshTokenGrant runs as is; the storage hooks do the work.
``authenticate_refresh_token`` first refuses what it would refuse anyway
(a foreign ``resource``), then consumes the token with one conditional UPDATE
(:func:`.refresh_store.consume`) that also checks the requested scope, so
of concurrent uses exactly one rotates it and an error answer leaves the
grant as it was (RFC 6749 §5.2). A loser, or a client retrying, that presents
the rotated-out token within ``REFRESH_GRACE_SECONDS``, while its successor
is unused, is handed the rotation's answer again; otherwise it is reuse
(RFC 9700 §4.14.2) and the whole consent is withdrawn
(:func:`.consent.withdraw`). ``authenticate_user`` turns the token into the
:class:`~app.oauth.issuance.Issuance` of its successor.
"""

from __future__ import annotations

import time
from dataclasses import replace

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError

from ... import audit
from ...config import current_settings
from ...db import db
from .. import consent, refresh_store
from ..clients import Client
from ..constants import AUTH_METHODS
from ..issuance import ChainRotation, Issuance
from ..oauth_errors import InvalidTargetError
from ..refresh_liveness import chain_head_is_live
from ..refresh_seal import RotationAnswer, unseal
from ..refresh_store import RefreshRecord, Unconsumed
from ..resources import find_resource, resolve_resource
from ..scopes import OFFLINE_ACCESS, scope_tokens
from ..tokens import TOKEN_TYPE_NAME, new_jti

#: A remembered access token is handed out again only with this much life left.
MIN_REPEAT_LIFETIME = 5


def requested_scopes(scope: str | None) -> list[str]:
    """The scopes a refresh asks for; offline_access is never a token's scope."""
    return [s for s in scope_tokens(scope) if s != OFFLINE_ACCESS]


class RefreshTokenGrant(grants.RefreshTokenGrant):
    #: OAuth 2.1 §4.3.1: public clients refresh too, with rotation.
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        # RFC 8707: a chain never changes its audience. A resource we do not
        # serve is refused before the token is looked at; another of ours
        # makes the rotation below refuse it, spending nothing.
        values = self.request.payload.datalist.get("resource", [])
        wanted = resolve_resource(values).uri if values else None
        if not refresh_store.is_plausible(refresh_token):
            return None
        client: Client = self.request.client
        idle_ttl = current_settings().refresh_token_idle_ttl
        requested = requested_scopes(self.request.payload.scope)
        record = refresh_store.consume(
            refresh_token, client.client_id, idle_ttl, requested, wanted
        )
        if record is not None:
            return record
        found = refresh_store.find_unconsumed(refresh_token, client.client_id, idle_ttl)
        if found is None or found.idle:
            return None  # unknown, another client's, expired or ended
        if found.seconds_since_rotation is not None and not _repeatable(found):
            # Reuse (RFC 9700 §4.14.2) ends the grant, unless the chain died
            # long ago and has nothing left to protect (an old backup).
            if chain_head_is_live(found.record.id, idle_ttl):
                _end_reused_chain(found.record)
            return None
        if wanted is not None and found.record.resource != wanted:
            # and nothing was consumed
            raise InvalidTargetError("A refresh token stays with its resource.")
        if not set(requested) <= set(found.record.scope.split()):
            raise InvalidScopeError()  # and nothing was consumed
        if found.seconds_since_rotation is None:
            return None  # it died between the two statements (idle, expired)
        answer = unseal(found.sealed_answer, refresh_token)
        if answer is None:
            return None
        return replace(found.record, grace_answer=answer)

    def authenticate_user(self, refresh_token: RefreshRecord) -> Issuance:
        # The consume (or find_unconsumed) already required an enabled person
        # and a live consent. RFC 6749 §6: an omitted scope is the one
        # granted; a narrower one was already checked against it.
        record = refresh_token
        resource = find_resource(record.resource)
        if resource is None:
            raise InvalidGrantError("The resource is no longer served.")
        scope = " ".join(requested_scopes(self.request.payload.scope))
        if record.grace_answer is not None:
            successor, chain = record.grace_answer.refresh_token, None
        else:
            successor = refresh_store.new_refresh_token()
            chain = ChainRotation(
                parent_id=record.id,
                presented=self.request.form["refresh_token"],
                scope=record.scope,
                expires_at=record.chain_expires_at,
            )
        return Issuance(
            user_id=record.user_id,
            client_id=record.client_id,
            resource=resource,
            scope=scope or record.scope,
            jti=new_jti(),
            consent_id=record.consent_id,
            refresh_token=successor,
            chain=chain,
        )

    def issue_token(self, user: Issuance, refresh_token: RefreshRecord) -> dict:
        repeated = _repeated_answer(refresh_token.grace_answer, user.scope)
        if repeated is not None:
            return repeated
        return self.generate_token(
            user=user,
            scope=user.scope,
            include_refresh_token=self.INCLUDE_NEW_REFRESH_TOKEN,
        )

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        """Nothing to do: consuming the token already rotated it out."""


def _repeatable(found: Unconsumed) -> bool:
    """A rotated-out token may be answered again only for a lost answer:
    within the grace window, and while its successor is unused (once used,
    the client evidently received it)."""
    since = found.seconds_since_rotation
    grace = current_settings().refresh_grace_seconds
    return since is not None and since <= grace and not found.successor_used


def _end_reused_chain(record: RefreshRecord) -> None:
    """RFC 9700 §4.14.2: a rotated-out token used again ends the whole grant."""
    consent.withdraw(record.user_id, record.consent_id, audit.SERVICE)
    db.after_commit(
        lambda: audit.record(
            audit.REFRESH_TOKEN_REUSED,
            client_id=record.client_id,
            user_id=record.user_id,
            consent_id=record.consent_id,
        )
    )


def _repeated_answer(answer: RotationAnswer | None, scope: str) -> dict | None:
    """The rotation's own answer, if this repeat asks for what it gave.

    Otherwise (another scope, an answer stored without its access token, or
    one about to expire) a fresh access token goes with the same successor.
    """
    if answer is None or answer.access_token is None:
        return None
    if set(answer.scope.split()) != set(scope.split()):
        return None
    expires_in = answer.expires_at - int(time.time())
    if expires_in < MIN_REPEAT_LIFETIME:
        return None
    token = {
        "token_type": TOKEN_TYPE_NAME,
        "access_token": answer.access_token,
        "expires_in": expires_in,
        "refresh_token": answer.refresh_token,
    }
    if answer.scope:
        token["scope"] = answer.scope
    return token
