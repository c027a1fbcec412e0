"""refresh tokens: an index by consent and rotation; a smaller code_jti index

Revision ID: 0013
Revises: 0012
Create Date: 2027-01-10 12:00:00.000000

``ix_refresh_tokens_consent_id_rotated_at`` (``consent_id, rotated_at``)
lets the account page read one row per consent shown (its newest rotation)
and ending a chain find its heads (``rotated_at IS NULL``) without reading
the rest of the chain. It leads with ``consent_id``, so it replaces
``ix_refresh_tokens_consent_id`` (deleting a consent's tokens uses it too),
which is dropped. ``ix_refresh_tokens_code_jti`` held an entry for every
token, nearly all NULL: only a chain's first token has a code's ``jti``, and
a replayed code is looked up by its value, so it becomes partial
(``WHERE code_jti IS NOT NULL``). ``ix_refresh_tokens_parent_id`` stays:
reuse detection, revocation and ``ON DELETE SET NULL`` read it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_refresh_tokens_consent_id_rotated_at",
        "refresh_tokens",
        ["consent_id", "rotated_at"],
    )
    op.drop_index("ix_refresh_tokens_consent_id", table_name="refresh_tokens")
    op.drop_index("ix_refresh_tokens_code_jti", table_name="refresh_tokens")
    op.create_index(
        "ix_refresh_tokens_code_jti",
        "refresh_tokens",
        ["code_jti"],
        postgresql_where=sa.text("code_jti IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_code_jti", table_name="refresh_tokens")
    op.create_index("ix_refresh_tokens_code_jti", "refresh_tokens", ["code_jti"])
    op.create_index("ix_refresh_tokens_consent_id", "refresh_tokens", ["consent_id"])
    op.drop_index(
        "ix_refresh_tokens_consent_id_rotated_at", table_name="refresh_tokens"
    )
