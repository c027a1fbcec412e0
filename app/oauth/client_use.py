"""That a client is in use: ``oauth_clients.last_authorized_at``, to the day.

``flask --app app prune`` deletes a client unused for ``--unused-days`` by
this column (:mod:`app.prune`). Every grant that is real use of a client
writes it, and :func:`mark` is the one way it is written: an ``UPDATE`` that
changes nothing until a day has passed since the last write, run as a CTE of
a statement the grant runs anyway, so the hot path gains no round trip:

- a redeemed code, and a device approval taken by its poll: in the
  statement that finds the consent's holder
  (:func:`.consent_statements.holder_marking_client`);
- an identity assertion (ID-JAG): in the statement that spends its ``jti``
  (:func:`.assertions.spend_jti`), once every check of the assertion passed.

A refresh writes nothing: a chain lives only under a live consent, and a
client with a live consent is never pruned as unused. Service clients are
never pruned as unused, and keep their own record of use
(:func:`app.service_clients.note_use`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CTE, ColumnElement, Table, bindparam, or_, update

from ..models import OAuthClient


def mark(*only_if: ColumnElement[bool]) -> CTE:
    """A CTE recording that client ``p_client`` was used at ``p_used_at``,
    unless it was since ``p_day_ago`` (or ``only_if`` does not hold)."""
    return (
        update(cast(Table, OAuthClient.__table__))
        .where(
            OAuthClient.client_id == bindparam("p_client"),
            or_(
                OAuthClient.last_authorized_at.is_(None),
                OAuthClient.last_authorized_at < bindparam("p_day_ago"),
            ),
            *only_if,
        )
        .values(last_authorized_at=bindparam("p_used_at"))
        .cte("mark_client")
    )


def parameters(client_id: str, now: datetime) -> dict[str, Any]:
    """The values :func:`mark` takes, for ``client_id`` used ``now``."""
    return {
        "p_client": client_id,
        "p_used_at": now,
        "p_day_ago": now - timedelta(days=1),
    }
