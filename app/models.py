"""The rows kept in Postgres: people and their identities, clients, consents,
keys, tokens, denials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Stable constraint names so that Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class User(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = (
        # The people cut off lately, for the denylist rebuild (few rows).
        Index(
            "ix_users_tokens_cut_off_at",
            "tokens_cut_off_at",
            postgresql_where=text("tokens_cut_off_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    #: Stored lower-cased, which makes the unique constraint case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    #: NULL for a person who signs in only through an identity provider.
    password_hash: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: When the account was disabled: its tokens issued until then are denied.
    tokens_cut_off_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def get_user_id(self) -> str:
        return str(self.id)


class Identity(Timestamped, Base):
    """A person's account at an identity provider they sign in with.

    The pair (issuer, subject) is the identity (OpenID Connect Core §5.7: only
    ``iss`` with ``sub`` is stable and unique); an email never is. One person
    may have several.
    """

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    #: The provider's issuer URL (its ``iss``), or a fixed name for a plain
    #: OAuth provider that has none.
    issuer: Mapped[str] = mapped_column(String(512))
    #: The provider's id for the person (``sub``; at most 255 ASCII characters).
    subject: Mapped[str] = mapped_column(String(255))
    #: The verified email the provider gave when the identity was linked, for
    #: the person's account page; never used to find anyone.
    email: Mapped[str | None] = mapped_column(String(320))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner: Mapped[User] = relationship(lazy="raise")


#: ``registered_from`` of the row kept for a metadata-document client, so that
#: grants can refer to it. It was not registered from any address, so no
#: registration cap counts it; its document, never the row, says what it may do.
DOCUMENT_SOURCE = "client-id-metadata-document"

#: The clients registered through ``POST /register``: not the rows kept for
#: metadata-document clients, nor service clients (made by people and
#: operators). SQL with the marker as a literal, the predicate of the index
#: the per-address registration cap counts in (app/oauth/registration_caps.py): Postgres
#: proves a query's literal predicate implies an index's, never a bound
#: parameter's under a generic plan.
REGISTERED_HERE = f"registered_from <> '{DOCUMENT_SOURCE}' AND service_resource IS NULL"


class OAuthClient(Timestamped, Base):
    __tablename__ = "oauth_clients"
    __table_args__ = (
        # The per-address registration cap's window.
        Index(
            "ix_oauth_clients_registered_from_created_at",
            "registered_from",
            "created_at",
            postgresql_where=text(REGISTERED_HERE),
        ),
        Index(
            "ix_oauth_clients_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        CheckConstraint(
            "acts_for_owner = false OR (service_resource IS NOT NULL"
            " AND owner_id IS NOT NULL)",
            name="service_clients_have_a_resource",
        ),
    )

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: SHA-256 of the secret; NULL for public (``none``) clients.
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text))
    grant_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    response_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(200))
    #: Source address of the registration, for the per-address cap.
    registered_from: Mapped[str] = mapped_column(String(64))
    #: When a code was last redeemed (to the day); NULL: never, a client
    #: that can be pruned (app/prune.py).
    last_authorized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Public keys for ``private_key_jwt`` (RFC 7591 §2): a JWK Set, or where
    #: one is published. At most one of the two.
    jwks: Mapped[dict | None] = mapped_column(JSONB)
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    #: For a service client (client credentials): the URI of the one resource
    #: its tokens are for. Its ``scope`` is its ceiling.
    service_resource: Mapped[str | None] = mapped_column(Text)
    #: The person who made the service client on their account page.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    #: Its tokens' ``sub`` is the owner's id; otherwise its own ``client_id``.
    acts_for_owner: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    #: When a service client last obtained a token (to the minute).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Revoked clients keep their row: the record their tokens' denial is
    #: rebuilt from (app/denylist_record.py).
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ResourceRow(Timestamped, Base):
    """An MCP server registered as a protected resource (RFC 8707, RFC 9728).

    The built-in ``/mcp`` is not a row: its URI follows ``ISSUER``
    (app/oauth/resources.py).
    """

    __tablename__ = "resources"

    #: Canonical: lower-case scheme and host, no default port, no trailing slash.
    uri: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: ``[{"name", "description", "description_zh"}]``, in the order shown.
    scopes: Mapped[list[dict[str, str | None]]] = mapped_column(JSONB)
    #: Seconds; NULL: ``ACCESS_TOKEN_TTL``.
    access_token_ttl: Mapped[int | None] = mapped_column(Integer)


class Consent(Timestamped, Base):
    """What a person approved for a client, for one resource.

    A consent's id names it in the codes and tokens issued under it. Approving
    again while it is live widens or narrows it in place; once revoked it stays
    revoked, and a later approval is a new consent with a new id.
    """

    __tablename__ = "consents"
    __table_args__ = (
        # At most one live consent per person, client and resource.
        Index(
            "uq_consents_user_id_client_id_resource_live",
            "user_id",
            "client_id",
            "resource",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index(
            "ix_consents_resource_live",
            "resource",
            postgresql_where=text("revoked_at IS NULL"),
        ),
        # The consents withdrawn lately, for the denylist rebuild, and the
        # long withdrawn, for prune.
        Index(
            "ix_consents_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        # A person's live consents in the account page's order (newest first):
        # a page reads its own rows, not all of the person's.
        Index(
            "ix_consents_user_id_live_approved_at",
            "user_id",
            text("approved_at DESC"),
            "id",
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(200))
    #: The URI of the resource (RFC 8707) approved for.
    resource: Mapped[str] = mapped_column(Text)
    approved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    client: Mapped[OAuthClient] = relationship(lazy="raise")


class ApiKey(Timestamped, Base):
    """A key its owner exchanges for tokens; made on the account page or by a client.

    A key a client made through the JSON API names the consent it was made
    under, so withdrawing that consent revokes it, and always expires.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_user_id_live", "user_id", "revoked_at"),
        Index(
            "ix_api_keys_resource_live",
            "resource",
            postgresql_where=text("revoked_at IS NULL"),
        ),
        # The keys revoked lately, for the denylist rebuild.
        Index(
            "ix_api_keys_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        CheckConstraint(
            "consent_id IS NULL OR expires_at IS NOT NULL", name="client_keys_expire"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    #: The consent of the client that made the key; NULL for a key made on
    #: the account page. Deleting the consent deletes its keys.
    consent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("consents.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the key, so people can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    #: The URI of the resource (RFC 8707) the key's tokens are for.
    resource: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner: Mapped[User] = relationship(lazy="raise")
    consent: Mapped[Consent | None] = relationship(lazy="raise")


class RefreshToken(Base):
    """One refresh token of a consent's chain (OAuth 2.1 §4.3.1); only its hash is kept.

    Each use rotates it: the row is marked ``rotated_at`` and a successor row
    names it as ``parent_id``. The successor also keeps its own plaintext
    sealed with a key derived from the parent token, so that during the grace
    window only a holder of the parent can be handed the same successor.

    Ending a chain (withdrawing its consent) marks only its head, the token
    not rotated out, ``revoked_at``: the consent's own ``revoked_at`` is what
    refuses every token of it, rotated out or not.
    """

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        # Chains' heads (the one token of each not rotated) by when they
        # were issued, with the chain each ends: prune reads the live ones
        # (issued within the idle lifetime) without the table (app/prune.py).
        Index(
            "ix_refresh_tokens_live_heads",
            "issued_at",
            postgresql_include=["consent_id", "chain_expires_at"],
            postgresql_where=text("rotated_at IS NULL"),
        ),
        # A consent's tokens by rotation: its newest rotation (the account
        # page's "last refreshed", one row per consent) and its heads (those
        # not rotated out, which ending a chain marks), without reading the
        # rest of its chain. It also serves deleting a consent's tokens.
        Index("ix_refresh_tokens_consent_id_rotated_at", "consent_id", "rotated_at"),
        # Only a chain's first token has a code's jti: the rest are not indexed.
        Index(
            "ix_refresh_tokens_code_jti",
            "code_jti",
            postgresql_where=text("code_jti IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    #: SHA-256 of the token; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    consent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consents.id", ondelete="CASCADE")
    )
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[uuid.UUID] = mapped_column()
    #: The scope of the chain as consented; a narrowed refresh keeps it whole.
    scope: Mapped[str] = mapped_column(String(200))
    #: The URI of the resource (RFC 8707) the chain's tokens are for.
    resource: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("refresh_tokens.id", ondelete="SET NULL"), index=True
    )
    #: On a chain's first token: the ``jti`` its code chose, so that a replayed
    #: code can find the chain it produced (RFC 6749 §4.1.2).
    code_jti: Mapped[str | None] = mapped_column(String(64))
    #: This token's plaintext, sealed for the holder of the parent token.
    sealed: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The chain's absolute end, inherited from the first token of the chain.
    chain_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrustedIssuer(Timestamped, Base):
    """An enterprise identity provider whose identity assertions (ID-JAG) an
    operator trusts (``flask --app app idps trust``)."""

    __tablename__ = "trusted_issuers"

    issuer: Mapped[str] = mapped_column(String(512), primary_key=True)
    #: Where its public keys are published; fetched under the safe-fetch rules.
    jwks_uri: Mapped[str] = mapped_column(Text)
    #: Whether public clients (``none``) may present its assertions.
    allow_public_clients: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    #: Domains whose verified emails may name an existing account when the
    #: assertion's (issuer, subject) is not yet anyone's identity; none: never.
    email_domains: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'")
    )


