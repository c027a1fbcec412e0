"""The Redis client shared by the app (codes, the denylist, counters)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, current_app
from redis.commands.core import Script

#: Seconds before a Redis call gives up; a hung Redis must become a 503, not a hang.
SOCKET_TIMEOUT = 2.0


def redis_options() -> dict[str, Any]:
    """Options shared by our client and flask-limiter's storage."""
    return {
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30,
    }


def init_app(app: Flask, redis_url: str) -> None:
    app.extensions["redis"] = redis.Redis.from_url(
        redis_url, decode_responses=True, **redis_options()
    )


def get_redis() -> Any:
    """Return the current app's Redis client (a ``redis.Redis``).

    Typed ``Any``: redis-py annotates each command as returning either a value
    or an awaitable (its sync and async clients share the annotations), which
    on this synchronous client would only force casts at every call.
    """
    return current_app.extensions["redis"]


def get_script(source: str) -> Script:
    """A Lua script bound to the app's client; sent once, then run by its SHA."""
    scripts = current_app.extensions.setdefault("redis_scripts", {})
    if source not in scripts:
        scripts[source] = get_redis().register_script(source)
    return scripts[source]
