"""identities: a person's accounts at identity providers; passwords optional

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 18:00:00.000000

A person may sign in through an identity provider (the pair issuer, subject)
instead of, or beside, a password, so a password hash is no longer required.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_identities_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
        sa.UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
    )
    op.create_index("ix_identities_user_id", "identities", ["user_id"])
    op.alter_column("users", "password_hash", existing_type=sa.Text(), nullable=True)
    # What a downgrade wrote for "no password" (below) is NULL again.
    op.execute("UPDATE users SET password_hash = NULL WHERE password_hash = ''")


def downgrade() -> None:
    # An empty hash is what the earlier code already treats as "no password":
    # it verifies against a dummy hash and refuses, in the same time.
    op.execute("UPDATE users SET password_hash = '' WHERE password_hash IS NULL")
    op.alter_column("users", "password_hash", existing_type=sa.Text(), nullable=False)
    op.drop_index("ix_identities_user_id", table_name="identities")
    op.drop_table("identities")
