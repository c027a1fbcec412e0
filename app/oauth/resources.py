"""Protected resources: what a token is for (RFC 8707, RFC 9728).

A :class:`Resource` is a value: its URI (every token's ``aud``), a name, the
scopes it understands with their descriptions, and its tokens' lifetime.
Codes, access tokens, refresh chains, consents and API keys carry the
resource they were issued for, and every audience check compares against a
Resource from here.

The built-in ``/mcp`` endpoint (``ISSUER + "/mcp"``) is always registered,
built from the settings; a team's other MCP servers are rows of the
``resources`` table (``flask --app app resources``,
:mod:`app.resource_admin`). The :class:`Registry` of them all is kept in
each process (app/process_cache.py): a change announces its eviction to
every process, so a request never queries for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import g
from flask_babel import get_locale
from sqlalchemy import select

from ..config import Settings, current_settings
from ..config_uris import covers, split_resource_uri
from ..config_values import MCP_PATH
from ..db import db
from ..denylist import process_cache
from ..models import ResourceRow
from .oauth_errors import InvalidTargetError
from .scopes import OFFLINE_ACCESS, SCOPE_DESCRIPTIONS, SCOPES, scope_tokens

#: The RFC 9728 ``resource_name`` of the built-in resource.
BUILTIN_NAME = "MCP"
#: The per-process cache holding the registry, and its one key.
REGISTRY_CACHE = "resources"
REGISTRY_KEY = "registry"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """One scope a resource understands, with what it lets a client do."""

    name: str
    #: Shown on the consent page (the built-in's are translated when rendered).
    description: Any
    #: The description in Chinese, when the resource's operator gave one.
    description_zh: str | None = None


@dataclass(frozen=True)
class Resource:
    """A protected resource, identified by its canonical URI."""

    uri: str
    name: str
    scopes: tuple[Scope, ...]
    #: Lifetime of the access tokens issued for it, seconds.
    access_token_ttl: int
    builtin: bool = False

    @property
    def scope_names(self) -> tuple[str, ...]:
        return tuple(scope.name for scope in self.scopes)

    def describe(self, scope: str) -> str:
        """What ``scope`` lets a client do here, in the page's language."""
        for known in self.scopes:
            if known.name == scope:
                if known.description_zh and str(get_locale()).startswith("zh"):
                    return known.description_zh
                return str(known.description)
        return scope

    def allowed_scope(self, requested: str | None, registered: str) -> str | None:
        """The scope to grant a client that registered ``registered`` and asks
        for ``requested``; ``None`` is ``invalid_scope``.

        A client's registered scope limits it only among the scopes of a
        resource it names (RFC 7591 §2); a resource whose scopes it never
        named is open to it with all of them, since it registered before
        knowing of it. Without ``scope``, everything it may have here.
        """
        named = set(registered.split())
        limit = [s for s in self.scope_names if s in named] or list(self.scope_names)
        tokens = scope_tokens(requested)
        wanted = [s for s in tokens if s != OFFLINE_ACCESS]
        if not wanted:
            return " ".join(limit) or None
        if any(s not in limit for s in wanted):
            return None
        return " ".join(s for s in limit if s in wanted)


@dataclass(frozen=True)
class Registry:
    """Every resource tokens may be issued for; the built-in one first."""

    resources: tuple[Resource, ...]
    default: Resource | None
    #: Canonical origin -> (path, resource), longest path first.
    _by_origin: Mapping[str, tuple[tuple[str, Resource], ...]] = field(repr=False)

    def find(self, uri: str) -> Resource | None:
        """The resource whose URI is ``uri`` exactly, as tokens and rows hold it."""
        for resource in self.resources:
            if resource.uri == uri:
                return resource
        return None

    def match(self, value: str) -> Resource | None:
        """The resource a request's ``value`` names, spelled as clients do:
        the registered URI itself or a path below it."""
        try:
            origin, path = split_resource_uri(value)
        except ValueError:
            return None
        for registered_path, resource in self._by_origin.get(origin, ()):
            if covers(registered_path, path):
                return resource
        return None

    def named(self, value: str) -> Resource | None:
        """The resource ``value`` is the URI of, however spelled; no sub-path."""
        try:
            origin, path = split_resource_uri(value)
        except ValueError:
            return None
        for registered_path, resource in self._by_origin.get(origin, ()):
            if registered_path == path:
                return resource
        return None


