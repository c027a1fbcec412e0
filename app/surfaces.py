"""What kind of surface each blueprint is, and the rules that follow from it.

A blueprint is registered with its :class:`Surface`; CSRF protection, the
error format, CORS and caching are derived from that one declaration, so a
new blueprint cannot be left out of a list it should have been in.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, request
from flask_cors import CORS
from flask_wtf.csrf import CSRFProtect

from .compat import confined_to

#: Methods CORS and Flask answer on their own; never declared by a route.
_IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Cache-Control of answers no cache may keep.
_NEVER_STORED = "no-store"
#: Seconds a public document may be kept by whoever fetched it.
PUBLIC_MAX_AGE = 300
#: Cache-Control of public documents: they change only with a deploy (or a
#: key rotation, which waits this long: app/signing_keys.py).
PUBLIC_CACHE = f"public, max-age={PUBLIC_MAX_AGE}"

View = TypeVar("View", bound=Callable)


@dataclass(frozen=True)
class Rules:
    """How requests to one kind of surface are treated."""

    #: Forms that need a CSRF token (cookies authenticate the request).
    csrf: bool
    #: Errors as the HTML error page rather than JSON.
    html_errors: bool
    #: Open to pages from any origin (CORS, ``Access-Control-Allow-Origin: *``).
    cross_origin: bool
    #: ``Cache-Control`` of every answer that does not set its own.
    cache_control: str


class Surface(Enum):
    """The kinds of surface; each blueprint is exactly one."""

    #: Pages for people: forms with CSRF tokens, keys shown once, personal data.
    PAGE = Rules(
        csrf=True, html_errors=True, cross_origin=False, cache_control=_NEVER_STORED
    )
    #: JSON for programs, called with client credentials or bearer tokens,
    #: browser-based MCP clients included (docs/reference.md, "CORS").
    API = Rules(
        csrf=False, html_errors=False, cross_origin=True, cache_control=_NEVER_STORED
    )
    #: Public JSON documents: discovery metadata and keys.
    DOCUMENT = Rules(
        csrf=False, html_errors=False, cross_origin=True, cache_control=PUBLIC_CACHE
    )
    #: JSON for the platform and proxies (probes, forward auth), not browsers.
    SERVICE = Rules(
        csrf=False, html_errors=False, cross_origin=False, cache_control=_NEVER_STORED
    )


csrf = CSRFProtect()


def same_origin_only(view: View) -> View:
    """Keep one route of a cross-origin surface closed to other origins."""
    view.same_origin_only = True  # type: ignore[attr-defined]
    return view


def register(app: Flask, blueprint: Blueprint, surface: Surface) -> None:
    """Register ``blueprint`` as a ``surface``; its rules follow from that."""
    _hook_cache_control(blueprint, surface)
    app.register_blueprint(blueprint)
    app.extensions.setdefault("surfaces", {})[blueprint.name] = surface
    if not surface.value.csrf:
        csrf.exempt(blueprint)


def surface_of(blueprint: str | None) -> Surface | None:
    """The surface of a registered blueprint; ``None`` outside any blueprint."""
    if blueprint is None:
        return None
    return current_app.extensions["surfaces"][blueprint]


def _pattern(rule: str) -> str:
    """A full-match regex for a URL rule's path (variables match a segment)."""
    parts = re.split(r"(<[^>]+>)", rule)
    return (
        "".join(
            (".+" if part.startswith("<path:") else "[^/]+")
            if part.startswith("<")
            else re.escape(part)
            for part in parts
        )
        + "$"
    )


def cors_routes(app: Flask) -> dict[str, tuple[list[str], bool]]:
    """Path patterns open to any origin: the methods a preflight may offer, and
    whether answers carry CORS headers even to a request without ``Origin``.

    Only browsers send ``Origin`` and read CORS headers, so answers no cache
    keeps (``no-store``) carry them only when asked; an answer a shared cache
    may keep always carries them, since the cache may hand it to a browser.
    """
    surfaces = app.extensions["surfaces"]
    routes: dict[str, set[str]] = defaultdict(set)
    kept: dict[str, bool] = {}
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0] or None
        surface = surfaces.get(blueprint)
        view = app.view_functions[rule.endpoint]
        if surface is None or not surface.value.cross_origin:
            continue
        if getattr(view, "same_origin_only", False):
            continue
        pattern = _pattern(rule.rule)
        routes[pattern] |= set(rule.methods or ()) - _IMPLICIT_METHODS
        kept[pattern] = kept.get(pattern, False) or (
            surface.value.cache_control != _NEVER_STORED
        )
    return {
        pattern: (sorted(methods), kept[pattern]) for pattern, methods in routes.items()
    }


def init_app(app: Flask) -> None:
    """Apply each surface's rules; call once every blueprint is registered."""
    surfaces = app.extensions.get("surfaces", {})
    undeclared = set(app.blueprints) - set(surfaces)
    if undeclared:
        # Registered with app.register_blueprint rather than register().
        raise RuntimeError(f"blueprints without a surface: {sorted(undeclared)}")
    pages = [name for name, surface in surfaces.items() if surface.value.csrf]
    open_to_all = [
        name for name, surface in surfaces.items() if surface.value.cross_origin
    ]
    fresh = [
        name
        for name in open_to_all
        if surfaces[name].value.cache_control == _NEVER_STORED
    ]
    with confined_to(app, pages):
        csrf.init_app(app)
    # flask-cors walks every route pattern on every answer before it finds
    # that a request without Origin gets nothing (answers no cache keeps).
    with confined_to(app, open_to_all, wrap_for=_only_with_origin, wrapped=fresh):
        CORS(
            app,
            resources={
                pattern: {"origins": "*", "methods": methods, "always_send": kept}
                for pattern, (methods, kept) in cors_routes(app).items()
            },
            allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
            expose_headers=["WWW-Authenticate", "Mcp-Session-Id"],
            max_age=3600,
            send_wildcard=True,
            vary_header=False,
        )


def _only_with_origin(hook: Callable) -> Callable:
    """Run ``hook`` only for requests that carry ``Origin`` (browsers' requests)."""

    @functools.wraps(hook)
    def when_origin(*args: Any) -> Any:
        if "HTTP_ORIGIN" in request.environ:
            return hook(*args)
        return args[0] if args else None  # after_request passes the response on

    return when_origin


#: Blueprints given their surface's Cache-Control hook, and that surface. A
#: blueprint object outlives the apps it is registered with (tests build many)
#: and takes no new hooks once registered, so it gets its hook once.
_CACHE_HOOKED: weakref.WeakKeyDictionary[Blueprint, Surface] = (
    weakref.WeakKeyDictionary()
)


def _hook_cache_control(blueprint: Blueprint, surface: Surface) -> None:
    hooked = _CACHE_HOOKED.get(blueprint)
    if hooked is None:
        blueprint.after_request(_cache_control(surface.value.cache_control))
        _CACHE_HOOKED[blueprint] = surface
    elif hooked is not surface:
        raise RuntimeError(f"blueprint {blueprint.name!r} is a {hooked.name}")


def _cache_control(value: str) -> Callable[[Response], Response]:
    def cache_control(response: Response) -> Response:
        """Give an answer its surface's ``Cache-Control`` unless it set one."""
        # What ``"Cache-Control" not in headers`` and ``headers[...] = value``
        # do, without the KeyError werkzeug raises and catches inside ``in``
        # for an absent header (so on every answer that leaves it to us).
        headers = response.headers
        for name, _ in headers:
            if name.lower() == "cache-control":
                return response
        headers.add("Cache-Control", value)
        return response

    return cache_control
