"""The SQLAlchemy engine and the per-request session."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

#: Seconds to wait for Postgres before a request gives up with a 503.
CONNECT_TIMEOUT = 5


def make_engine(database_url: str) -> Engine:
    """Create a pooled engine that survives dropped connections."""
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_recycle=300,
        pool_timeout=CONNECT_TIMEOUT,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def is_storable(text: str) -> bool:
    """Tell whether Postgres can hold ``text``: no NUL, no lone surrogates."""
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


class Database:
    """Bind an engine to an app and hand out one session per app context."""

    def init_app(self, app: Flask, database_url: str) -> None:
        engine = make_engine(database_url)
        app.extensions["db"] = sessionmaker(engine, expire_on_commit=False)
        app.teardown_appcontext(self._remove_session)

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions["db"]()
        return g.db_session

    @property
    def engine(self) -> Engine:
        return current_app.extensions["db"].kw["bind"]

    @staticmethod
    def _remove_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
