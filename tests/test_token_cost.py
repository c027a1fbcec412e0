"""What one code exchange costs Postgres: the hot path stays short."""

from __future__ import annotations

from typing import Any

from helpers import (
    get_code,
    redeem,
    register_client,
    statements,
    wait_for_current_view,
)


def test_a_code_exchange_reads_the_client_and_the_consent_once(
    server: Any, browser: Any, user: dict[str, str]
) -> None:
    client = register_client(browser)
    # The process caches clients once its denylist view has caught up.
    get_code(browser, client, user)
    wait_for_current_view(server)
    first = get_code(browser, client, user)
    second = get_code(browser, client, user)

    with statements(server) as first_cost:
        assert redeem(browser, client, *first[:2]).status_code == 200
    with statements(server) as second_cost:
        assert redeem(browser, client, *second[:2]).status_code == 200

    # The client comes from the process's cache (read at /authorize); then
    # the person with their live consent, in the statement that also marks
    # the client as used (an UPDATE in a WITH, a no-op after the first).
    assert first_cost == ["WITH"]
    assert second_cost == ["WITH"]
