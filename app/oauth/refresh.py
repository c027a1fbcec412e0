"""The refresh-token grant: rotation, a grace window, reuse detection (CONTRACT §10).

Authlib's RefreshTokenGrant runs as is; the storage hooks do the work.
``authenticate_refresh_token`` consumes the token with one conditional UPDATE
(:func:`.refresh_store.consume`), so of concurrent uses exactly one rotates
it. A loser, or a client retrying, that presents the rotated-out token within
``REFRESH_GRACE_SECONDS`` is handed the same successor; later, it is reuse
(RFC 9700 §4.14.2) and the whole consent ends (:func:`end_chain`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import grants
from flask import g

from .. import audit
from ..config import current_settings
from ..db import db
from ..models import utcnow
from . import refresh_store
from .clients import Client, mark_authorized
from .consent import ConsentedUser, revoke_consent
from .constants import AUTH_METHODS, OFFLINE_ACCESS
from .refresh_store import RefreshRecord


def end_chain(user_id: uuid.UUID, consent_id: uuid.UUID) -> bool:
    """End a consent's refresh chains and every access token issued under it.

    RFC 7009 §2.1 and RFC 9700 §4.14.2: the whole grant goes. Revoking the
    consent denies its id (:mod:`app.denylist`) before the caller commits.
    Tell whether the consent was live.
    """
    revoked = revoke_consent(user_id, consent_id)
    refresh_store.end_chains(consent_id)
    return revoked


def end_chain_of_code(code_jti: str) -> None:
    """A code redeemed twice ends the chain its first redemption began."""
    chain = refresh_store.chain_of_code(code_jti)
    if chain is not None:
        end_chain(*chain)


def refresh_token_generator(**_: Any) -> str:
    """A new refresh token, or the successor already issued (grace window)."""
    return g.get("refresh_successor") or refresh_store.new_refresh_token()


class RefreshTokenGrant(grants.RefreshTokenGrant):
    #: OAuth 2.1 §4.3.1: public clients refresh too, with rotation.
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        if not refresh_store.is_plausible(refresh_token):
            return None
        settings = current_settings()
        client: Client = self.request.client
        record = refresh_store.consume(
            refresh_token, client.client_id, settings.refresh_token_idle_ttl
        )
        if record is not None:
            return record
        rotated = refresh_store.find_rotated(refresh_token, client.client_id)
        if rotated is None:
            return None  # unknown, another client's, expired or ended
        if rotated.seconds_since <= settings.refresh_grace_seconds:
            successor = refresh_store.unseal(rotated.sealed_successor, refresh_token)
            if successor is None:
                return None
            rotated.record.grace_successor = successor
            g.refresh_successor = successor
            return rotated.record
        end_chain(rotated.record.user_id, rotated.record.consent_id)
        db.after_commit(
            lambda: audit.record(
                audit.REFRESH_TOKEN_REUSED,
                client_id=client.client_id,
                user_id=rotated.record.user_id,
                consent_id=rotated.record.consent_id,
            )
        )
        return None

    def issue_token(self, user: ConsentedUser, refresh_token: RefreshRecord) -> dict:
        # RFC 6749 §6: an omitted scope is the one granted; a narrower one was
        # already checked against it. offline_access is never a token's scope.
        requested = (self.request.payload.scope or "").split()
        kept = [s for s in requested if s != OFFLINE_ACCESS]
        return self.generate_token(
            user=user,
            scope=" ".join(kept) if kept else refresh_token.scope,
            include_refresh_token=self.INCLUDE_NEW_REFRESH_TOKEN,
        )

    def authenticate_user(self, refresh_token: RefreshRecord) -> ConsentedUser:
        # The consume (or find_rotated) already required an enabled person and
        # a live consent; the token generator only needs the id.
        return ConsentedUser(refresh_token.user_id, refresh_token.consent_id)

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        """Nothing to do: consuming the token already rotated it out."""


def save_token(token: dict[str, Any], request: Any) -> None:
    """Store the refresh token just issued, if any (Authlib's ``save_token``)."""
    client: Client = request.client
    unmarked = client.row.last_authorized_at is None
    plain = token.get("refresh_token")
    parent = getattr(request, "refresh_token", None)
    if plain is None:
        mark_authorized(client)
    elif isinstance(parent, RefreshRecord):
        if parent.grace_successor is None:
            refresh_store.issue(
                plain,
                consent_id=parent.consent_id,
                client_id=parent.client_id,
                user_id=parent.user_id,
                scope=parent.scope,
                chain_expires_at=parent.chain_expires_at,
                parent=(parent.id, request.form["refresh_token"]),
                mark_client=unmarked,
            )
    else:
        subject: ConsentedUser = request.user
        refresh_store.issue(
            plain,
            consent_id=subject.consent_id,
            client_id=client.client_id,
            user_id=subject.user_id,
            scope=token.get("scope", ""),
            code_jti=subject.token_jti,
            chain_expires_at=utcnow()
            + timedelta(seconds=current_settings().refresh_token_ttl),
            mark_client=unmarked,
        )
