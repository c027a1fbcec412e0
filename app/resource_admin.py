"""Registering MCP servers as resources, for ``flask --app app resources``.

Every change is written to Postgres and then announced to every process
(the registry's cache, :mod:`app.oauth.resources`), so running instances see
it at once. Removing a resource ends everything issued for it: each
consent (with its refresh chains and the API keys its client made), the
keys made for it on account pages, and so every token for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from . import audit
from .api_keys import revoke_all
from .config import current_settings
from .config_uris import canonical_resource_uri, split_resource_uri
from .db import db
from .denylist import evict
from .models import ApiKey, Consent, ResourceRow
from .oauth import consent
from .oauth.resources import (
    REGISTRY_CACHE,
    REGISTRY_KEY,
    Resource,
    builtin_resource,
    load_registry,
)
from .oauth.scopes import OFFLINE_ACCESS

#: RFC 6749 §3.3 scope-token characters, at most 32 of them (API keys' column).
SCOPE_PATTERN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,32}")
MAX_SCOPES = 16
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 200


class ResourceError(Exception):
    """A request the registry refuses; the message is one line for the operator."""


@dataclass(frozen=True)
class Removed:
    """What removing a resource ended."""

    consents: int
    api_keys: int


def _text(value: str) -> str:
    """``value`` if Postgres can keep it: text the shell passed as bytes that
    are not UTF-8 arrives with surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ResourceError("the text is not UTF-8") from None
    if "\x00" in value:
        raise ResourceError("the text contains a NUL character")
    return value


def canonical(uri: str) -> str:
    try:
        return canonical_resource_uri(uri)
    except ValueError as exc:
        raise ResourceError(f"{uri}: {exc}") from None


def parse_scopes(scopes: str) -> list[str]:
    names = list(dict.fromkeys(_text(scopes).split()))
    if not names or len(names) > MAX_SCOPES:
        raise ResourceError(f"give from 1 to {MAX_SCOPES} scopes")
    for name in names:
        if not SCOPE_PATTERN.fullmatch(name) or name == OFFLINE_ACCESS:
            raise ResourceError(f"{name!r} cannot be a scope name")
    # Consents keep every scope of a resource, space-separated, in 200 characters.
    if len(" ".join(names)) > 200:
        raise ResourceError("the scope names are too long together")
    return names


def parse_descriptions(pairs: Sequence[str], scopes: list[str]) -> dict[str, str]:
    """``scope=text`` pairs, each for one of ``scopes``."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = _text(pair).partition("=")
        text = " ".join(text.split())
        if not sep or name not in scopes:
            raise ResourceError(
                f"{pair!r}: write scope=description, for a scope it has"
            )
        if not text or len(text) > MAX_DESCRIPTION_LENGTH:
            raise ResourceError(f"{name}: a description is 1 to 200 characters")
        found[name] = text
    return found


def check_name(name: str) -> str:
    name = " ".join(_text(name).split())
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ResourceError(f"a name is 1 to {MAX_NAME_LENGTH} characters")
    return name


def check_ttl(ttl: int | None) -> int | None:
    # Never longer than ACCESS_TOKEN_TTL: revocation markers live that long.
    ceiling = current_settings().access_token_ttl
    if ttl is not None and not 1 <= ttl <= ceiling:
        raise ResourceError(f"a token lifetime is 1 to {ceiling} seconds")
    return ttl


def scope_entries(
    names: list[str], english: dict[str, str], chinese: dict[str, str]
) -> list[dict[str, str | None]]:
    return [
        {"name": n, "description": english.get(n, n), "description_zh": chinese.get(n)}
        for n in names
    ]


def find_row(uri: str) -> ResourceRow | None:
    return db.session.get(ResourceRow, canonical(uri))


def not_builtin(uri: str) -> str:
    uri = canonical(uri)
    if uri == canonical(builtin_resource(current_settings()).uri):
        raise ResourceError(f"{uri} is the built-in resource")
    return uri


def add(row: ResourceRow) -> None:
    """Register ``row`` (its URI canonical already)."""
    not_builtin(row.uri)
    try:
        issuer_origin, _ = split_resource_uri(current_settings().issuer)
    except ValueError:
        issuer_origin = current_settings().issuer
    # Its RFC 9728 document would be the built-in one's address.
    if row.uri == issuer_origin:
        raise ResourceError(f"{row.uri} is the issuer's origin: name a path")
    if db.session.get(ResourceRow, row.uri) is not None:
        raise ResourceError(f"{row.uri} is registered already")
    db.session.add(row)
    db.session.flush()
    scopes = [s["name"] for s in row.scopes]
    db.after_commit(
        lambda: audit.record(audit.RESOURCE_ADDED, resource=row.uri, scopes=scopes)
    )


def updated(row: ResourceRow) -> None:
    """Record that ``row`` was changed (after the commit)."""
    scopes = [s["name"] for s in row.scopes]
    db.after_commit(
        lambda: audit.record(audit.RESOURCE_UPDATED, resource=row.uri, scopes=scopes)
    )


def remove(uri: str) -> Removed:
    """Remove a resource and end everything issued for it; flushes only."""
    uri = not_builtin(uri)
    settings = current_settings()
    if settings.default_resource == uri:
        raise ResourceError(f"{uri} is DEFAULT_RESOURCE; change that setting first")
    gone = db.session.scalar(
        delete(ResourceRow).where(ResourceRow.uri == uri).returning(ResourceRow.uri)
    )
    if gone is None:
        raise ResourceError(f"{uri} is not registered")
    live = db.session.execute(
        select(Consent.user_id, Consent.id).where(
            Consent.resource == uri, Consent.revoked_at.is_(None)
        )
    ).all()
    for user_id, consent_id in live:
        consent.withdraw(user_id, consent_id, audit.OPERATOR)
    # The keys made for it on account pages (a client's went with its consent).
    keys = revoke_all(ApiKey.resource == uri)
    db.after_commit(
        lambda: audit.record(
            audit.RESOURCE_REMOVED, resource=uri, consents=len(live), api_key_ids=keys
        )
    )
    return Removed(len(live), len(keys))


def announce() -> None:
    """Tell every process to read the registry again (after the commit)."""
    evict(REGISTRY_CACHE, [REGISTRY_KEY])


def listing() -> tuple[Resource, ...]:
    return load_registry(current_settings()).resources
