"""Rate limits counted in Redis, so every instance shares them.

Views are marked with :func:`limit`; :func:`init_app` wraps the marked views with
this app's own :class:`~flask_limiter.Limiter`, so two apps in one process (as in
the tests) never share a storage backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .redis_store import redis_options

F = TypeVar("F", bound=Callable[..., Any])


def setting(name: str) -> Callable[[], str]:
    """Read a limit such as ``"20 per hour"`` from the settings at request time."""
    return lambda: getattr(current_app.config["SETTINGS"], name)


def limit(limit_value: str | Callable[[], str], **kwargs: Any) -> Callable[[F], F]:
    """Mark a view to be rate limited; arguments are those of ``Limiter.limit``."""

    def mark(view: F) -> F:
        view.__dict__.setdefault("rate_limits", []).append((limit_value, kwargs))
        return view

    return mark


def init_app(app: Flask, redis_url: str) -> Limiter:
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=redis_url,
        storage_options=redis_options(),
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="rl",
    )
    for endpoint, view in list(app.view_functions.items()):
        for limit_value, kwargs in getattr(view, "rate_limits", ()):
            view = limiter.limit(limit_value, **kwargs)(view)
        app.view_functions[endpoint] = view
    app.extensions["rate_limits"] = limiter
    return limiter
