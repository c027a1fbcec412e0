"""The database helpers refuse what would silently break their promise."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from app.db import db


def test_a_transaction_after_autocommit_is_refused_loudly(app: Any) -> None:
    with app.test_request_context("/"):
        db.autocommit()
        with pytest.raises(RuntimeError, match="after db.autocommit"):
            with db.transaction():
                db.session.execute(sqlalchemy.text("SELECT 1"))


def test_autocommit_after_a_statement_is_refused_loudly(app: Any) -> None:
    with app.test_request_context("/"):
        db.session.execute(sqlalchemy.text("SELECT 1"))
        with pytest.raises(RuntimeError, match="after a statement"):
            db.autocommit()


def test_a_transaction_still_commits_without_autocommit(app: Any) -> None:
    with app.test_request_context("/"):
        with db.transaction():
            assert db.session.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1


def _prepared_statements() -> list[Any]:
    from app.oauth import consent_statements, refresh_store

    shapes = [(r, s) for r in (False, True) for s in (False, True)]
    return [
        *(refresh_store._consuming(*shape) for shape in shapes),
        refresh_store._finding_unconsumed(),
        refresh_store._inserting(),
        consent_statements.prepared(consent_statements.person_with_consent),
        consent_statements.prepared(consent_statements.approval),
        consent_statements.prepared(consent_statements.holder_marking_client),
    ]


def test_prepared_statements_need_no_processing_of_values(app: Any) -> None:
    # Prepared SQL runs as driver SQL: psycopg, not SQLAlchemy, converts the
    # values both ways. A type that SQLAlchemy would process (an Enum, a JSON
    # column, a non-native UUID) must not come into one unnoticed.
    with app.app_context():
        dialect = db.engine.dialect
        for prepared in _prepared_statements():
            compiled = prepared.statement.compile(dialect=dialect)
            for name, bind in compiled.binds.items():
                impl = bind.type.dialect_impl(dialect)
                if isinstance(impl, sqlalchemy.ARRAY):
                    # SQLAlchemy's only makes a list of the value; the
                    # callers pass lists (of str: nothing to do per item).
                    impl = impl.item_type.dialect_impl(dialect)
                assert impl.bind_processor(dialect) is None, name
            for column in prepared.statement.exported_columns:
                impl = column.type.dialect_impl(dialect)
                assert impl.result_processor(dialect, None) is None, column


def test_prepared_statements_bind_their_own_literals_and_require_the_rest(
    app: Any,
) -> None:
    from app.oauth import refresh_store

    with app.app_context():
        sql, fixed = refresh_store._consuming(False, True).compiled(db.engine.dialect)
    # The separator of string_to_array is the construct's own value...
    assert set(fixed.values()) == {" "}
    # ...and a parameter left out is an error, not a NULL.
    with app.test_request_context("/"):
        with pytest.raises(sqlalchemy.exc.SQLAlchemyError):
            with db.transaction():
                db.run(refresh_store._consuming(False, True), {"p_hash": "x"})
