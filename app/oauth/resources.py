"""Protected resources: what a token is for (RFC 8707, RFC 9728).

A :class:`Resource` is a value: its URI (every token's ``aud``), a name, the
scopes it understands with their descriptions, and its tokens' lifetime.
Codes, access tokens and refresh chains carry the resource they were issued
for, and every audience check compares against a Resource from here.

Today there is one, the built-in ``/mcp`` endpoint (``ISSUER + "/mcp"``),
built from the settings.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Settings, current_settings
from ..config_values import MCP_PATH
from .oauth_errors import InvalidTargetError
from .scopes import SCOPE_DESCRIPTIONS, SCOPES

#: The RFC 9728 ``resource_name`` of the built-in resource.
BUILTIN_NAME = "MCP"


@dataclass(frozen=True)
class Scope:
    """One scope a resource understands, with what it lets a client do."""

    name: str
    #: Shown on the consent page; translated when rendered.
    description: str


@dataclass(frozen=True)
class Resource:
    """A protected resource, identified by its canonical URI."""

    uri: str
    name: str
    scopes: tuple[Scope, ...]
    #: Lifetime of the access tokens issued for it, seconds.
    access_token_ttl: int

    @property
    def scope_names(self) -> tuple[str, ...]:
        return tuple(scope.name for scope in self.scopes)

    def describe(self, scope: str) -> str:
        """What ``scope`` lets a client do here; the name itself if unknown."""
        for known in self.scopes:
            if known.name == scope:
                return str(known.description)
        return scope


def builtin_resource(settings: Settings) -> Resource:
    """The ``/mcp`` endpoint of the issuer ``settings`` describe."""
    return _builtin(settings.issuer, settings.access_token_ttl)


@functools.cache
def _builtin(issuer: str, access_token_ttl: int) -> Resource:
    # Built once per issuer: it sits on every token check's path.
    scopes = tuple(Scope(name, SCOPE_DESCRIPTIONS[name]) for name in SCOPES)
    return Resource(issuer + MCP_PATH, BUILTIN_NAME, scopes, access_token_ttl)


def default_resource() -> Resource:
    """The resource of a request that names none (clients in the field omit it)."""
    return builtin_resource(current_settings())


def known_resources() -> tuple[Resource, ...]:
    """Every resource tokens may be issued for."""
    return (default_resource(),)


def find_resource(uri: str) -> Resource | None:
    """The resource whose URI is ``uri`` exactly, as codes and chains store it."""
    for resource in known_resources():
        if resource.uri == uri:
            return resource
    return None


def resolve_resource(values: Sequence[str]) -> Resource:
    """The resource a request's ``resource`` parameters name; raise if none fits.

    RFC 8707 §2: anything but a resource we serve is ``invalid_target``, at
    the authorization endpoint, at the code exchange and at a refresh alike.
    Without the parameter, the default resource.
    """
    if not values:
        return default_resource()
    found = find_resource(values[0])
    if found is None or any(value != found.uri for value in values):
        raise InvalidTargetError()
    return found
