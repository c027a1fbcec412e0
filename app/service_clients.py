"""Service clients: a CI job or an agent that gets tokens with no person present.

A service client uses the client-credentials grant (RFC 6749 §4.4) and
nothing else. It is made by a person on their account page or by an
operator (``flask --app app clients create-service``), never by open
registration; it is bound to one resource and a scope ceiling, and its
tokens' subject is the person who made it or the client itself, as chosen
when it was made. It authenticates with a secret (``client_secret_basic``)
or, better, with assertions signed by its keys (``private_key_jwt``).

Revoking one keeps its row with ``revoked_at``: the record from which the
denial of its tokens is rebuilt (:mod:`app.denylist_record`). Disabling a
person revokes every service client they made. Domain functions only
flush: the caller opens the transaction.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from flask_babel import gettext as _
from sqlalchemy import Table, bindparam, func, or_, select, update

from . import audit
from .config import current_settings
from .db import db, is_storable
from .models import OAuthClient, User, utcnow
from .oauth.clients import (
    generate_client_id,
    generate_client_secret,
    hash_secret,
    revoke_clients,
)
from .oauth.constants import CLIENT_CREDENTIALS, PRIVATE_KEY_JWT
from .oauth.key_sets import (
    KeySetProblem,
    check_key_set_url,
    parse_key_set_text,
)
from .oauth.resources import Resource
from .oauth.scopes import OFFLINE_ACCESS, scope_tokens
from .pagination import Page, paginate

#: ``registered_from`` of a service client: it was not registered from an
#: address, so no per-address cap counts it (and pruning never takes it).
SERVICE_SOURCE = "service-client"
#: The width of ``oauth_clients.client_id``.
MAX_CLIENT_ID_LENGTH = 128
#: The longest name kept.
MAX_NAME_LENGTH = 100
#: Live service clients one person may have.
MAX_PER_PERSON = 20
#: ``last_used_at`` is written at most this often per client.
LAST_USED_PRECISION = timedelta(minutes=1)


class ServiceClientProblem(ValueError):
    """Why a service client cannot be made as asked; one line, shown as is."""


class ServiceClientLimit(ServiceClientProblem):
    """The person has as many live service clients as one may."""


@dataclass(frozen=True)
class NewServiceClient:
    """What its maker is told, once."""

    client_id: str
    client_name: str
    resource: str
    scope: str
    subject: str
    method: str
    #: Shown once and never again; ``None`` for a client with keys.
    client_secret: str | None

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "client_id": self.client_id,
            "client_name": self.client_name,
            "token_endpoint_auth_method": self.method,
            "resource": self.resource,
            "scope": self.scope,
            "sub": self.subject,
        }
        if self.client_secret is not None:
            answer["client_secret"] = self.client_secret
        return answer


@dataclass(frozen=True)
class ServiceClientView:
    """One service client, as the account page and the CLI list it."""

    client_id: str
    client_name: str
    resource: str
    scope: str
    method: str
    acts_for_owner: bool
    owner_id: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None


def ceiling(resource: Resource, scopes: str) -> str:
    """The scope ceiling asked for, each one the resource's; empty: all of them."""
    wanted = scope_tokens(scopes)
    if not wanted:
        return " ".join(resource.scope_names)
    unknown = [s for s in wanted if s not in resource.scope_names]
    if unknown or OFFLINE_ACCESS in wanted:
        offered = ", ".join(resource.scope_names)
        raise ServiceClientProblem(
            _("The scopes must be among the server's: %(scopes)s.", scopes=offered)
        )
    return " ".join(s for s in resource.scope_names if s in wanted)


