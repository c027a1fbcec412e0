"""The caps on open registration (docs/settings.md): clients registered within
``REGISTRATION_CAP_WINDOW``, per source address and from all addresses.

A registration from an address holds that address's advisory lock for the
rest of its transaction, so the per-address cap cannot be raced past; the
client is then inserted by one statement that adds nothing if either cap is
reached, and counts what it adds.

Neither cap reads more than a bounded handful, however many clients the
table or the window holds. The per-address count reads at most
``MAX_CLIENTS_PER_ADDRESS`` entries of an index of ``(registered_from,
created_at)`` that holds nothing else (migration 0012). The total is kept
as it grows, in ``registration_counts``: one row per step of the window (a
24th of it), incremented by the statement that inserts the client and so
committed or rolled back with it; the cap sums the window's couple of dozen
rows. A registration stops counting between 23/24 of the window and the
whole window after it, as its step leaves. Clients registered before the
window never count: an address whose clients were all used, or a deployment
a million clients strong, is refused only while registrations arrive faster
than the caps allow.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
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
from sqlalchemy.dialects import postgresql

from ..config import Settings
from ..db import db
from ..models import REGISTERED_HERE, OAuthClient, RegistrationCount
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

#: How long Postgres lets a registration's transaction sit idle before it
#: ends the session (rolling it back). Between its statements there is only
#: Python work of a few milliseconds; but from the count's increment to the
#: commit it holds its step's row, on which registrations from every address
#: wait, so a process that stalls there (paused, or cut off from Postgres,
#: which would wait for its COMMIT until keepalives give up) must not hold
#: them all. The stalled request then fails, its client and count rolled back.
IDLE_IN_REGISTRATION = "5s"

# The limit in the lock's statement: no round trip of its own. Local to the
# transaction, so the pooled connection goes back as it was.
_LOCK = text(
    "SELECT set_config('idle_in_transaction_session_timeout', :idle, true),"
    " pg_advisory_xact_lock(:ns, hashtext(:source))"
)


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
    connection.execute(
        _LOCK,
        {"idle": IDLE_IN_REGISTRATION, "ns": REGISTRATION_LOCK_ID, "source": source},
    )
    window = timedelta(seconds=settings.registration_cap_window)
    step_starts_at, step_expires_at = _step(values["created_at"], window)
    parameters = {
        **values,
        "since": values["created_at"] - window,
        "per_address": settings.max_clients_per_address,
        "cap": settings.max_clients,
        "step_starts_at": step_starts_at,
        "step_expires_at": step_expires_at,
    }
    if connection.execute(_insert_statement(), parameters).scalar() is None:
        raise _cap_error(parameters)


#: The total is counted in this many steps of the window.
STEPS_PER_WINDOW = 24


def _step(at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """The start of the step of the window that ``at`` falls in, and when its
    row may be pruned: once the whole window has passed after the step."""
    step = max(int(window.total_seconds()) // STEPS_PER_WINDOW, 1)
    starts_at = datetime.fromtimestamp(int(at.timestamp()) // step * step, UTC)
    return starts_at, starts_at + timedelta(seconds=step) + window


def _from_source() -> Any:
    """How many clients this address registered since ``:since``, counting
    no further than ``:per_address`` (reaching it is all the caller asks)."""
    columns = OAuthClient.__table__.c
    window = (
        select(literal_column("1"))
        .select_from(OAuthClient.__table__)
        .where(
            text(REGISTERED_HERE),
            columns.created_at >= bindparam("since"),
            columns.registered_from == bindparam("registered_from"),
        )
        # In the index's order: a scan of the table would have to sort what
        # it found, so the planner never trades the index for one that stops
        # at the limit (it would read the whole heap: the window is its end).
        .order_by(columns.created_at)
        .limit(bindparam("per_address"))
        .subquery()
    )
    return select(func.count()).select_from(window).scalar_subquery()


def _in_all() -> Any:
    """How many clients were registered from all addresses in the steps
    that started after ``:since``."""
    counts = RegistrationCount.__table__.c
    return (
        select(func.coalesce(func.sum(counts.registrations), 0))
        .where(counts.starts_at > bindparam("since"))
        .scalar_subquery()
    )


@functools.cache
def _insert_statement() -> Any:
    """One statement that inserts the client and counts it in its step, or
    does neither if either cap is reached.

    Built once, with a parameter per column and cap. Registrations from
    different addresses are not serialised, so together they may overshoot
    the total cap by a few, which a flood guard tolerates; they meet only on
    their step's row, from the increment to the commit.
    """
    columns = OAuthClient.__table__.c
    room = select(
        *(bindparam(name, type_=columns[name].type) for name in COLUMNS)
    ).where(
        and_(
            _from_source() < bindparam("per_address"),
            _in_all() < bindparam("cap"),
        )
    )
    # The table, not the mapped class: with parameters, an ORM insert would
    # be a bulk insert keyed by attribute.
    added = (
        insert(cast(Table, OAuthClient.__table__))
        .from_select(list(COLUMNS), room, include_defaults=False)
        .returning(columns.client_id)
        .cte("added")
    )
    counts = cast(Table, RegistrationCount.__table__)
    counting = postgresql.insert(counts).from_select(
        ["starts_at", "registrations", "expires_at"],
        select(
            bindparam("step_starts_at", type_=counts.c.starts_at.type),
            literal_column("1"),
            bindparam("step_expires_at", type_=counts.c.expires_at.type),
        ).select_from(added),
    )
    counted = counting.on_conflict_do_update(
        index_elements=[counts.c.starts_at],
        set_={
            "registrations": counts.c.registrations + literal_column("1"),
            # A row begun under a shorter window (before a deploy changed
            # it, or by migration 0015) is kept as long as the longer needs.
            "expires_at": func.greatest(
                counts.c.expires_at, counting.excluded.expires_at
            ),
        },
    )
    # A data-modifying WITH runs to completion though nothing reads it.
    return select(added.c.client_id).add_cte(counted.cte("counted"))


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
