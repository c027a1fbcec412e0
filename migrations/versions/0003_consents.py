"""call a person's approval a consent, and give each approval its own id

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 10:00:00.000000

The ``grants`` table becomes ``consents``, with every constraint renamed to
match. A revoked consent is kept and a later approval adds a new row, so the
one-row-per-(user, client) constraint becomes a unique index over live rows:
the row's id then names one approval, which codes and tokens carry.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RENAMED_CONSTRAINTS = (
    ("consents", "pk_grants", "pk_consents"),
    (
        "consents",
        "fk_grants_client_id_oauth_clients",
        "fk_consents_client_id_oauth_clients",
    ),
    ("consents", "fk_grants_user_id_users", "fk_consents_user_id_users"),
    ("api_keys", "fk_api_keys_consent_id_grants", "fk_api_keys_consent_id_consents"),
)


def upgrade() -> None:
    op.rename_table("grants", "consents")
    for table, old, new in RENAMED_CONSTRAINTS:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
    op.execute("ALTER INDEX ix_grants_client_id RENAME TO ix_consents_client_id")
    op.drop_constraint("uq_grants_user_id", "consents", type_="unique")
    op.create_index("ix_consents_user_id", "consents", ["user_id"])
    op.create_index(
        "uq_consents_user_id_client_id_live",
        "consents",
        ["user_id", "client_id"],
        unique=True,
        postgresql_where="revoked_at IS NULL",
    )


def downgrade() -> None:
    # One row per (user, client) again: keep the live or newest consent of each.
    op.execute(
        """
        DELETE FROM consents c WHERE c.revoked_at IS NOT NULL AND EXISTS (
          SELECT 1 FROM consents d
          WHERE d.user_id = c.user_id AND d.client_id = c.client_id AND d.id <> c.id
            AND (d.revoked_at IS NULL OR (d.approved_at, d.id) > (c.approved_at, c.id))
        )
        """
    )
    op.drop_index("uq_consents_user_id_client_id_live", table_name="consents")
    op.drop_index("ix_consents_user_id", table_name="consents")
    op.create_unique_constraint(
        "uq_grants_user_id", "consents", ["user_id", "client_id"]
    )
    op.execute("ALTER INDEX ix_consents_client_id RENAME TO ix_grants_client_id")
    for table, old, new in reversed(RENAMED_CONSTRAINTS):
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {new} TO {old}")
    op.rename_table("consents", "grants")