def keys_from(jwks_text: str | None, jwks_uri: str | None) -> dict[str, Any]:
    """The ``jwks`` or ``jwks_uri`` columns for keys given as text or a URL."""
    jwks_text = (jwks_text or "").strip() or None
    jwks_uri = (jwks_uri or "").strip() or None
    if jwks_text is not None and jwks_uri is not None:
        raise ServiceClientProblem(_("Give the keys inline or at a URL, not both."))
    try:
        if jwks_text is not None:
            parse_key_set_text(jwks_text)
            return {"jwks": json.loads(jwks_text), "jwks_uri": None}
        if jwks_uri is not None:
            check_key_set_url(jwks_uri)
            return {"jwks": None, "jwks_uri": jwks_uri}
    except KeySetProblem as problem:
        raise ServiceClientProblem(
            _("The keys cannot be used: %(problem)s.", problem=problem)
        ) from None
    return {"jwks": None, "jwks_uri": None}


def create(
    name: str,
    resource: Resource,
    scopes: str,
    keys: dict[str, Any],
    owner: User | None = None,
    acts_for_owner: bool = False,
    *,
    actor: audit.Actor,
) -> NewServiceClient:
    """Make a service client; ``keys`` from :func:`keys_from`. ``actor``:
    the person on the account page, or an operator's command."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ServiceClientProblem(
            _(
                "A name is 1 to %(limit)d printable characters.",
                limit=MAX_NAME_LENGTH,
            )
        )
    if acts_for_owner and owner is None:
        raise ServiceClientProblem(_("Only a person's client can act for them."))
    scope = ceiling(resource, scopes)
    if owner is not None and _live_count(_lock_enabled(owner.id)) >= MAX_PER_PERSON:
        raise ServiceClientLimit(
            _(
                "You have %(limit)d service clients; revoke one first.",
                limit=MAX_PER_PERSON,
            )
        )
    client_id = generate_client_id(current_settings().client_id_prefix)
    with_keys = keys.get("jwks") is not None or keys.get("jwks_uri") is not None
    secret = None if with_keys else generate_client_secret()
    method = PRIVATE_KEY_JWT if with_keys else "client_secret_basic"
    db.session.add(
        OAuthClient(
            client_id=client_id,
            client_secret_hash=hash_secret(secret) if secret else None,
            client_name=name,
            redirect_uris=[],
            grant_types=[CLIENT_CREDENTIALS],
            response_types=[],
            token_endpoint_auth_method=method,
            scope=scope,
            registered_from=SERVICE_SOURCE,
            jwks=keys.get("jwks"),
            jwks_uri=keys.get("jwks_uri"),
            service_resource=resource.uri,
            owner_id=owner.id if owner is not None else None,
            acts_for_owner=acts_for_owner,
            created_at=utcnow(),
        )
    )
    db.session.flush()
    subject = str(owner.id) if acts_for_owner and owner is not None else client_id
    db.after_commit(
        lambda: audit.record(
            audit.SERVICE_CLIENT_CREATED,
            actor,
            client_id=client_id,
            user_id=owner.id if owner is not None else None,
            resource=resource.uri,
            scope=scope,
        )
    )
    return NewServiceClient(
        client_id, name, resource.uri, scope, subject, method, secret
    )


def _lock_enabled(owner_id: uuid.UUID) -> uuid.UUID:
    """Lock the person's row; refuse a person disabled by now.

    The lock orders this against :func:`app.users.disable_user`, which
    updates the same row before it revokes the person's clients: made first,
    the client is revoked with the others; disabled first, the person is
    seen disabled here, however enabled they were when the caller read them
    (a page's signed-in person, the operator's ``--for``). So no live
    service client ever has a disabled person, which the client-credentials
    grant relies on (it asks the denylist, which remembers a disabled person
    only for the longest token lifetime). It also keeps two forms sent at
    once from both passing the count.
    """
    enabled = db.session.scalar(
        select(User.is_active).where(User.id == owner_id).with_for_update()
    )
    if not enabled:
        raise ServiceClientProblem(_("This account is disabled."))
    return owner_id


def _live_count(owner_id: uuid.UUID) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(OAuthClient)
            .where(
                OAuthClient.owner_id == owner_id,
                OAuthClient.service_resource.is_not(None),
                OAuthClient.revoked_at.is_(None),
            )
        )
        or 0
    )


def _live(*where: Any) -> list[Any]:
    return [
        OAuthClient.service_resource.is_not(None),
        OAuthClient.revoked_at.is_(None),
        *where,
    ]


def _view(row: OAuthClient) -> ServiceClientView:
    return ServiceClientView(
        row.client_id,
        row.client_name,
        row.service_resource or "",
        row.scope,
        row.token_endpoint_auth_method,
        row.acts_for_owner,
        row.owner_id,
        row.created_at,
        row.last_used_at,
    )


def _views(*where: Any) -> list[ServiceClientView]:
    rows = db.session.execute(
        select(OAuthClient).where(*_live(*where)).order_by(OAuthClient.created_at)
    ).scalars()
    return [_view(row) for row in rows]


def page_for(owner_id: uuid.UUID, number: int) -> Page[ServiceClientView]:
    """Page ``number`` of the live service clients ``owner_id`` made, oldest first."""
    where = _live(OAuthClient.owner_id == owner_id)
    rows = (
        select(OAuthClient)
        .where(*where)
        .order_by(OAuthClient.created_at, OAuthClient.client_id)
    )
    found = paginate(rows, where, number)
    return replace(found, items=[_view(row) for row in found.items])


def list_all() -> list[ServiceClientView]:
    return _views()


def revoke(
    client_id: str, owner_id: uuid.UUID | None = None, *, actor: audit.Actor
) -> bool:
    """Revoke a live service client (only ``owner_id``'s, when given) and end
    its tokens; ``False`` when there is no such client. ``actor``: that
    person on the account page, or an operator's command."""
    if len(client_id) > MAX_CLIENT_ID_LENGTH or not is_storable(client_id):
        return False
    where = [
        OAuthClient.client_id == client_id,
        OAuthClient.service_resource.is_not(None),
        OAuthClient.revoked_at.is_(None),
    ]
    if owner_id is not None:
        where.append(OAuthClient.owner_id == owner_id)
    revoked = revoke_clients(*where)
    if revoked:
        db.after_commit(
            lambda: audit.record(
                audit.SERVICE_CLIENT_REVOKED,
                actor,
                client_id=client_id,
                user_id=owner_id,
            )
        )
    return bool(revoked)


def note_use(client_id: str) -> None:
    """Remember that ``client_id`` obtained a token, to the minute.

    Each process skips the statement for a client it noted within the
    minute: a client asking many times a minute then costs Postgres
    nothing, and ``last_used_at`` is still never more than a minute behind.
    """
    noted = _noted_at.get(client_id)
    moment = time.monotonic()
    if noted is not None and moment - noted < LAST_USED_PRECISION.total_seconds():
        return
    db.session.connection().execute(
        _noting_use(), {"p_client": client_id, "p_now": utcnow()}
    )
    # Only once it is stored: a transaction that fails leaves the next
    # request to write it.
    db.after_commit(lambda: _noted(client_id, moment))


def _noted(client_id: str, moment: float) -> None:
    if len(_noted_at) >= MAX_NOTED:
        _noted_at.clear()
    _noted_at[client_id] = moment


#: When this process last noted each client's use (``time.monotonic``).
_noted_at: dict[str, float] = {}
#: Clients remembered at most; past it, the memory starts again.
MAX_NOTED = 10_000


@functools.cache
def _noting_use() -> Any:
    columns = OAuthClient.__table__.c
    return (
        update(cast(Table, OAuthClient.__table__))
        .where(
            columns.client_id == bindparam("p_client"),
            or_(
                columns.last_used_at.is_(None),
                columns.last_used_at
                < bindparam("p_now", type_=columns.last_used_at.type)
                - LAST_USED_PRECISION,
            ),
        )
        .values(last_used_at=bindparam("p_now"))
    )
