"""The SQLAlchemy engine, the per-request session, and where transactions live.

Transactions are opened at the edge: an endpoint, the OAuth server's
endpoints, or a CLI command wraps its work in :meth:`FlaskDatabase.transaction`.
Domain functions (consents, API keys, clients, users) only add and flush, so
whatever one request changes commits or rolls back as a whole.

One rule orders a database change and its Redis denial marker
(:mod:`app.denylist`): the marker is written *before* the commit, inside the
transaction. If Redis fails, the change rolls back and the person can retry;
if the commit fails, the marker only denies tokens a little early. Markers
keyed by an id (token, consent, API key) need nothing more. The one time
cutoff (a disabled person) is written again after the commit, because a
token issued while the transaction was still open carries a later time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
    """One app's engine and the factory of its sessions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker(engine, expire_on_commit=False)


class FlaskDatabase:
    """Bind a :class:`Database` to an app and hand out one session per app context."""

    def init_app(self, app: Flask, database_url: str) -> None:
        app.extensions["db"] = Database(make_engine(database_url))
        app.teardown_appcontext(self._remove_session)

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions["db"].sessionmaker()
        return g.db_session

    @property
    def engine(self) -> Engine:
        return current_app.extensions["db"].engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commit what the block wrote, or roll all of it back if the block raises."""
        session = self.session
        try:
            yield session
        except BaseException:
            session.rollback()
            g.pop("db_after_commit", None)
            raise
        session.commit()
        for callback in g.pop("db_after_commit", ()):
            callback()

    @staticmethod
    def after_commit(callback: Callable[[], None]) -> None:
        """Run ``callback`` once the open transaction commits; never if it rolls back.

        For what must only be said once it is true, such as an audit event.
        """
        g.setdefault("db_after_commit", []).append(callback)

    @staticmethod
    def _remove_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = FlaskDatabase()
