"""service clients, client keys, trusted identity issuers

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 22:30:00.000000

A service client (a CI job, an agent with no person present) gets tokens
with the client-credentials grant: it is bound to one resource and a scope
ceiling, made by a person (``owner_id``) or an operator, and acts for its
person or for itself. Any client may authenticate with a signed assertion
(``private_key_jwt``) by one of its public keys, given inline (``jwks``) or
at a URL (``jwks_uri``). Revoking a client keeps its row (``revoked_at``),
the record its denial is rebuilt from. Trusted identity issuers sign the
identity assertions of enterprise-managed authorization. A spent assertion's
``jti`` is kept until it expires, so a replay is refused even after Redis
lost it.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("oauth_clients", sa.Column("jwks", postgresql.JSONB(), nullable=True))
    op.add_column("oauth_clients", sa.Column("jwks_uri", sa.Text(), nullable=True))
    op.add_column(
        "oauth_clients", sa.Column("service_resource", sa.Text(), nullable=True)
    )
    op.add_column("oauth_clients", sa.Column("owner_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_oauth_clients_owner_id_users"),
        "oauth_clients",
        "users",
        ["owner_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(op.f("ix_oauth_clients_owner_id"), "oauth_clients", ["owner_id"])
    op.add_column(
        "oauth_clients",
        sa.Column(
            "acts_for_owner",
            sa.Boolean(),
            server_default=sa.false(),
            nullable=False,
        ),
    )
    op.add_column(
        "oauth_clients",
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "oauth_clients",
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_oauth_clients_revoked_at",
        "oauth_clients",
        ["revoked_at"],
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )
    op.create_check_constraint(
        op.f("ck_oauth_clients_service_clients_have_a_resource"),
        "oauth_clients",
        "acts_for_owner = false OR (service_resource IS NOT NULL"
        " AND owner_id IS NOT NULL)",
    )
    op.create_table(
        "trusted_issuers",
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("jwks_uri", sa.Text(), nullable=False),
        sa.Column(
            "allow_public_clients",
            sa.Boolean(),
            server_default=sa.false(),
            nullable=False,
        ),
        sa.Column(
            "email_domains",
            postgresql.ARRAY(sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("issuer", name="pk_trusted_issuers"),
    )

    op.create_table(
        "spent_assertions",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_spent_assertions"),
    )
    op.create_index(
        op.f("ix_spent_assertions_expires_at"), "spent_assertions", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_table("spent_assertions")
    op.drop_table("trusted_issuers")
    op.drop_constraint(
        op.f("ck_oauth_clients_service_clients_have_a_resource"),
        "oauth_clients",
        type_="check",
    )
    op.drop_index("ix_oauth_clients_revoked_at", table_name="oauth_clients")
    op.drop_index(op.f("ix_oauth_clients_owner_id"), table_name="oauth_clients")
    op.drop_constraint(
        op.f("fk_oauth_clients_owner_id_users"), "oauth_clients", type_="foreignkey"
    )
    for column in (
        "revoked_at",
        "last_used_at",
        "acts_for_owner",
        "owner_id",
        "service_resource",
        "jwks_uri",
        "jwks",
    ):
        op.drop_column("oauth_clients", column)
