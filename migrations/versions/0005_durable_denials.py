"""durable denials: denied access tokens, and each person's cut-off

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 17:30:00.000000

Postgres becomes the record of every denial, so that Redis, which may lose
its data, only caches it. Consents and API keys already record when they were
revoked; what was only in Redis was a single denied access token (revoked at
/revoke, or its code replayed) and the time a disabled person's tokens were
cut off.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "denied_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_denied_tokens"),
    )
    op.create_index("ix_denied_tokens_expires_at", "denied_tokens", ["expires_at"])
    op.add_column(
        "users",
        sa.Column("tokens_cut_off_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Whoever is disabled already was cut off no later than now; their tokens
    # from before are covered until they could have expired.
    op.execute("UPDATE users SET tokens_cut_off_at = now() WHERE NOT is_active")


def downgrade() -> None:
    op.drop_column("users", "tokens_cut_off_at")
    op.drop_table("denied_tokens")