class SpentAssertion(Base):
    """A signed assertion's ``jti``, spent: the record that outlives Redis.

    Kept until the assertion expires, then pruned a few at a time by later
    ones (app/oauth/assertions.py).
    """

    __tablename__ = "spent_assertions"

    #: SHA-256 of the kind, the issuer and the ``jti``.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RegistrationCount(Base):
    """How many clients were registered through ``POST /register`` in one
    step of the registration cap's window (app/oauth/registration_caps.py).

    ``MAX_CLIENTS`` sums the steps within ``REGISTRATION_CAP_WINDOW``: a
    handful of rows, however many clients the window saw. Pruned once past
    ``expires_at`` (the window after the step ends).
    """

    __tablename__ = "registration_counts"

    starts_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True
    )
    registrations: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeniedToken(Base):
    """One access token ended before its expiry: revoked, or its code replayed.

    The record that survives Redis (:mod:`app.denylist`); kept until the token
    would have expired anyway, then pruned.
    """

    __tablename__ = "denied_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SigningKey(Base):
    """A signing key the service made itself (app/signing_keys.py).

    Published from its creation; signs from ``signs_from``, until a newer
    key's ``signs_from``; published until ``published_until`` (``None``:
    while it is the newest), when the last token it signed has expired.
    """

    __tablename__ = "signing_keys"

    #: Its RFC 7638 thumbprint, the ``kid`` of every token it signs.
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    #: PKCS #8 PEM under AES-256-GCM, its key derived from ``SECRET_KEY``.
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    signs_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
