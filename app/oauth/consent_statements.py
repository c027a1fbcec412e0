"""The hot consent statements, built once with parameters (:mod:`.consent`).

Building SQLAlchemy constructs costs more CPU than Postgres spends running
them. They select columns, not entities, and run on the session's
connection: the ORM's per-statement and per-row work would cost more than
the rest of the query. Those used as they are run compiled once
(:class:`app.db.Prepared`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql.dml import ReturningInsert

from ..db import Prepared, db
from ..models import Consent, User
from . import client_use


def run(statement: Any, parameters: dict[str, Any]) -> CursorResult[Any]:
    if isinstance(statement, Prepared):
        return db.run(statement, parameters)
    return db.session.connection().execute(statement, parameters)


@functools.cache
def prepared(build: Callable[[], Any]) -> Prepared:
    """The statement ``build`` makes, compiled once."""
    return Prepared(build())


@functools.cache
def person_with_consent() -> Select:
    """The enabled person ``p_user`` with their live consent to ``p_client``
    for ``p_resource``."""
    live = and_(
        Consent.user_id == User.id,
        Consent.client_id == bindparam("p_client"),
        Consent.resource == bindparam("p_resource"),
        Consent.revoked_at.is_(None),
    )
    return (
        select(
            User.id.label("person_id"),
            User.email,
            Consent.id.label("consent_id"),
            Consent.scope,
            Consent.approved_at,
        )
        .outerjoin(Consent, live)
        .where(User.id == bindparam("p_user"), User.is_active.is_(True))
    )


@functools.cache
def approval() -> ReturningInsert[Any]:
    """A new consent of the enabled person ``p_user``, or their live one's
    scope changed (widened to the union, or narrowed to ``p_scope`` when it
    holds all of it); returns its id."""
    columns = Consent.__table__.c
    person = select(
        bindparam("p_id", type_=columns.id.type),
        User.id,
        bindparam("p_client", type_=columns.client_id.type),
        bindparam("p_scope", type_=columns.scope.type),
        bindparam("p_resource", type_=columns.resource.type),
        bindparam("p_now", type_=columns.approved_at.type),
        bindparam("p_now", type_=columns.created_at.type),
    ).where(User.id == bindparam("p_user"), User.is_active.is_(True))
    # The table, not the mapped class: with parameters, an ORM insert would
    # be a bulk insert keyed by attribute.
    statement = insert(cast(Table, Consent.__table__)).from_select(
        [
            "id",
            "user_id",
            "client_id",
            "scope",
            "resource",
            "approved_at",
            "created_at",
        ],
        person,
        include_defaults=False,
    )
    return statement.on_conflict_do_update(
        index_elements=[columns.user_id, columns.client_id, columns.resource],
        index_where=columns.revoked_at.is_(None),
        set_={
            "scope": _widened_or_narrowed(columns.scope, statement.excluded.scope),
            "approved_at": bindparam("p_now"),
        },
    ).returning(columns.id)


def _widened_or_narrowed(held: Any, asked: Any) -> Any:
    """SQL: ``asked`` if ``held`` has all of it, else both, in order, once each."""
    held_list = func.string_to_array(held, " ")
    asked_list = func.string_to_array(asked, " ")
    union = text(
        "(SELECT string_agg(s, ' ' ORDER BY n) FROM (SELECT s, min(n) AS n"
        " FROM unnest(string_to_array(consents.scope || ' ' || excluded.scope, ' '))"
        " WITH ORDINALITY AS t(s, n) WHERE s <> '' GROUP BY s) AS u)"
    )
    return case((asked_list.op("<@")(held_list), asked), else_=union)


def _live_holder() -> tuple[Any, ...]:
    return (
        User.id == bindparam("p_user"),
        User.is_active.is_(True),
        Consent.id == bindparam("p_consent"),
        Consent.revoked_at.is_(None),
    )


@functools.cache
def holder_marking_client() -> Select:
    """The enabled person ``p_user`` whose consent ``p_consent`` is live, with
    the consent's scope today; the same statement records that client
    ``p_client`` has been used (:func:`.client_use.mark`), if the consent is."""
    holder = select(Consent.id).join(User, Consent.user_id == User.id)
    return (
        select(User.id, Consent.scope)
        .join(Consent, Consent.user_id == User.id)
        .where(*_live_holder())
        .add_cte(client_use.mark(exists(holder.where(*_live_holder()))))
    )
