"""resources: the MCP servers tokens are for; consents and API keys name theirs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 20:00:00.000000

A team registers each of its MCP servers as a resource (RFC 8707, RFC 9728).
Consent is per person, client and resource, so the one live consent per
person and client becomes one per person, client and resource; an API key's
tokens are for the resource it was made for. Every consent and key from
before was for the one resource there was, the built-in ``/mcp``:
``flask --app app db upgrade`` passes its URI in (``app/migrate.py``).
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _name_builtin(table: str) -> None:
    op.add_column(table, sa.Column("resource", sa.Text(), nullable=True))
    builtin = context.config.attributes.get("builtin_resource")
    if builtin:
        op.execute(
            sa.text(f"UPDATE {table} SET resource = :uri").bindparams(uri=builtin)
        )
    else:
        # Without the URI only an empty table can take the constraint.
        rows = op.get_bind().scalar(sa.text(f"SELECT count(*) FROM {table}"))
        if rows:
            raise SystemExit("run this migration with: flask --app app db upgrade")
    op.alter_column(table, "resource", nullable=False)


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", postgresql.JSONB(), nullable=False),
        sa.Column("access_token_ttl", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("uri", name="pk_resources"),
    )
    _name_builtin("consents")
    _name_builtin("api_keys")
    op.drop_index("uq_consents_user_id_client_id_live", table_name="consents")
    op.create_index(
        "uq_consents_user_id_client_id_resource_live",
        "consents",
        ["user_id", "client_id", "resource"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    # Removing a resource finds its live consents and keys.
    op.create_index(
        "ix_consents_resource_live",
        "consents",
        ["resource"],
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_index(
        "ix_api_keys_resource_live",
        "api_keys",
        ["resource"],
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_api_keys_resource_live", table_name="api_keys")
    op.drop_index("ix_consents_resource_live", table_name="consents")
    op.drop_index("uq_consents_user_id_client_id_resource_live", table_name="consents")
    # Back to one live consent per person and client: keep the newest.
    op.execute(
        "UPDATE consents SET revoked_at = now() WHERE revoked_at IS NULL AND id NOT IN"
        " (SELECT DISTINCT ON (user_id, client_id) id FROM consents"
        "  WHERE revoked_at IS NULL ORDER BY user_id, client_id, approved_at DESC)"
    )
    op.create_index(
        "uq_consents_user_id_client_id_live",
        "consents",
        ["user_id", "client_id"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_column("api_keys", "resource")
    op.drop_column("consents", "resource")
    op.drop_table("resources")
