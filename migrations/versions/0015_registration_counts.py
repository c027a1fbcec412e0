"""registrations counted per step of the cap's window, not read back from the clients

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-20 12:00:00.000000

``MAX_CLIENTS`` counted the window's registrations from
``ix_oauth_clients_registered_created_at``, stopping at the cap: up to
100,000 index entries (and, until vacuum marks them visible, as many table
blocks) for every registration of a busy day. ``registration_counts`` holds
one row per step of the window (a 24th of it), incremented by the statement
that inserts the client; the cap sums the window's rows, a couple of dozen
whatever the traffic. The index then has no reader and goes.

The last year's registrations are carried over in hourly steps, so that an
upgrade does not reopen a window that was full (for a window shorter than a
day, the hour the upgrade falls in counts coarsely until it leaves).
Instances still running the previous release while a deploy rolls out
count the total without the index (slower registrations, for those
minutes) and add nothing to the count (a flood guard that lags by those
minutes' registrations).
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: The clients registered through POST /register (app/models.py, REGISTERED_HERE).
REGISTERED_HERE = (
    "registered_from <> 'client-id-metadata-document' AND service_resource IS NULL"
)


def upgrade() -> None:
    op.create_table(
        "registration_counts",
        sa.Column("starts_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("registrations", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Kept a year past their hour: the longest window the setting allows.
    op.execute(
        "INSERT INTO registration_counts (starts_at, registrations, expires_at)"
        " SELECT date_trunc('hour', created_at), count(*),"
        "  date_trunc('hour', created_at) + interval '1 hour' + interval '366 days'"
        " FROM oauth_clients"
        f" WHERE {REGISTERED_HERE} AND created_at > now() - interval '366 days'"
        " GROUP BY 1"
    )
    op.drop_index("ix_oauth_clients_registered_created_at", table_name="oauth_clients")


def downgrade() -> None:
    op.create_index(
        "ix_oauth_clients_registered_created_at",
        "oauth_clients",
        ["created_at"],
        postgresql_where=sa.text(REGISTERED_HERE),
    )
    op.drop_table("registration_counts")
