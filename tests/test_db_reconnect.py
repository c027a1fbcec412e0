"""Pooled Postgres connections the server closed are replaced, without a ping."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy
from helpers import register_client

OTHERS = (
    "FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


def test_a_connection_closed_by_postgres_is_replaced_on_checkout(
    make_server: Any, engine: sqlalchemy.Engine
) -> None:
    live = make_server()
    browser = live.browser()
    register_client(browser)  # leaves a pooled connection behind

    with engine.connect() as connection:
        connection.execute(
            sqlalchemy.text(f"SELECT pg_terminate_backend(pid) {OTHERS}")
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = connection.execute(sqlalchemy.text(f"SELECT count(*) {OTHERS}"))
            if left.scalar() == 0:
                break
            time.sleep(0.05)

    # Every pooled connection is dead; the request still succeeds, first time.
    register_client(browser)
