"""registration caps count a window of recent registrations

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 03:00:00.000000

``MAX_CLIENTS_PER_ADDRESS`` and ``MAX_CLIENTS`` count the clients registered
within ``REGISTRATION_CAP_WINDOW``, not every client ever registered. Two
partial indexes hold only clients registered through ``POST /register``
(not metadata-document rows, not service clients), so each count reads the
window's index entries and nothing else: ``(registered_from, created_at)``
per address, ``created_at`` from all addresses. The first replaces the index
on ``registered_from`` alone, which nothing else reads.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: As app/models.py's ``REGISTERED_HERE``, frozen as this revision wrote it.
REGISTERED_HERE = (
    "registered_from <> 'client-id-metadata-document' AND service_resource IS NULL"
)


def upgrade() -> None:
    op.create_index(
        "ix_oauth_clients_registered_from_created_at",
        "oauth_clients",
        ["registered_from", "created_at"],
        postgresql_where=sa.text(REGISTERED_HERE),
    )
    op.create_index(
        "ix_oauth_clients_registered_created_at",
        "oauth_clients",
        ["created_at"],
        postgresql_where=sa.text(REGISTERED_HERE),
    )
    op.drop_index("ix_oauth_clients_registered_from", table_name="oauth_clients")


def downgrade() -> None:
    op.create_index(
        "ix_oauth_clients_registered_from", "oauth_clients", ["registered_from"]
    )
    op.drop_index("ix_oauth_clients_registered_created_at", table_name="oauth_clients")
    op.drop_index(
        "ix_oauth_clients_registered_from_created_at", table_name="oauth_clients"
    )
