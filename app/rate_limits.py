"""Rate limits counted in Redis, so every instance shares them.

Views are marked with :func:`limit`; :func:`init_app` wraps the marked views with
this app's own :class:`~flask_limiter.Limiter`, so two apps in one process (as in
the tests) never share a storage backend.

Each limit is counted by one of two of the ``limits`` library's strategies
(:class:`Strategies`). Most by two counters per key (``sliding-window-counter``):
a key costs the same whatever the limit's count, and the count is
approximate. The budgets that bound guessing (a password at ``/login``, a
user code at ``/device``) are marked ``exact`` and counted in a moving window:
never more than the count in any window, for a list of up to the count's
timestamps per key. The counters' approximation takes the previous window's
requests as spread evenly over it: requests bunched at its end let up to
twice the count less one through in some span of one window (at the limit's
own rate, never as a burst), and never more than one count beyond the exact
total over any span. Fine for a registration or fetch budget; a guessing
budget must mean what it says.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, WindowStats, parse
from limits.errors import StorageError
from limits.storage import Storage
from limits.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.exceptions import RedisError

from .compat import confined_to
from .config import current_settings
from .logs import reason
from .redis_store import redis_options

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)

#: Redis failing, as the limiter reports it.
UNAVAILABLE_STORES = (RedisError, StorageError)


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


def limit(
    limit_value: str | Callable[[], str], *, exact: bool = False, **kwargs: Any
) -> Callable[[F], F]:
    """Mark a view to be rate limited; arguments are those of ``Limiter.limit``.

    ``exact``: counted in a moving window (a budget that bounds guessing);
    a view's limits are all exact or none.
    """

    def mark(view: F) -> F:
        view.__dict__.setdefault("rate_limits", []).append((limit_value, exact, kwargs))
        return view

    return mark


class Strategies(RateLimiter):
    """The strategy of each limit, on one storage: the moving window for the
    limits of the views in ``exact_scopes``, two counters for the others."""

    def __init__(self, storage: Storage, exact_scopes: frozenset[str]) -> None:
        super().__init__(storage)
        self.exact = MovingWindowRateLimiter(storage)
        self.counted = SlidingWindowCounterRateLimiter(storage)
        self.exact_scopes = exact_scopes

    def of(self, identifiers: tuple[str, ...]) -> RateLimiter:
        # flask-limiter names a view's limits by its prefix, key and endpoint.
        exact = not self.exact_scopes.isdisjoint(identifiers)
        return self.exact if exact else self.counted

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self.of(identifiers).hit(item, *identifiers, cost=cost)

    def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self.of(identifiers).test(item, *identifiers, cost=cost)

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self.of(identifiers).get_window_stats(item, *identifiers)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        self.of(identifiers).clear(item, *identifiers)


class _Limiter(Limiter):
    """flask-limiter counting with :class:`Strategies`.

    ``Limiter.limiter`` is the documented strategy every count and window
    read goes through; one strategy for a whole limiter is all it offers.
    Its own in-memory fallback is not used here (Redis failing is a 503).
    ``tests/test_rate_limits.py`` checks in Redis which keys each counts.
    """

    def __init__(self, *args: Any, exact_scopes: frozenset[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.strategies = Strategies(self.storage, exact_scopes)

    @property
    def limiter(self) -> Strategies:
        return self.strategies


def spend(limit_value: str, *key: str, exact: bool = False) -> int | None:
    """Count one event against ``limit_value`` for ``key``, outside any view.

    For limits that only some requests spend, decided inside the view (a
    fetch that the cache spares). ``None`` while within the limit; otherwise
    the seconds until one more would be, for ``Retry-After``. ``exact``: as
    for :func:`limit`.
    """
    strategies: Strategies = current_app.extensions["rate_limits"].strategies
    strategy = strategies.exact if exact else strategies.counted
    item = parse(limit_value)
    if strategy.hit(item, *key):
        return None
    reset_at = strategy.get_window_stats(item, *key).reset_time
    return max(1, math.ceil(reset_at - time.time()))


def _figures(limiter: Limiter) -> dict[str, str] | None:
    """The headers of the request's most relevant limit, read from Redis now."""
    current = limiter.current_limit
    if current is None:
        return None
    return {
        "X-RateLimit-Limit": str(current.limit.amount),
        "X-RateLimit-Remaining": str(current.remaining),
        "X-RateLimit-Reset": str(current.reset_at),  # the same window, read once
    }


