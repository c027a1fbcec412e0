"""The SQLAlchemy engine, the per-request session, and where transactions live.

Transactions are opened at the edge: an endpoint, the OAuth server's
endpoints, or a CLI command wraps its work in :meth:`FlaskDatabase.transaction`.
Domain functions (consents, API keys, clients, users) only add and flush, so
whatever one request changes commits or rolls back as a whole.

One rule orders a database change and its Redis denial marker
(:mod:`app.denylist`): the change carries its own record of the denial (a
``revoked_at``, a cut-off time, a denied token's row), and the marker, a
cache of that record, is written *before* the commit, inside the
transaction. If Redis fails, the change rolls back and the person can retry;
if the commit fails, the marker only denies tokens a little early. Markers
keyed by an id (token, consent, API key) need nothing more. The one time
cutoff (a disabled person) is written again after the commit, because a
token issued while the transaction was still open carries a later time.
After the commit, the denylist checks that Redis was not rebuilt from
Postgres meanwhile (:meth:`FlaskDatabase.after_commit`).
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from flask import Flask, current_app, g
from sqlalchemy import CursorResult, Dialect, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

#: Seconds to wait for Postgres before a request gives up with a 503.
CONNECT_TIMEOUT = 5


def make_engine(database_url: str) -> Engine:
    """Create a pooled engine that survives dropped connections.

    No ``pool_pre_ping``: a ``SELECT 1`` round trip per checkout would double
    the statements of a short request. A connection the server closed (restart,
    idle timeout, ``pg_terminate_backend``) is noticed at checkout without a
    round trip (:func:`_refuse_closed`); one that dies silently later fails
    its statement, which SQLAlchemy reports as a disconnect and answers by
    emptying the pool, so the request is a 503 and the next one reconnects.
    TCP keepalives bound how long a vanished host goes unnoticed.
    """
    engine = create_engine(
        database_url,
        pool_recycle=300,
        pool_timeout=CONNECT_TIMEOUT,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
    event.listen(engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Discard a pooled connection the server has closed; the pool makes another.

    An idle connection has nothing to read: readable means the server sent
    its goodbye (or end of file) after it stopped serving us.
    """
    if getattr(dbapi_connection, "closed", False) or getattr(
        dbapi_connection, "broken", False
    ):
        raise DisconnectionError("connection closed")
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        readable = bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        readable = True
    if readable:
        raise DisconnectionError("connection closed by the server")


def is_storable(text: str) -> bool:
    """Tell whether Postgres can hold ``text``: no NUL, no lone surrogates."""
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


class Prepared:
    """A hot statement built once with parameters, and compiled once.

    Executing a construct makes SQLAlchemy derive its cache key (a walk of
    the whole statement), fetch the compiled form and process every
    parameter, on every call; for the short statements of the token and
    consent paths that costs more CPU than Postgres spends on them. This
    keeps the SQL SQLAlchemy compiles for the construct, with its bind casts,
    and runs it as driver SQL: still through the engine, so its events,
    error wrapping and disconnect handling apply as to any statement.

    Only for statements whose values need no SQLAlchemy processing either
    way (psycopg adapts them: str, int, bool, UUID, datetime, timedelta,
    lists of str): ``tests/test_db.py`` checks that no prepared statement's
    parameter or result column has a type SQLAlchemy would process.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[Dialect, tuple[str, dict[str, Any]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, dict[str, Any]]:
        """The SQL for ``dialect``, and the values it binds itself (literals
        the construct holds, such as a separator)."""
        found = self._compiled.get(dialect)
        if found is None:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
            fixed = {
                key: value
                for key, value in compiled.params.items()
                if not compiled.binds[key].required
            }
            found = self._compiled[dialect] = (compiled.string, fixed)
        return found


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

    def run(self, statement: Prepared, parameters: dict[str, Any]) -> CursorResult[Any]:
        """Execute ``statement`` on the session's connection, in its transaction."""
        connection = self.session.connection()
        sql, fixed = statement.compiled(connection.dialect)
        return connection.exec_driver_sql(sql, {**fixed, **parameters})

    @property
    def engine(self) -> Engine:
        return current_app.extensions["db"].engine

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit what the block wrote (through :attr:`session`), or roll all
        of it back if the block raises.

        Refused after :meth:`autocommit`: each statement has committed on its
        own by then, so there is nothing the block could roll back. A block
        that never touches the session costs none: many token requests are
        answered from memory (a client-credentials grant, an introspection).
        """
        if g.get("db_autocommit"):
            raise RuntimeError(
                "db.transaction() after db.autocommit() in the same request: "
                "its statements would commit one by one, not all or nothing"
            )
        try:
            yield
        except BaseException:
            session = g.get("db_session")
            if session is not None:
                session.rollback()
            g.pop("db_after_commit", None)
            raise
        session = g.get("db_session")
        if session is not None and session.in_transaction():
            session.commit()
        for callback in g.pop("db_after_commit", ()):
            callback()

    def autocommit(self) -> None:
        """Let each of this request's statements commit on its own.

        For a request whose every write is one statement: it then costs no
        ``BEGIN``/``COMMIT`` round trips. :meth:`transaction` is refused for
        the rest of the request, loudly, rather than silently committing
        statement by statement. Call before the first statement.
        """
        if self.session.in_transaction():
            raise RuntimeError("db.autocommit() after a statement already ran")
        g.db_autocommit = True
        self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

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
