"""What each rate limit keeps in Redis, and what its refusals say.

Most limits count with two counters per key (``sliding-window-counter``), so
a key costs the same at any count; the budgets that bound guessing keep a
moving window's list, exact (app/rate_limits.py). Time is moved on by
shortening the keys' lifetimes, as the counters read their age from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from conftest import LiveServer
from helpers import device_lookup

#: Far more than any counter's memory: Redis's own overhead per key is about
#: 60-90 bytes; a list of 300 timestamps is several kilobytes.
SMALL_KEY_BYTES = 200
ADDRESS = "203.0.113.7"


def limiter_keys(redis_client: Any) -> dict[str, str]:
    """Every rate-limit key, with its Redis type."""
    return {key: redis_client.type(key) for key in redis_client.scan_iter("LIMITS:*")}


def counters_of(redis_client: Any, endpoint: str) -> tuple[str, str]:
    """The current and previous counters' names of ``endpoint``'s limit."""
    (current,) = [
        key
        for key in redis_client.scan_iter("LIMITS:{*")
        if f"/{endpoint}/" in key and not key.endswith("/-1")
    ]
    return current, current + "/-1"


def older(redis_client: Any, seconds: float, *keys: str) -> None:
    """Move the keys ``seconds`` on in time: each lives that much less."""
    for key in keys:
        left = redis_client.pttl(key)
        if left > 0:
            redis_client.pexpire(key, max(1, left - int(seconds * 1000)))


def register(live: LiveServer) -> requests.Response:
    return live.browser().post(
        "/register", json={"redirect_uris": ["http://127.0.0.1/cb"]}
    )


def retry_after(response: requests.Response) -> int:
    assert response.status_code == 429, response.text
    return int(response.headers["Retry-After"])


def test_a_full_limit_holds_two_small_counters_not_a_list_of_its_count(
    make_server: Callable[..., LiveServer], redis_client: Any
) -> None:
    live = make_server(DEVICE_AUTHORIZATION_RATE_LIMIT="300 per hour")
    browser = live.browser()

    # Every request counts, answered or refused: here, no client at all.
    statuses = [browser.post("/device_authorization").status_code for _ in range(301)]

    assert 429 not in statuses[:300]
    assert statuses[300] == 429
    keys = limiter_keys(redis_client)
    assert keys, "the limit keeps nothing in Redis"
    assert set(keys.values()) == {"string"}, keys
    assert len(keys) <= 2  # the current window's count, and the previous one's
    current, _ = counters_of(redis_client, "token.device_authorization")
    assert redis_client.get(current) == "300"
    for key in keys:
        assert redis_client.memory_usage(key) < SMALL_KEY_BYTES, key


def test_the_guessing_budgets_are_exact_moving_windows(
    make_server: Callable[..., LiveServer],
    user: dict[str, str],
    other_user: dict[str, str],
    redis_client: Any,
) -> None:
    live = make_server(
        LOGIN_RATE_LIMIT="3 per minute",
        USER_CODE_RATE_LIMIT="2 per hour",
        TRUSTED_PROXY_HOPS="1",
    )
    guesser = live.browser()
    guesser.headers["X-Forwarded-For"] = "203.0.113.1"
    statuses = [guesser.login(user["email"], "wrong").status_code for _ in range(4)]
    person = live.browser()
    person.headers["X-Forwarded-For"] = ADDRESS
    assert person.login(other_user["email"], other_user["password"]).status_code == 302
    codes = [device_lookup(person, "BBBB-BBBB").status_code for _ in range(3)]

    assert statuses == [401, 401, 401, 429]
    assert codes == [400, 400, 429]
    keys = limiter_keys(redis_client)
    exact = {
        key: kind for key, kind in keys.items() if key.startswith("LIMITS:LIMITER/")
    }
    # Sign-in: the guesser's address and the account it guessed at, spent;
    # the person's address and account, once. Codes: both budgets, spent.
    assert set(exact.values()) == {"list"}, keys
    assert sorted(redis_client.llen(key) for key in exact) == [1, 1, 2, 2, 3, 3]


def test_retry_after_is_when_the_first_window_ends(
    make_server: Callable[..., LiveServer], redis_client: Any
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="2 per hour")
    assert [register(live).status_code for _ in range(2)] == [201, 201]

    refused = register(live)
    wait = retry_after(refused)

    assert 3590 <= wait <= 3600
    assert abs(int(refused.headers["X-RateLimit-Reset"]) - (time.time() + wait)) <= 2
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Just before the window ends, still refused; just after, one more.
    keys = counters_of(redis_client, "register.register")
    older(redis_client, wait - 3, *keys)
    assert register(live).status_code == 429
    older(redis_client, 5, *keys)
    assert register(live).status_code == 201
    assert register(live).status_code == 429


def test_retry_after_is_when_the_previous_windows_weight_lets_one_more_in(
    make_server: Callable[..., LiveServer], redis_client: Any
) -> None:
    live = make_server(REGISTRATION_RATE_LIMIT="4 per hour")
    assert [register(live).status_code for _ in range(2)] == [201, 201]
    # As if the window began 1600 s ago and the one before held 4: those
    # weigh 4 × 2000/3600, 2 whole requests, until 200 s from now.
    current, previous = counters_of(redis_client, "register.register")
    redis_client.pexpire(current, (2000 + 3600) * 1000)
    redis_client.set(previous, 4, px=2000 * 1000)

    refused = register(live)
    wait = retry_after(refused)

    assert 199 <= wait <= 201
    assert abs(int(refused.headers["X-RateLimit-Reset"]) - (time.time() + wait)) <= 2
    older(redis_client, wait - 3, current, previous)
    assert register(live).status_code == 429
    older(redis_client, 5, current, previous)
    assert register(live).status_code == 201
    assert register(live).status_code == 429