def _figures_read_first(view: F, limiter: Limiter) -> F:
    """Run ``view`` once the figures of its ``X-RateLimit-*`` headers are read.

    Flask-Limiter reads them from Redis after the view, when a view's
    transaction has already committed (a client registered): Redis failing
    there turned a done deed into a 500 whose answer nobody received. Read
    here, once every limit is counted and before the view runs, a failure
    is a 503 before anything changed, and nothing after the view needs
    Redis. It is the same one command, only earlier.
    """

    @functools.wraps(view)
    def read_then_run(*args: Any, **kwargs: Any) -> Any:
        g.rate_limit_figures = _figures(limiter)
        return view(*args, **kwargs)

    return read_then_run  # type: ignore[return-value]


def _headers(limiter: Limiter) -> Callable[[Response], Response]:
    def add_headers(response: Response) -> Response:
        figures = g.get("rate_limit_figures")
        if figures is None and response.status_code == 429:
            # Refused before the view: the limit just counted, which Redis
            # answered a moment ago. Should it fail now, the 429 goes
            # out without figures; nothing was done that needs reporting.
            try:
                figures = _figures(limiter)
            except UNAVAILABLE_STORES as exc:
                log.warning("rate-limit figures unavailable: %s", reason(exc))
        if figures is None:
            return response
        response.headers.update(figures)
        # RFC 9110 §10.2.3 gives Retry-After meaning on a 3xx too (wait before
        # following), so it goes only where it is true: the 429 (RFC 6585 §4),
        # the later of the view's own (:func:`spend`) and the limit's reset.
        if response.status_code == 429:
            wait = int(figures["X-RateLimit-Reset"]) - time.time()
            own = response.headers.get("Retry-After", "")
            if own.isdigit():
                wait = max(wait, int(own))
            response.headers["Retry-After"] = str(max(1, int(wait)))
        return response

    return add_headers


def _only_for(endpoints: frozenset[str]) -> Callable[[Callable], Callable]:
    """Wrap a request hook so that it runs for ``endpoints`` only."""

    def wrap(hook: Callable) -> Callable:
        @functools.wraps(hook)
        def hook_if_limited(*args: Any) -> Any:
            if request.endpoint in endpoints:
                return hook(*args)
            # An after-request hook hands the response on; the others'
            # return values are ignored unless they answer (never None).
            return args[0] if args and isinstance(args[0], Response) else None

        return hook_if_limited

    return wrap


def _exact_scopes(app: Flask) -> frozenset[str]:
    """The endpoints whose limits are exact."""
    scopes = set()
    for endpoint, view in app.view_functions.items():
        marks = {exact for _, exact, _ in getattr(view, "rate_limits", ())}
        if len(marks) > 1:
            raise ValueError(f"{endpoint}: its limits are all exact or none")
        if True in marks:
            scopes.add(endpoint)
    return frozenset(scopes)


def init_app(app: Flask, redis_url: str) -> Limiter:
    limited_views = frozenset(
        endpoint
        for endpoint, view in app.view_functions.items()
        if getattr(view, "rate_limits", ())
    )
    limited = sorted({endpoint.rpartition(".")[0] for endpoint in limited_views})
    # The limiter's hooks (its check before, context reset on teardown) act
    # only on limited views: they run for the blueprints that have some, and
    # there only for those views (``/token`` shares a blueprint with the
    # limited ``/device_authorization``).
    with confined_to(app, limited, _only_for(limited_views), limited):
        limiter = _Limiter(
            client_address,
            app=app,
            storage_uri=redis_url,
            storage_options=redis_options(),
            # Checks the storage offers it; :class:`Strategies` decides.
            strategy="sliding-window-counter",
            exact_scopes=_exact_scopes(app),
            # Written by :func:`_headers` from figures read before the view.
            headers_enabled=False,
            key_prefix="rl",
        )
        app.after_request(_headers(limiter))
        # Every limit is on a view, and a limited view checks its own limits
        # when called; the limiter's before_request hook finds no
        # application-wide limits (a few microseconds, on limited views only).
    for endpoint, view in list(app.view_functions.items()):
        if not getattr(view, "rate_limits", ()):
            continue
        # Innermost, so it runs once every limit of the view is counted.
        wrapped: Any = _figures_read_first(view, limiter)
        for limit_value, _, kwargs in getattr(view, "rate_limits", ()):
            wrapped = limiter.limit(limit_value, **kwargs)(wrapped)
        app.view_functions[endpoint] = wrapped
    app.extensions["rate_limits"] = limiter
    return limiter
