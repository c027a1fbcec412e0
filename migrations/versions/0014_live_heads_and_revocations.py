"""indexes prune, the denylist rebuild and the account page read, at a million rows

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-12 12:00:00.000000

Found by ``make bench BENCH_SCALE=large`` (tools/bench_housekeeping.py),
which explains every statement at a million clients and two million
refresh tokens:

- ``prune`` asks of each refresh token whether its chain still has a live
  head (not rotated, issued within the idle lifetime). Postgres answers it
  for a batch by hashing every live head, and found them by reading the
  whole table: about 2 s a batch, an hour for a year's backlog.
  ``ix_refresh_tokens_live_heads`` holds the heads by ``issued_at``, with
  the chain they end (``consent_id``, ``chain_expires_at``): the live ones
  are an index range, read without the table, and a batch takes about
  0.1 s. It replaces ``ix_refresh_tokens_chain_heads`` (``consent_id,
  chain_expires_at``, also heads only), which nothing reads any more:
  ending a chain finds its heads by ``ix_refresh_tokens_consent_id_rotated_at``
  (``consent_id``, ``rotated_at IS NULL``). Rotation writes the same number
  of index entries as before.
- The denylist rebuild (app/denylist_record.py) reads the consents and API
  keys revoked, and the people cut off, within the access tokens' lifetime:
  each was a read of the whole table (1,000,000 consents: 130 ms). Each
  gets a partial index of its revoked (or cut-off) rows, small once
  ``prune`` removes what ended long ago.
- The account page's list of a person's consents (newest first, 20 a page)
  joined every live consent of theirs to its client and sorted them all to
  show 20: 500 client lookups, 2,000 buffers, for a person with 500.
  ``ix_consents_user_id_live_approved_at`` holds their live consents in the
  page's order, so the first page reads its 20.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: The partial indexes of revoked rows: (name, table, column).
REVOKED = (
    ("ix_consents_revoked_at", "consents", "revoked_at"),
    ("ix_api_keys_revoked_at", "api_keys", "revoked_at"),
    ("ix_users_tokens_cut_off_at", "users", "tokens_cut_off_at"),
)


def upgrade() -> None:
    op.create_index(
        "ix_refresh_tokens_live_heads",
        "refresh_tokens",
        ["issued_at"],
        postgresql_include=["consent_id", "chain_expires_at"],
        postgresql_where=sa.text("rotated_at IS NULL"),
    )
    op.drop_index("ix_refresh_tokens_chain_heads", table_name="refresh_tokens")
    for name, table, column in REVOKED:
        op.create_index(
            name, table, [column], postgresql_where=sa.text(f"{column} IS NOT NULL")
        )
    op.create_index(
        "ix_consents_user_id_live_approved_at",
        "consents",
        ["user_id", sa.text("approved_at DESC"), "id"],
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_consents_user_id_live_approved_at", table_name="consents")
    for name, table, _ in REVOKED:
        op.drop_index(name, table_name=table)
    op.create_index(
        "ix_refresh_tokens_chain_heads",
        "refresh_tokens",
        ["consent_id", "chain_expires_at"],
        postgresql_where=sa.text("rotated_at IS NULL"),
    )
    op.drop_index("ix_refresh_tokens_live_heads", table_name="refresh_tokens")
