"""Each instance's copy of the denylist: no round trip, yet never behind by 1 s."""

from __future__ import annotations

from typing import Any

from helpers import (
    RestartableRedis,
    authorize_params,
    authorize_path,
    backdate,
    get_code,
    pkce_pair,
    prune,
    redeem,
    register_client,
    revoke_from_account_page,
    until,
    whoami,
)

#: README, "Performance": a denial reaches every instance within this many seconds.
PROPAGATION = 1.0


def mget_calls(client: Any) -> int:
    return client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


def token_through(live: Any, user: dict[str, str]) -> tuple[Any, str]:
    """A signed-in browser on ``live`` and an access token it obtained there."""
    browser = live.browser()
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    return browser, response.json()["access_token"]


def warmed(live: Any, token: str) -> Any:
    """The instance's view, after a request started it and it caught up."""
    browser = live.browser()
    assert whoami(browser, token).status_code == 200
    view = live.app.extensions["denylist_view"]
    assert until(view.is_current, 5.0)
    return browser


def refused_within(browser: Any, token: str, seconds: float) -> bool:
    return until(lambda: whoami(browser, token).status_code == 401, seconds)


def test_a_current_view_checks_tokens_without_asking_redis(
    make_server: Any, user: dict[str, str], redis_client: Any
) -> None:
    first = make_server()
    second = make_server(ISSUER=first.issuer)
    _, token = token_through(first, user)
    browser = warmed(second, token)

    before = mget_calls(redis_client)
    for _ in range(5):
        assert whoami(browser, token).status_code == 200
    assert mget_calls(redis_client) == before


def test_a_revocation_on_one_instance_reaches_another_within_a_second(
    make_server: Any, user: dict[str, str]
) -> None:
    first = make_server()
    second = make_server(ISSUER=first.issuer)
    first_browser, token = token_through(first, user)
    second_browser = warmed(second, token)

    revoke_from_account_page(first_browser)

    assert refused_within(second_browser, token, PROPAGATION)


def test_an_instance_that_has_not_loaded_its_view_asks_redis(
    make_server: Any, user: dict[str, str]
) -> None:
    first = make_server()
    first_browser, token = token_through(first, user)
    revoke_from_account_page(first_browser)

    fresh = make_server(ISSUER=first.issuer)
    assert whoami(fresh.browser(), token).status_code == 401


def test_a_revocation_after_a_redis_restart_reaches_another_instance(
    make_server: Any, user: dict[str, str], restartable_redis: RestartableRedis
) -> None:
    first = make_server(REDIS_URL=restartable_redis.url)
    second = make_server(REDIS_URL=restartable_redis.url, ISSUER=first.issuer)
    first_browser, token = token_through(first, user)
    second_browser = warmed(second, token)
    view = second.app.extensions["denylist_view"]

    restartable_redis.stop()
    restartable_redis.start()
    revoke_from_account_page(first_browser)

    assert refused_within(second_browser, token, PROPAGATION)
    # And the view follows the new Redis again, so the check stays local.
    assert until(view.is_current, 5.0)
    assert whoami(second_browser, token).status_code == 401


def test_a_pruned_client_is_forgotten_by_every_instance_within_a_second(
    server: Any, browser: Any, user: dict[str, str], engine: Any, base_env: Any
) -> None:

    client = register_client(browser)
    browser.login(user["email"], user["password"])
    params = authorize_params(client, pkce_pair()[1])
    assert browser.get(authorize_path(params)).status_code == 200
    assert until(server.app.extensions["denylist_view"].is_current, 5.0)
    # Seen again once the view is current: this instance now remembers it.
    assert browser.get(authorize_path(params)).status_code == 200

    backdate(engine, client, 30)
    assert prune(base_env, "--older-than-days", "7").returncode == 0

    assert until(
        lambda: browser.get(authorize_path(params)).status_code == 400, PROPAGATION
    )
