"""``flask --app app clients prune``: forget clients nobody ever authorized (§9)."""

from __future__ import annotations

import sqlalchemy
from helpers import (
    Browser,
    authorize_params,
    backdate,
    client_ids,
    get_code,
    pkce_pair,
    prune,
    redeem,
    register_client,
)


def test_prune_deletes_only_old_clients_that_never_authorized(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    stale = register_client(browser, client_name="stale")
    used = register_client(browser, client_name="used")
    fresh = register_client(browser, client_name="fresh")
    recent = register_client(browser, client_name="recent")
    code, verifier, _ = get_code(browser, used, user)
    assert redeem(browser, used, code, verifier).status_code == 200
    backdate(engine, stale, 30)
    backdate(engine, used, 30)
    backdate(engine, recent, 3)

    result = prune(base_env, "--older-than-days", "7")

    assert result.returncode == 0, result.stderr
    assert client_ids(engine) == {
        used["client_id"],
        fresh["client_id"],
        recent["client_id"],
    }


def test_prune_respects_the_age_given(
    browser: Browser, engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    month_old = register_client(browser)
    backdate(engine, month_old, 30)

    kept = prune(base_env, "--older-than-days", "40")
    assert kept.returncode == 0, kept.stderr
    assert client_ids(engine) == {month_old["client_id"]}

    pruned = prune(base_env, "--older-than-days", "29")
    assert pruned.returncode == 0, pruned.stderr
    assert client_ids(engine) == set()


def test_a_pruned_client_can_no_longer_authorize(
    browser: Browser, engine: sqlalchemy.Engine, base_env: dict[str, str]
) -> None:
    client = register_client(browser)
    backdate(engine, client, 30)

    assert prune(base_env, "--older-than-days", "7").returncode == 0

    params = authorize_params(client, pkce_pair()[1])
    response = browser.get("/authorize", params=params)
    assert response.status_code == 400
    assert "Location" not in response.headers
