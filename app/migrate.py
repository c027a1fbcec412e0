"""Apply Alembic migrations from ``migrations/`` to a database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

#: The Alembic environment; it sits at the top of the repository.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str, builtin_resource: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not a main option: URL-encoded passwords contain '%'
    # which ConfigParser would try to interpolate.
    config.attributes["database_url"] = database_url
    # The built-in resource's URI, for rows from before resources were recorded.
    config.attributes["builtin_resource"] = builtin_resource
    return config


class DatabaseUnreachable(SystemExit):
    """Postgres failed us (down, certificate not trusted, pg_hba): say it in a line."""

    def __init__(self, exc: OperationalError) -> None:
        reason = " ".join(str(exc.orig or exc).split())
        super().__init__(f"cannot migrate the DATABASE_URL database: {reason}")


def upgrade(
    database_url: str, revision: str = "head", builtin_resource: str | None = None
) -> None:
    """Apply migrations; ``builtin_resource`` is needed only for existing rows."""
    try:
        command.upgrade(alembic_config(database_url, builtin_resource), revision)
    except OperationalError as exc:
        raise DatabaseUnreachable(exc) from None


def downgrade(database_url: str, revision: str = "-1") -> None:
    try:
        command.downgrade(alembic_config(database_url), revision)
    except OperationalError as exc:
        raise DatabaseUnreachable(exc) from None


def current_heads(database_url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
