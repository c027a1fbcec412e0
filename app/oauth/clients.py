"""Registered clients: lookup, secrets, revocation.

Every client lookup goes through :func:`query_client`: a registered client
comes from its row, a ``client_id`` that is a URL from the verdict on the
metadata document it names (app/oauth/client_metadata.py) or, failing one,
from the row kept when a person approved it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import Insert, insert

from .. import models
from ..config import current_settings
from ..db import db, is_storable
from ..denylist import MARKER_MARGIN, deny_clients, evict, process_cache
from ..models import OAuthClient, utcnow
from . import client_metadata
from .constants import (
    CLIENT_CREDENTIALS,
    DEFAULT_GRANT_TYPES,
    DEFAULT_RESPONSE_TYPES,
    JWT_BEARER,
)
from .redirect_uris import (
    browser_host,
    redirect_uri_matches,
    registered_scheme_allowed,
)

#: ``registered_from`` of the row kept for a metadata-document client
#: (app/models.py).
DOCUMENT_SOURCE = models.DOCUMENT_SOURCE


def hash_secret(secret: str) -> str:
    """SHA-256 suffices: secrets are 256 random bits, not guessable passwords."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def generate_client_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def generate_client_secret() -> str:
    return "sk-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ClientRow:
    """A row of ``oauth_clients``, read by column name (``ClientRow(**row._mapping)``).

    Frozen, its lists as tuples: the per-process cache shares one with
    every request.
    """

    client_id: str
    client_secret_hash: str | None
    client_name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    scope: str
    registered_from: str
    created_at: datetime | None = None
    last_authorized_at: datetime | None = None
    jwks: dict | None = None
    jwks_uri: str | None = None
    service_resource: str | None = None
    owner_id: uuid.UUID | None = None
    acts_for_owner: bool = False
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        # The dataclasses documentation's way to set a frozen field once.
        for name in ("redirect_uris", "grant_types", "response_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


class Client(ClientMixin):
    """Authlib's view of a registered client row."""

    def __init__(self, row: ClientRow) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def client_name(self) -> str:
        return self.row.client_name

    @property
    def document_host(self) -> str | None:
        """For a metadata-document client, the host of its URL: the one thing
        it cannot assert about itself. ``None`` for registered clients."""
        if self.row.registered_from != DOCUMENT_SOURCE:
            return None
        return browser_host(self.row.client_id)

    @property
    def is_public(self) -> bool:
        return self.row.token_endpoint_auth_method == "none"

    @property
    def is_service(self) -> bool:
        """A service client: client credentials only, for its one resource."""
        return self.row.service_resource is not None

    @property
    def has_keys(self) -> bool:
        """Whether it authenticates with ``private_key_jwt`` by keys of its own."""
        return self.row.jwks is not None or self.row.jwks_uri is not None

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Only an unambiguous default; with several URIs the client must choose.
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """Authlib's first look at ``scope``: passed on as asked.

        What may be granted depends on the resource asked for, which Authlib
        does not know; the authorization endpoint decides it right after
        (:class:`.grants.extensions.ResourceIndicator`, with
        :meth:`.resources.Resource.allowed_scope`).
        """
        return scope or ""

    @property
    def registered_scope(self) -> str:
        """The scope the client registered (RFC 7591 §2), space-separated."""
        return self.row.scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        settings = current_settings()
        return any(
            redirect_uri_matches(r, redirect_uri, settings.loopback_aliases)
            and registered_scheme_allowed(r, settings.allowed_redirect_schemes)
            for r in self.row.redirect_uris
        )

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.client_secret_hash
        if stored is None:
            return False
        return hmac.compare_digest(stored, hash_secret(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A client uses the one method it registered, at every endpoint.
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.row.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        # A service client has client credentials and nothing else; no other
        # client ever has them (open registration never grants them).
        if self.is_service or grant_type == CLIENT_CREDENTIALS:
            return self.is_service and grant_type == CLIENT_CREDENTIALS
        # An identity assertion names the client it was issued to, and its
        # issuer is one the operator trusts: that, not a registration field,
        # is what lets a client use it (app/oauth/grants/identity_assertion.py).
        if grant_type == JWT_BEARER:
            return True
        # A client registered while REFRESH_TOKENS was on gets none once it is off.
        if grant_type == "refresh_token" and not current_settings().refresh_tokens:
            return False
        return grant_type in self.row.grant_types


#: The name of the per-process cache of registered clients, and its bound.
CLIENT_CACHE = "clients"
CLIENT_CACHE_SIZE = 10_000
#: Seconds a process keeps a service client's row: well within the margin
#: its denial marker outlives the longest token (see :func:`query_client`).
SERVICE_ROW_SECONDS = MARKER_MARGIN // 2


#: Built once and run on the session's connection: constructing the select
#: and the ORM's per-statement work cost more than Postgres's lookup.
_CLIENT_ROW = select(OAuthClient.__table__).where(
    OAuthClient.client_id == bindparam("client_id")
)


def query_client(client_id: str | None) -> Client | None:
    """Find a client by ``client_id``; the one lookup every endpoint uses."""
    # Text Postgres cannot hold could never have been registered.
    if not client_id or not is_storable(client_id):
        return None
    if client_metadata.is_document_url(client_id):
        return _document_client(client_id)
    if len(client_id) > 128:
        return None
    # A registration never changes, so each process keeps what it read;
    # pruning evicts it everywhere once committed (app/prune.py): a row read
    # before that commit and put after the eviction is dropped (``since``).
    # A service client's revocation (its own, or its person's disabling) is
    # announced before its commit and again after; a row read between the
    # two is dropped only by the second. Should that one be lost (the
    # revoking process cut off from Redis after its commit), the row would
    # be served for good, and its tokens outlive their denial, since client
    # credentials read nothing from Postgres. So a process keeps a service
    # client's row for SERVICE_ROW_SECONDS only: its tokens then expire
    # before the markers (ACCESS_TOKEN_TTL + MARKER_MARGIN) that deny them.
    # One primary-key read per client and process every 30 seconds.
    cache = process_cache(CLIENT_CACHE, CLIENT_CACHE_SIZE)
    row = cache.get(client_id) if cache is not None else None
    if row is None:
        since = cache.generation if cache is not None else None
        found = (
            db.session.connection()
            .execute(_CLIENT_ROW, {"client_id": client_id})
            .first()
        )
        if found is None:
            return None  # unknown ids are not remembered: anyone can send them
        row = ClientRow(**found._mapping)
        if row.revoked_at is not None:
            return None  # kept only as the record of its tokens' denial
        if cache is not None:
            until = math.inf
            if row.service_resource is not None:
                until = time.time() + SERVICE_ROW_SECONDS
            cache.put(client_id, row, until=until, since=since)
    return Client(row)


def _document_client(url: str) -> Client | None:
    """A public client from the verdict on the document at ``url``, or, with
    no verdict known, from the row a person's approval kept.

    Nothing is fetched here: only the authorization endpoint fetches, and the
    verdict it reached stays with its request (app/oauth/client_metadata.py).
    """
    if not current_settings().client_metadata_documents:
        return None
    verdict = client_metadata.known_verdict(url)
    if verdict is None:
        return _approved_document_client(url)
    if verdict.document is None:
        return None
    document = verdict.document
    row = ClientRow(
        client_id=url,
        client_secret_hash=None,
        client_name=document.client_name,
        redirect_uris=tuple(document.redirect_uris),
        grant_types=tuple(DEFAULT_GRANT_TYPES),
        response_types=tuple(DEFAULT_RESPONSE_TYPES),
        token_endpoint_auth_method="none",
        # A document names no scopes it may ask for: each resource's limit it.
        scope="",
        registered_from=DOCUMENT_SOURCE,
    )
    return Client(row)


def _approved_document_client(url: str) -> Client | None:
    """The row kept when a person approved the document client ``url``."""
    found = db.session.connection().execute(_CLIENT_ROW, {"client_id": url}).first()
    if found is None or found.registered_from != DOCUMENT_SOURCE:
        return None
    if found.revoked_at is not None:
        return None
    return Client(ClientRow(**found._mapping))


def document_client_row(client: Client) -> Insert | None:
    """The statement keeping a metadata-document client's row, or ``None``.

    Grants refer to ``oauth_clients``; the row also names the client on the
    account page, refreshed from its document, and stands for the client
    where no verdict on its document is known (:func:`_document_client`).
    Registered clients are left alone (``None``).
    """
    if client.document_host is None:
        return None
    row = client.row
    values = {
        "client_name": row.client_name,
        "redirect_uris": list(row.redirect_uris),
        "grant_types": list(row.grant_types),
        "response_types": list(row.response_types),
        "token_endpoint_auth_method": row.token_endpoint_auth_method,
        "scope": row.scope,
    }
    statement = insert(OAuthClient).values(
        client_id=row.client_id,
        client_secret_hash=None,
        registered_from=DOCUMENT_SOURCE,
        created_at=utcnow(),
        **values,
    )
    return statement.on_conflict_do_update(
        index_elements=[OAuthClient.client_id],
        set_=values,
        where=OAuthClient.registered_from == DOCUMENT_SOURCE,
    )


def count_clients(registered_from: str | None = None) -> int:
    query = select(func.count()).select_from(OAuthClient)
    if registered_from is not None:
        query = query.where(OAuthClient.registered_from == registered_from)
    return db.session.scalar(query) or 0


def revoke_clients(*where: Any) -> list[str]:
    """Revoke the live clients matching ``where`` and deny their tokens.

    Their rows stay, with ``revoked_at``: the record the denial is rebuilt
    from (app/denylist_record.py), and no lookup finds them any more.
    """
    revoked = list(
        db.session.scalars(
            update(OAuthClient)
            .where(OAuthClient.revoked_at.is_(None), *where)
            .values(revoked_at=utcnow())
            .returning(OAuthClient.client_id)
        )
    )
    if revoked:
        # The denial is written before the commit (app/denylist.py); each
        # process forgets the clients now, and again after the commit.
        deny_clients(revoked)
        evict(CLIENT_CACHE, revoked)
        db.after_commit(lambda: evict(CLIENT_CACHE, revoked))
    return revoked