def builtin_resource(settings: Settings) -> Resource:
    """The ``/mcp`` endpoint of the issuer ``settings`` describe."""
    return _builtin(settings.issuer, settings.access_token_ttl)


@functools.cache
def _builtin(issuer: str, access_token_ttl: int) -> Resource:
    # Built once per issuer: it sits on every token check's path.
    scopes = tuple(Scope(name, SCOPE_DESCRIPTIONS[name]) for name in SCOPES)
    return Resource(issuer + MCP_PATH, BUILTIN_NAME, scopes, access_token_ttl, True)


def mcp_resource() -> Resource:
    """The built-in ``/mcp`` endpoint of the app serving this request."""
    return builtin_resource(current_settings())


def registry() -> Registry:
    """The registry, from this process's cache when it can be trusted.

    Read once per request at most: while the cache cannot be trusted (its
    announcements may have been missed), each request reads Postgres.
    """
    found = g.get("resource_registry")
    if found is not None:
        return found
    cache = process_cache(REGISTRY_CACHE, 1)
    found = cache.get(REGISTRY_KEY) if cache is not None else None
    if found is None:
        # An eviction that arrives while we read must win over what we read.
        generation = cache.generation if cache is not None else 0
        found = load_registry(current_settings())
        if cache is not None:
            cache.put(REGISTRY_KEY, found, since=generation)
    g.resource_registry = found
    return found


def load_registry(settings: Settings) -> Registry:
    """Read the registered resources (one query)."""
    rows = db.session.execute(select(ResourceRow).order_by(ResourceRow.uri)).scalars()
    builtin = builtin_resource(settings)
    resources = (builtin, *(_from_row(row, settings) for row in rows))
    by_origin: dict[str, list[tuple[str, Resource]]] = {}
    for resource in resources:
        try:
            origin, path = split_resource_uri(resource.uri)
        except ValueError:
            continue  # an issuer of an odd spelling: its /mcp is found exactly
        by_origin.setdefault(origin, []).append((path, resource))
    ordered = {
        origin: tuple(sorted(entries, key=lambda entry: -len(entry[0])))
        for origin, entries in by_origin.items()
    }
    default: Resource | None = builtin
    if settings.default_resource is not None:
        default = next(
            (r for r in resources if r.uri == settings.default_resource), None
        )
        if default is None:
            log.error(
                "DEFAULT_RESOURCE %s is not registered", settings.default_resource
            )
    return Registry(resources, default, ordered)


def _from_row(row: ResourceRow, settings: Settings) -> Resource:
    scopes = tuple(
        Scope(str(s["name"]), s.get("description") or "", s.get("description_zh"))
        for s in row.scopes
    )
    # Never beyond ACCESS_TOKEN_TTL, which revocation markers outlive.
    ttl = min(
        row.access_token_ttl or settings.access_token_ttl, settings.access_token_ttl
    )
    return Resource(row.uri, row.name, scopes, ttl)


def default_resource() -> Resource:
    """The resource of a request that names none (clients in the field omit it)."""
    default = registry().default
    if default is None:
        raise InvalidTargetError("The default resource is not registered.")
    return default


def known_resources() -> tuple[Resource, ...]:
    """Every resource tokens may be issued for."""
    return registry().resources


def find_resource(uri: str) -> Resource | None:
    """The resource whose URI is ``uri`` exactly, as codes and chains store it."""
    builtin = builtin_resource(current_settings())
    return builtin if uri == builtin.uri else registry().find(uri)


def resolve_resource(values: Sequence[str]) -> Resource:
    """The resource a request's ``resource`` parameters name; raise if none fits.

    RFC 8707 §2: one resource per request, and anything but a resource we
    serve is ``invalid_target``, at the authorization endpoint, at the code
    exchange and at a refresh alike. Without the parameter, the default
    resource.
    """
    if not values:
        return default_resource()
    # The same value repeated is one value; two values are two, even two
    # spellings of one resource.
    if len(set(values)) > 1:
        raise InvalidTargetError("Only one 'resource' may be requested.")
    found = registry().match(values[0])
    if found is None:
        raise InvalidTargetError()
    return found


def all_scopes() -> list[str]:
    """Every resource's scopes, each once (the metadata's ``scopes_supported``)."""
    return list(dict.fromkeys(s for r in known_resources() for s in r.scope_names))
