"""signing keys the service manages itself

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 01:30:00.000000

When neither ``JWT_SIGNING_KEY`` nor ``JWT_SECRET`` is set, the service makes
its own signing key (RS256 unless ``SIGNING_KEY_ALGORITHM`` says otherwise)
and keeps it here, the private half sealed under a key derived from
``SECRET_KEY``. ``flask --app app keys rotate`` adds the next key, published
at once and signing from ``signs_from``; the one it replaces stays published
until ``published_until``, when the last token it signed has expired.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("signs_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
