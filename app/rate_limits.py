"""Rate limits counted in Redis, so every instance shares them.

Views are marked with :func:`limit`; :func:`init_app` wraps the marked views with
this app's own :class:`~flask_limiter.Limiter`, so two apps in one process (as in
the tests) never share a storage backend.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from limits import parse

from .compat import confined_to
from .config import current_settings
from .redis_store import redis_options

F = TypeVar("F", bound=Callable[..., Any])


def client_address() -> str:
    """The caller's address for limits; IPv6 callers are grouped by /64.

    The address is the socket peer, or what ``TRUSTED_PROXY_HOPS`` proxies
    said (werkzeug's ProxyFix). An IPv6 host usually holds a whole /64, so
    counting single addresses would let it pick a fresh one per request.
    """
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def setting(name: str) -> Callable[[], str]:
    """Read a limit such as ``"20 per hour"`` from the settings at request time."""
    return lambda: getattr(current_settings(), name)


def limit(limit_value: str | Callable[[], str], **kwargs: Any) -> Callable[[F], F]:
    """Mark a view to be rate limited; arguments are those of ``Limiter.limit``."""

    def mark(view: F) -> F:
        view.__dict__.setdefault("rate_limits", []).append((limit_value, kwargs))
        return view

    return mark


def spend(limit_value: str, *key: str) -> int | None:
    """Count one event against ``limit_value`` for ``key``, outside any view.

    For limits that only some requests spend, decided inside the view (a
    fetch that the cache spares). ``None`` while within the limit; otherwise
    the seconds until one more would be, for ``Retry-After``.
    """
    strategy = current_app.extensions["rate_limits"].limiter
    item = parse(limit_value)
    if strategy.hit(item, *key):
        return None
    reset_at = strategy.get_window_stats(item, *key).reset_time
    return max(1, math.ceil(reset_at - time.time()))


def _retry_after_only_when_limited(response: Response) -> Response:
    # The limiter stamps Retry-After on every limited answer; RFC 9110
    # §10.2.3 gives it meaning on a 3xx too (wait before following), so it
    # stays only where it is true: the 429 (RFC 6585 §4). X-RateLimit-* stay.
    # ``in`` first: Headers.pop of a missing name builds an exception per call.
    if response.status_code != 429 and "Retry-After" in response.headers:
        del response.headers["Retry-After"]
    return response


def init_app(app: Flask, redis_url: str) -> Limiter:
    limited = {
        endpoint.rpartition(".")[0]
        for endpoint, view in app.view_functions.items()
        if getattr(view, "rate_limits", ())
    }
    # The limiter's hooks (headers after, context reset on teardown) act only
    # on limited views: they run for the blueprints that have some.
    with confined_to(app, sorted(limited)):
        # Registered before the limiter's own hook, so it runs after it.
        app.after_request(_retry_after_only_when_limited)
        limiter = Limiter(
            client_address,
            app=app,
            storage_uri=redis_url,
            storage_options=redis_options(),
            strategy="moving-window",
            headers_enabled=True,
            key_prefix="rl",
        )
        # Every limit is on a view, and a limited view checks its own limits
        # when called; the limiter's before_request hook finds no
        # application-wide limits (a few microseconds, on limited views only).
    for endpoint, view in list(app.view_functions.items()):
        wrapped: Any = view
        for limit_value, kwargs in getattr(view, "rate_limits", ()):
            wrapped = limiter.limit(limit_value, **kwargs)(wrapped)
        app.view_functions[endpoint] = wrapped
    app.extensions["rate_limits"] = limiter
    return limiter
