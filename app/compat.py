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
- :func:`acquire_bearer_token` (Authlib): a copy of the Flask
  ``ResourceProtector.acquire_token`` steps with a lighter request wrapper
  (Authlib's rebuilds ``request.url``, an IRI round trip no bearer check
  reads), keeping the token where Authlib's ``current_token`` reads it.
  Authlib's own method (the public route) measured, over two alternating
  ``make bench`` runs each, the MCP whoami call at about 265-280 CPU µs per
  request above hello-world instead of about 215-250 (ratio 0.54-0.57
  instead of 0.58), and ``/auth/verify`` at about 160-165 instead of
  135-140 (ratio 0.66 instead of 0.69-0.71).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from importlib.metadata import version
from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.integrations.flask_oauth2.requests import FlaskJsonPayload
from authlib.integrations.flask_oauth2.signals import token_authenticated
from authlib.oauth2.rfc6749 import JsonRequest, TokenMixin
from flask import Flask, Request, g, request

#: Flask versions :func:`confined_to` was written for and tested with.
FLASK_HOOKS_VERSIONS = ((3, 0), (3, 2))
#: Authlib versions :func:`acquire_bearer_token` was copied from and tested with.
AUTHLIB_ACQUIRE_TOKEN_VERSIONS = ((1, 9), (1, 10))
#: SHA-256 of the source of the Authlib method it copies
#: (``authlib.integrations.flask_oauth2.ResourceProtector.acquire_token``).
AUTHLIB_ACQUIRE_TOKEN_SHA256 = (
    "fe1b639f0bb3529780b7c12f1786e8cc18530092583d7f9cbdf9a951c6b333a0"
)


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


class _BearerRequest(JsonRequest):
    """Authlib's Flask request wrapper (``FlaskJsonRequest``), with the URL
    seen from the issuer rather than rebuilt from the request."""

    def __init__(self, request: Request, issuer: str) -> None:  # noqa: D107
        super().__init__(request.method, issuer + request.full_path)
        # Set after: the parent's ``headers or {}`` asks werkzeug's environ
        # headers for their length, which walks the whole WSGI environ.
        self.headers = request.headers
        self.payload = FlaskJsonPayload(request)


def acquire_bearer_token(
    protector: ResourceProtector, issuer: str, scopes: Any, **kwargs: Any
) -> TokenMixin:
    """Authlib's ``ResourceProtector.acquire_token``, step for step, but for
    the request wrapper; Authlib's ``current_token`` then reads the token."""
    kwargs["scopes"] = scopes
    for claim, value in kwargs.items():
        if isinstance(value, str):
            kwargs[claim] = [value]
    bearer = _BearerRequest(request, issuer)
    token = protector.validate_request(request=bearer, **kwargs)
    token_authenticated.send(protector, token=token)
    g.authlib_server_oauth2_token = token
    return token
