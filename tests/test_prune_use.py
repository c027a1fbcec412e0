"""A client in use is never pruned as unused, whichever grant it uses.

``prune`` deletes a client unused for ``--unused-days`` by
``oauth_clients.last_authorized_at`` (app/prune.py). Each grant that is real
use writes it, at most once a day, inside a statement it runs anyway
(app/oauth/client_use.py): a redeemed code (tests/test_prune.py), a device
approval's token, an identity assertion (ID-JAG) exchanged. A refresh writes
nothing: a chain lives only under a live consent, which keeps its client.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from conftest import LiveServer
from helpers import (
    Browser,
    backdate,
    client_ids,
    obtain_tokens,
    refresh,
    statements,
)
from test_device_flow import (
    DEVICE_GRANT,
    decide,
    poll,
    register_device_client,
    signed_in_as,
    start,
)
from test_id_jag import Enterprise, enterprise, idp, service  # noqa: F401
from test_prune import pruned, run_sql

UNUSED_LONG = (
    "UPDATE oauth_clients SET last_authorized_at = now() - interval '200 days'"
    " WHERE client_id = :c"
)


def used_at(engine: sqlalchemy.Engine, client: dict[str, Any]) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT last_authorized_at FROM oauth_clients WHERE client_id = :c"
            ),
            {"c": client["client_id"]},
        ).scalar_one()


def used_today(engine: sqlalchemy.Engine) -> Any:
    with engine.connect() as connection:
        return connection.execute(sqlalchemy.text("SELECT current_date")).scalar_one()


def test_a_device_only_client_survives_prune_after_use(
    server: LiveServer,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    device = server.browser()
    client = register_device_client(device, grant_types=[DEVICE_GRANT])
    flow = start(device, client)
    assert decide(signed_in_as(server, user), flow["user_code"]).status_code == 200
    assert poll(device, client, flow["device_code"]).status_code == 200
    # Registered long ago; the person withdrew their consent since, long
    # enough ago that it goes too: only the use recorded keeps the client.
    backdate(engine, client, 400)
    run_sql(
        engine,
        "UPDATE consents SET revoked_at = now() - interval '8 days'"
        " WHERE client_id = :c",
        c=client["client_id"],
    )

    lines = pruned(base_env, "--older-than-days", "7")

    assert "pruned 1 consents" in lines["consents"]
    assert client["client_id"] in client_ids(engine)
    # Unused for longer than --unused-days, it goes.
    run_sql(engine, UNUSED_LONG, c=client["client_id"])
    lines = pruned(base_env, "--older-than-days", "7")
    assert "pruned 1 clients" in lines["clients"]
    assert client["client_id"] not in client_ids(engine)


def test_an_id_jag_only_client_survives_prune_after_use(
    enterprise: Enterprise,  # noqa: F811
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    client = enterprise.client
    backdate(engine, client, 400)
    assert used_at(engine, client) is None

    enterprise.token()

    # It has no consent, ever: without the use recorded, it would go as a
    # client registered long ago and never used.
    first_use = used_at(engine, client)
    assert first_use is not None
    lines = pruned(base_env, "--older-than-days", "7")
    assert "pruned 0 clients" in lines["clients"]
    assert client["client_id"] in client_ids(engine)
    # At most once a day: the same day's exchanges write nothing...
    enterprise.token()
    assert used_at(engine, client) == first_use
    # ...and unused for longer than --unused-days, it goes.
    run_sql(engine, UNUSED_LONG, c=client["client_id"])
    lines = pruned(base_env, "--older-than-days", "7")
    assert "pruned 1 clients" in lines["clients"]
    assert client["client_id"] not in client_ids(engine)


def test_an_id_jag_exchange_records_the_use_in_a_statement_it_ran_before(
    enterprise: Enterprise,  # noqa: F811
    engine: sqlalchemy.Engine,
) -> None:
    enterprise.token()  # the issuer's keys fetched, the client cached
    run_sql(engine, UNUSED_LONG, c=enterprise.client["client_id"])
    assertion = enterprise.assertion()

    with statements(enterprise.service) as cost:
        enterprise.token(assertion)

    # The trusted issuer; the jti spent, with the client marked used in the
    # same statement (an UPDATE in its WITH); the person by their identity,
    # whose last use is then written.
    assert cost == ["SELECT", "WITH", "SELECT", "UPDATE"]
    assert used_at(engine, enterprise.client).date() == used_today(engine)


def test_a_client_that_only_refreshes_is_kept_by_its_live_consent(
    browser: Browser,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    client, tokens = obtain_tokens(browser, user)
    backdate(engine, client, 400)
    run_sql(engine, UNUSED_LONG, c=client["client_id"])

    renewed = refresh(browser, client, tokens["refresh_token"])

    assert renewed.status_code == 200, renewed.text
    lines = pruned(base_env, "--older-than-days", "7")
    assert "pruned 0 clients" in lines["clients"]
    assert client["client_id"] in client_ids(engine)
