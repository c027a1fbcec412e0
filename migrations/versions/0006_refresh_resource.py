"""refresh chains name their resource

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:00:00.000000

A token is for one resource (RFC 8707), and a chain never changes its
audience, so each refresh token records the resource its chain's tokens are
for. Every chain from before was for the one resource there was, the
built-in ``/mcp``: ``flask --app app db upgrade`` passes its URI in
(``app/migrate.py``).
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("resource", sa.Text(), nullable=True))
    builtin = context.config.attributes.get("builtin_resource")
    if builtin:
        op.execute(
            sa.text("UPDATE refresh_tokens SET resource = :uri").bindparams(uri=builtin)
        )
    else:
        # Without the URI only an empty table can take the constraint; refuse
        # rather than guess one.
        rows = op.get_bind().scalar(sa.text("SELECT count(*) FROM refresh_tokens"))
        if rows:
            raise SystemExit("run this migration with: flask --app app db upgrade")
    op.alter_column("refresh_tokens", "resource", nullable=False)


def downgrade() -> None:
    op.drop_column("refresh_tokens", "resource")
