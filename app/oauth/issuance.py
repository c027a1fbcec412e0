"""What a grant hands the token step: one frozen :class:`Issuance`.

Each grant (authorization code, refresh token) and the API-key exchange
decides everything about the token it issues: who, for which client and
resource, which scopes, under which consent, its ``jti``, and the refresh
token handed out with it. The token generator (:mod:`.tokens`) signs exactly
that, and :func:`save_token` stores the refresh token it names. Authlib
carries the value as its ``user``: a grant's ``authenticate_user`` returns
it, and Authlib passes it to the generator and to ``save_token``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import refresh_store
from .refresh_seal import RotationAnswer
from .resources import Resource


@dataclass(frozen=True)
class ChainStart:
    """A code exchange begins a refresh chain, named by the code's token ``jti``."""

    #: The chain's absolute end.
    expires_at: datetime


@dataclass(frozen=True)
class ChainRotation:
    """A refresh rotates out the chain's token ``parent_id``."""

    parent_id: uuid.UUID
    #: The rotated-out token as presented: it seals the answer for the grace
    #: window (:mod:`.refresh_seal`).
    presented: str
    #: The chain's scope; a narrowed refresh keeps it whole for the successor.
    scope: str
    expires_at: datetime


@dataclass(frozen=True)
class Issuance:
    """One access token to issue, as its grant decided it."""

    #: The person it is for; ``None`` for a service client acting for itself,
    #: whose tokens' subject is its ``client_id``.
    user_id: uuid.UUID | None
    #: ``None`` for a token exchanged from an API key, which has no client.
    client_id: str | None
    #: Its ``aud`` and lifetime.
    resource: Resource
    scope: str
    jti: str
    #: The consent it is issued under (the ``consent_id`` claim), if any.
    consent_id: uuid.UUID | None = None
    #: The refresh token handed out with it: a new chain's first, a
    #: rotation's successor, or, in the grace window, the successor again.
    refresh_token: str | None = None
    #: How to store ``refresh_token``; ``None`` when nothing is stored (none
    #: handed out, or a grace repeat of a successor stored already).
    chain: ChainStart | ChainRotation | None = None
    #: The API key it is exchanged from.
    api_key_id: str | None = None

    def __post_init__(self) -> None:
        # Never a scope the resource no longer has: a chain, a key or a
        # consent from before an operator dropped it still names it.
        known = self.resource.scope_names
        kept = " ".join(s for s in self.scope.split() if s in known)
        object.__setattr__(self, "scope", kept)

    @property
    def subject(self) -> str:
        """The token's ``sub``: the person's id, or a service client's own."""
        if self.user_id is not None:
            return str(self.user_id)
        if self.client_id is None:
            raise ValueError("a token is for a person or a client")
        return self.client_id

    def get_user_id(self) -> str:
        return self.subject


def save_token(token: dict[str, Any], request: Any) -> None:
    """Store the refresh token the issuance hands out (Authlib's ``save_token``)."""
    issuance: Issuance = request.user
    chain, plain = issuance.chain, issuance.refresh_token
    if chain is None or plain is None:
        return
    if (
        issuance.consent_id is None
        or issuance.client_id is None
        or issuance.user_id is None
    ):
        raise ValueError("a refresh chain belongs to a client's consent")
    lineage: dict[str, Any]
    if isinstance(chain, ChainStart):
        scope, lineage = issuance.scope, {"code_jti": issuance.jti}
    else:
        # The successor's scope is the chain's, capped: a chain only narrows.
        scope = chain.scope
        answer = RotationAnswer(
            refresh_token=plain,
            access_token=token["access_token"],
            scope=issuance.scope,
            expires_at=int(time.time()) + int(token.get("expires_in", 0)),
        )
        lineage = {"parent": (chain.parent_id, chain.presented), "answer": answer}
    refresh_store.issue(
        plain,
        consent_id=issuance.consent_id,
        client_id=issuance.client_id,
        user_id=issuance.user_id,
        scope=scope,
        resource=issuance.resource.uri,
        chain_expires_at=chain.expires_at,
        **lineage,
    )
