"""an index of refresh chains' heads, for pruning

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-20 10:00:00.000000

``flask --app app prune`` deletes the tokens of a refresh chain once no token
of it that was not rotated is young enough to be used (app/prune.py). That
test looks up a chain's head by its consent and its end for every token it
considers; heads are one row a chain, so the index stays small.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_refresh_tokens_chain_heads",
        "refresh_tokens",
        ["consent_id", "chain_expires_at"],
        postgresql_where=sa.text("rotated_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_chain_heads", table_name="refresh_tokens")
