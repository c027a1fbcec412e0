"""The caps on open registration (docs/settings.md): per source address, and in all.

A registration from an address holds that address's advisory lock for the
rest of its transaction, so the per-address cap cannot be raced past; the
client is then inserted by one statement that adds nothing if either cap is
reached.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Table,
    bindparam,
    column,
    func,
    insert,
    or_,
    select,
    text,
)

from ..config import Settings
from ..db import db
from ..models import OAuthClient
from .clients import DOCUMENT_SOURCE
from .oauth_errors import ClientLimitExceededError

#: Namespace of the advisory locks that serialise registrations from one
#: address, so the per-address cap cannot be raced past.
REGISTRATION_LOCK_ID = 7591
#: Below the total cap by more than this (or a tenth of it), Postgres's own
#: running row count is trusted instead of counting every client; it lags
#: commits by about a second, far less than this many registrations.
EXACT_COUNT_MARGIN = 1000


#: Every column of a registered client's row, as :func:`insert_within_caps` takes it.
COLUMNS = (
    "client_id",
    "client_secret_hash",
    "client_name",
    "redirect_uris",
    "grant_types",
    "response_types",
    "token_endpoint_auth_method",
    "scope",
    "registered_from",
    "created_at",
    "last_authorized_at",
    "jwks",
    "jwks_uri",
)


_LOCK = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:source))")


def insert_within_caps(values: dict[str, Any], settings: Settings) -> None:
    """Insert the client row ``values`` (keyed by :data:`COLUMNS`) or raise
    :class:`ClientLimitExceededError`.

    The caller owns the transaction, which holds the address's lock until it ends.
    """
    source = values["registered_from"]
    # Registrations from one address wait for each other here. The INSERT
    # is the next statement, so its snapshot (READ COMMITTED) is taken
    # after the lock and counts every client the previous holder added.
    # Both on the session's connection, skipping the ORM's per-statement work.
    connection = db.session.connection()
    connection.execute(_LOCK, {"ns": REGISTRATION_LOCK_ID, "source": source})
    cap = settings.max_clients
    parameters = {
        **values,
        "per_address": settings.max_clients_per_address,
        "cap": cap,
        "trusted_below": cap - max(cap // 10, EXACT_COUNT_MARGIN),
    }
    if connection.execute(_insert_statement(), parameters).scalar() is None:
        raise _cap_error(source, settings.max_clients_per_address)


def _registered_count(*where: Any) -> Any:
    # Rows kept for metadata-document clients were not registered here, nor
    # were service clients (made by people and operators).
    return (
        select(func.count())
        .select_from(OAuthClient)
        .where(
            OAuthClient.registered_from != DOCUMENT_SOURCE,
            OAuthClient.service_resource.is_(None),
            *where,
        )
    )


@functools.cache
def _insert_statement() -> Any:
    """One INSERT of the client that adds nothing if either cap is reached.

    Built once, with a parameter per column and cap. The total is counted
    only when Postgres's own running row count is within a margin of the
    cap. That count lags commits by about a second, far less than
    :data:`EXACT_COUNT_MARGIN` registrations; registrations from different
    addresses are not serialised, so together they may overshoot the total
    cap by a few, which it tolerates.
    """
    columns = OAuthClient.__table__.c
    estimate = text(
        "SELECT n_live_tup FROM pg_stat_user_tables"
        " WHERE relid = 'oauth_clients'::regclass"
    ).columns(column("n_live_tup", BigInteger))
    from_source = _registered_count(
        OAuthClient.registered_from == bindparam("registered_from")
    )
    room = select(
        *(bindparam(name, type_=columns[name].type) for name in COLUMNS)
    ).where(
        from_source.scalar_subquery() < bindparam("per_address"),
        or_(
            estimate.scalar_subquery() < bindparam("trusted_below"),
            _registered_count().scalar_subquery() < bindparam("cap"),
        ),
    )
    # The table, not the mapped class: with parameters, an ORM insert would
    # be a bulk insert keyed by attribute.
    return (
        insert(cast(Table, OAuthClient.__table__))
        .from_select(list(COLUMNS), room, include_defaults=False)
        .returning(columns.client_id)
    )


def _cap_error(source: str, per_address: int) -> ClientLimitExceededError:
    """Which cap refused the registration (the per-address one is checked first)."""
    count = _registered_count(OAuthClient.registered_from == source)
    if (db.session.scalar(count) or 0) >= per_address:
        message = "Too many clients registered from this address."
        return ClientLimitExceededError(message)
    return ClientLimitExceededError("The server holds too many clients.")
