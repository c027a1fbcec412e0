"""The one place that touches another library's private parts.

Each passage below is kept because the public route measurably costs on the
hot paths (``make bench``); each is pinned by ``tests/test_compat.py``, which
fails with the passage's name and the library's version on the upgrade that
breaks it. Anything else in ``app/`` uses only documented APIs.

- :func:`confined_to` (Flask): Flask keeps an app's request hooks in dicts
  keyed by blueprint (``before_request_funcs`` and friends), documented as
  internal. Extensions (Flask-WTF, flask-cors, flask-limiter) hook every
  request; moving their hooks to the blueprints they act on spares every
  other request (``/mcp``, ``/auth/verify``, ``/healthz``) their calls.
  flask-cors in particular walks every route pattern on every answer. With
  the hooks left app-wide (the public route), ``make bench`` measured the
  MCP whoami call at about 730 CPU µs per request instead of about 540, and
  its ratio to hello-world at 0.40 instead of about 0.70.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from importlib.metadata import version
from typing import Any

from flask import Flask

#: Flask versions :func:`confined_to` was written for and tested with.
FLASK_HOOKS_VERSIONS = ((3, 0), (3, 2))


def release(distribution: str) -> tuple[int, int]:
    """The installed ``distribution``'s (major, minor) version."""
    major, minor, *_ = version(distribution).split(".")
    return int(major), int(minor)


def _hook_dicts(app: Flask) -> tuple[dict[str | None, list[Any]], ...]:
    return (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
    )


@contextlib.contextmanager
def confined_to(
    app: Flask,
    blueprints: list[str],
    wrap_for: Callable[[Callable], Callable] | None = None,
    wrapped: Collection[str] = (),
) -> Iterator[None]:
    """Move the request hooks an extension adds app-wide to ``blueprints`` only.

    Flask runs a blueprint's hooks for the requests routed to it, in the same
    order as app-wide ones. The hooks of the ``wrapped`` blueprints go through
    ``wrap_for`` first.
    """
    hooks = _hook_dicts(app)
    before = [list(funcs.get(None, ())) for funcs in hooks]
    yield
    for funcs, existing in zip(hooks, before, strict=True):
        added = [hook for hook in funcs.get(None, ()) if hook not in existing]
        funcs[None] = existing
        for name in blueprints:
            hooks_here = added
            if wrap_for is not None and name in wrapped:
                hooks_here = [wrap_for(hook) for hook in added]
            funcs.setdefault(name, []).extend(hooks_here)
