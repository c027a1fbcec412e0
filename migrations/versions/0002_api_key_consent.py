"""bind API keys made by clients to the consent they were made under

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000

Keys that exist before this revision get no consent: nothing recorded which
ones a client made, so they are shown as made on the account page, where
their owner can review and revoke them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("consent_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_api_keys_consent_id_grants"),
        "api_keys",
        "grants",
        ["consent_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(
        op.f("ix_api_keys_consent_id"), "api_keys", ["consent_id"], unique=False
    )
    op.create_check_constraint(
        op.f("ck_api_keys_client_keys_expire"),
        "api_keys",
        "consent_id IS NULL OR expires_at IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_api_keys_client_keys_expire"), "api_keys", type_="check"
    )
    op.drop_index(op.f("ix_api_keys_consent_id"), table_name="api_keys")
    op.drop_constraint(
        op.f("fk_api_keys_consent_id_grants"), "api_keys", type_="foreignkey"
    )
    op.drop_column("api_keys", "consent_id")
