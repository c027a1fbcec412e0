"""The caps on open registration (CONTRACT §2): per source address, and in total.

A registration from an address holds that address's advisory lock for the
rest of its transaction, so the per-address cap cannot be raced past; the
client is then inserted by one statement that adds nothing if either cap is
reached.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, column, func, insert, literal, or_, select, text

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


def insert_within_caps(values: dict[str, Any], settings: Settings) -> None:
    """Insert the client row ``values`` or raise :class:`ClientLimitExceededError`.

    The caller owns the transaction, which holds the address's lock until it ends.
    """
    source = values["registered_from"]
    # Registrations from one address wait for each other here. The INSERT
    # is the next statement, so its snapshot (READ COMMITTED) is taken
    # after the lock and counts every client the previous holder added.
    db.session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, hashtext(:source))"),
        {"ns": REGISTRATION_LOCK_ID, "source": source},
    )
    if db.session.scalar(_insert_statement(values, settings)) is None:
        raise _cap_error(source, settings.max_clients_per_address)


def _registered_count(*where: Any) -> Any:
    # Rows kept for metadata-document clients were not registered here.
    return (
        select(func.count())
        .select_from(OAuthClient)
        .where(OAuthClient.registered_from != DOCUMENT_SOURCE, *where)
    )


def _insert_statement(values: dict[str, Any], settings: Settings) -> Any:
    """One INSERT of the client that adds nothing if either cap is reached.

    The total is counted only when Postgres's own running row count is
    within a margin of the cap. That count lags commits by about a second,
    far less than :data:`EXACT_COUNT_MARGIN` registrations; registrations
    from different addresses are not serialised, so together they may
    overshoot the total cap by a few, which it tolerates.
    """
    cap = settings.max_clients
    estimate = text(
        "SELECT n_live_tup FROM pg_stat_user_tables"
        " WHERE relid = 'oauth_clients'::regclass"
    ).columns(column("n_live_tup", BigInteger))
    from_source = _registered_count(
        OAuthClient.registered_from == values["registered_from"]
    )
    room = select(
        *(
            literal(value, OAuthClient.__table__.c[name].type)
            for name, value in values.items()
        )
    ).where(
        from_source.scalar_subquery() < settings.max_clients_per_address,
        or_(
            estimate.scalar_subquery() < cap - max(cap // 10, EXACT_COUNT_MARGIN),
            _registered_count().scalar_subquery() < cap,
        ),
    )
    return (
        insert(OAuthClient)
        .from_select(list(values), room, include_defaults=False)
        .returning(OAuthClient.client_id)
    )


def _cap_error(source: str, per_address: int) -> ClientLimitExceededError:
    """Which cap refused the registration (the per-address one is checked first)."""
    count = _registered_count(OAuthClient.registered_from == source)
    if (db.session.scalar(count) or 0) >= per_address:
        message = "Too many clients registered from this address."
        return ClientLimitExceededError(message)
    return ClientLimitExceededError("The server holds too many clients.")
