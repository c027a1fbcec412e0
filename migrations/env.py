"""Alembic environment: the URL comes from the app (see ``app/migrate.py``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from app.models import Base

config = context.config
database_url = config.attributes.get("database_url")
if not database_url:
    raise SystemExit("run migrations with: flask --app app db upgrade")

connectable = create_engine(database_url)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
