"""The caps on open registration (docs/settings.md): clients registered within
``REGISTRATION_CAP_WINDOW``, per source address and from all addresses.

A registration from an address holds that address's advisory lock for the
rest of its transaction, so the per-address cap cannot be raced past; the
client is then inserted by one statement that adds nothing if either cap is
reached.

Each cap counts only the window, through an index that holds nothing else
(migration 0012): the per-address count reads at most
``MAX_CLIENTS_PER_ADDRESS`` entries of ``(registered_from, created_at)``, the
total at most ``MAX_CLIENTS`` entries of ``created_at``; neither reads a
table row, nor more of the index than the window, however many clients the
table holds. Clients registered before the window never count: an address
whose clients were all used, or a deployment a million clients strong, is
refused only while registrations arrive faster than the caps allow.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
)

from ..config import Settings
from ..db import db
from ..models import REGISTERED_HERE, OAuthClient
from .oauth_errors import ClientLimitExceededError

#: Namespace of the advisory locks that serialise registrations from one
#: address, so the per-address cap cannot be raced past.
REGISTRATION_LOCK_ID = 7591

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
    window = timedelta(seconds=settings.registration_cap_window)
    parameters = {
        **values,
        "since": values["created_at"] - window,
        "per_address": settings.max_clients_per_address,
        "cap": settings.max_clients,
    }
    if connection.execute(_insert_statement(), parameters).scalar() is None:
        raise _cap_error(parameters)


def _registered_since(*where: Any, up_to: str) -> Any:
    """How many clients were registered here since ``:since``, counting no
    further than the bound parameter ``up_to`` (the cap: reaching it is all
    the caller asks)."""
    columns = OAuthClient.__table__.c
    window = (
        select(literal_column("1"))
        .select_from(OAuthClient.__table__)
        .where(
            text(REGISTERED_HERE),
            columns.created_at >= bindparam("since"),
            *where,
        )
        .limit(bindparam(up_to))
        .subquery()
    )
    return select(func.count()).select_from(window).scalar_subquery()


def _from_source() -> Any:
    columns = OAuthClient.__table__.c
    return _registered_since(
        columns.registered_from == bindparam("registered_from"), up_to="per_address"
    )


@functools.cache
def _insert_statement() -> Any:
    """One INSERT of the client that adds nothing if either cap is reached.

    Built once, with a parameter per column and cap. Registrations from
    different addresses are not serialised, so together they may overshoot
    the total cap by a few, which a flood guard tolerates.
    """
    columns = OAuthClient.__table__.c
    room = select(
        *(bindparam(name, type_=columns[name].type) for name in COLUMNS)
    ).where(
        and_(
            _from_source() < bindparam("per_address"),
            _registered_since(up_to="cap") < bindparam("cap"),
        )
    )
    # The table, not the mapped class: with parameters, an ORM insert would
    # be a bulk insert keyed by attribute.
    return (
        insert(cast(Table, OAuthClient.__table__))
        .from_select(list(COLUMNS), room, include_defaults=False)
        .returning(columns.client_id)
    )


@functools.cache
def _source_count() -> Any:
    return select(_from_source())


def _cap_error(parameters: dict[str, Any]) -> ClientLimitExceededError:
    """Which cap refused the registration (the per-address one is checked first)."""
    count = db.session.connection().execute(_source_count(), parameters).scalar()
    if (count or 0) >= parameters["per_address"]:
        message = "Too many clients registered from this address."
        return ClientLimitExceededError(message)
    message = "Too many clients were registered lately; try again later."
    return ClientLimitExceededError(message)
