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
