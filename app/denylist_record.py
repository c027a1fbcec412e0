"""Postgres, the record of every denial; Redis's markers are rebuilt from it.

Redis may lose its data (a restart without it, a failover, a flush), so
nothing that was denied may live only there. Each kind of marker caches a
fact Postgres keeps for as long as a token it covers can be alive:

- ``denied:jti:<jti>``: a ``denied_tokens`` row, kept until the token's own
  expiry, then pruned a few at a time by later denials;
- ``denied:consent:<id>``: the consent's ``revoked_at``;
- ``denied:api_key:<id>``: the API key's ``revoked_at``;
- ``denied:user:<id>``: the person's ``tokens_cut_off_at``, written when the
  account was disabled; the marker holds the cut-off second;
- ``denied:client:<client_id>``: the client's ``revoked_at`` (a service
  client revoked, or its person disabled).

The *window* is how long after a denial a token it covers may still be
alive: the access-token lifetime plus a margin for clock skew.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, exists, or_, select
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.orm import Session

from .models import ApiKey, Consent, DeniedToken, OAuthClient, User

#: Expired ``denied_tokens`` rows each new denial deletes: more than one, so
#: the table holds little beyond the denials still in force.
PRUNE_BATCH = 10


def jti_key(jti: str) -> str:
    return f"denied:jti:{jti}"


def consent_key(consent_id: str) -> str:
    return f"denied:consent:{consent_id}"


def api_key_key(key_id: str) -> str:
    return f"denied:api_key:{key_id}"


def user_key(user_id: str) -> str:
    return f"denied:user:{user_id}"


def client_key(client_id: str) -> str:
    return f"denied:client:{client_id}"


@dataclass(frozen=True)
class Marker:
    """A Redis marker rebuilt from the record, with the seconds it must live."""

    key: str
    value: str
    ttl: int


def insert_expiring(table: Table, key: str) -> Insert:
    """One statement inserting a row (``key`` = ``p_key``, ``expires_at`` =
    ``p_expires``) unless its key is there, and deleting a few rows expired
    before ``p_now``: such a table holds little beyond what is in force."""
    stale = (
        select(table.c[key])
        .where(table.c.expires_at < bindparam("p_now", type_=table.c.expires_at.type))
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    pruned = delete(table).where(table.c[key].in_(stale)).cte("pruned")
    return (
        insert(table)
        .values({key: bindparam("p_key"), "expires_at": bindparam("p_expires")})
        .on_conflict_do_nothing(index_elements=[table.c[key]])
        .add_cte(pruned)
    )


@functools.cache
def _record_token() -> Insert:
    return insert_expiring(cast(Table, DeniedToken.__table__), "jti")


def record_token(session: Session, jti: str, expires_at: datetime) -> None:
    """Record one denied token until ``expires_at``; prune a few expired ones.

    One statement in the caller's transaction, so the denial commits or rolls
    back with the change that caused it.
    """
    session.connection().execute(
        _record_token(),
        {"p_key": jti, "p_expires": expires_at, "p_now": datetime.now(UTC)},
    )


def _ttl(until: datetime, now: datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


def markers(connection: Connection, window: int, now: datetime) -> list[Marker]:
    """Every marker still relevant at ``now``, as Postgres records them."""
    since = now - timedelta(seconds=window)
    span = timedelta(seconds=window)
    found = [
        Marker(jti_key(row.jti), "1", _ttl(row.expires_at, now))
        for row in connection.execute(
            select(DeniedToken.jti, DeniedToken.expires_at).where(
                DeniedToken.expires_at > now
            )
        )
    ]
    for key, model in ((consent_key, Consent), (api_key_key, ApiKey)):
        found += [
            Marker(key(str(row.id)), "1", _ttl(row.revoked_at + span, now))
            for row in connection.execute(
                select(model.id, model.revoked_at).where(model.revoked_at > since)
            )
        ]
    found += [
        Marker(client_key(row.client_id), "1", _ttl(row.revoked_at + span, now))
        for row in connection.execute(
            select(OAuthClient.client_id, OAuthClient.revoked_at).where(
                OAuthClient.revoked_at > since
            )
        )
    ]
    for row in connection.execute(
        select(User.id, User.is_active, User.tokens_cut_off_at).where(
            User.tokens_cut_off_at > since
        )
    ):
        # Someone still disabled can have been issued nothing since: cutting
        # off at ``now`` also covers a token issued while the disabling
        # transaction was still open, after the recorded time.
        cut_off = row.tokens_cut_off_at if row.is_active else now
        until = row.tokens_cut_off_at + span
        found.append(
            Marker(
                user_key(str(row.id)), str(int(cut_off.timestamp())), _ttl(until, now)
            )
        )
    return found


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def is_token_denied(session: Session, claims: Mapping[str, Any]) -> bool:
    """Ask the record itself whether a token with these claims was denied.

    For when no cache can be trusted yet: one statement.
    """
    now = datetime.now(UTC)
    issued = datetime.fromtimestamp(int(claims.get("iat", 0)), UTC)
    checks = [
        exists().where(
            DeniedToken.jti == str(claims.get("jti", "")), DeniedToken.expires_at > now
        ),
        exists().where(
            User.id == _uuid(claims.get("sub")),
            or_(User.is_active.is_(False), User.tokens_cut_off_at >= issued),
        ),
    ]
    for claim, model in (("consent_id", Consent), ("api_key_id", ApiKey)):
        if claims.get(claim):
            checks.append(
                exists().where(
                    model.id == _uuid(claims[claim]), model.revoked_at.is_not(None)
                )
            )
    if claims.get("client_id"):
        checks.append(
            exists().where(
                OAuthClient.client_id == str(claims["client_id"]),
                OAuthClient.revoked_at.is_not(None),
            )
        )
    return any(session.execute(select(*checks)).one())


def is_user_denied(session: Session, user_id: str, window: int) -> bool:
    """Ask the record whether ``user_id`` was cut off within the window."""
    since = datetime.now(UTC) - timedelta(seconds=window)
    row = session.execute(
        select(User.tokens_cut_off_at).where(User.id == _uuid(user_id))
    ).first()
    if row is None:
        return True  # no such person: nothing of theirs is good
    return row.tokens_cut_off_at is not None and row.tokens_cut_off_at > since
