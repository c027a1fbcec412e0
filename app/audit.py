"""The audit trail: who signed in, and which application they authorized, when.

Each event is one JSON line on the ``app.audit`` logger (see ``logs.py``),
kept at INFO whatever ``LOG_LEVEL`` says, with ``"message": "audit"``, a
stable ``event`` name, the request id and the event's own fields. Events are
declared here, each with the only field names it may carry: no audit line
can hold a password, a token, a code, a cookie or a key. ``docs/audit.md``
lists them for operators.

Every event also says who acted, as its ``actor``: a signed-in person (on a
page, or through a bearer token they granted), a client authenticated at an
endpoint, an operator's command, or the service itself (a replay or a reuse
it detected, a key it made). Each event declares the actors that can cause
it; :func:`record` writes the one an event allows, and an event that more
than one can cause must be told which (anything else is a bug).

People appear by user id. A sign-in attempt names its ``account`` as the
sign-in limiter counts it: the account's id when the email names one,
otherwise a keyed digest of the email (:func:`app.users.account_key`;
``flask --app app users digest EMAIL`` prints it).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from .db import db
from .logs import AUDIT_LOGGER
from .models import ApiKey, Consent
from .users import account_key, find_by_email

log = logging.getLogger(AUDIT_LOGGER)

#: What stands in for a value that has the shape of a secret.
REDACTED = "[redacted]"
#: Shapes of secrets this service hands out or keeps: API keys, JWTs (header
#: ``{"`` in base64url), argon2 hashes. A backstop behind the field allow-list.
SECRET_SHAPE = re.compile(r"lsk_|eyJ[\w-]*\.[\w-]+\.|\$argon2")


class Actor(StrEnum):
    """Who acted, as an event's ``actor``."""

    #: A person signed in on a page, or their bearer token (an API call a
    #: client makes on their behalf, with the access they granted).
    PERSON = "person"
    #: A client authenticated at an endpoint in its own name (``/revoke``).
    CLIENT = "client"
    #: An operator's ``flask --app app`` command.
    OPERATOR = "operator"
    #: The service on its own: a replay or a reuse it detected, a key it made.
    SERVICE = "service"


PERSON, CLIENT, OPERATOR, SERVICE = Actor


@dataclass(frozen=True)
class Event:
    """An audit event: its ``event`` name, the fields it may carry, and the
    actors that can cause it."""

    name: str
    fields: frozenset[str]
    actors: tuple[Actor, ...]


def _event(name: str, *fields: str, by: Actor | tuple[Actor, ...]) -> Event:
    if "actor" in fields:
        raise ValueError(f"{name}: every event has an actor; not a field of its own")
    return Event(name, frozenset(fields), by if isinstance(by, tuple) else (by,))


#: A person signed in to an enabled account, by ``method`` (``password``, or
#: a provider's kind, ``oidc`` or ``github``, with the ``provider``'s name).
SIGN_IN_SUCCEEDED = _event(
    "sign_in_succeeded",
    "user_id",
    "account",
    "address",
    "method",
    "provider",
    by=PERSON,
)
#: A sign-in refused, for a ``reason``: ``credentials`` on the password form
#: (unknown email, no or a wrong password, disabled account), or one of
#: ``app.upstream_identity.REASONS`` through a provider.
SIGN_IN_FAILED = _event(
    "sign_in_failed",
    "account",
    "address",
    "method",
    "provider",
    "reason",
    by=PERSON,
)
#: A person added a provider's identity to their account, after signing in
#: to the account by its current method.
IDENTITY_LINKED = _event("identity_linked", "user_id", "address", "provider", by=PERSON)
#: A person removed one of their identities on the account page.
IDENTITY_REMOVED = _event("identity_removed", "user_id", "identity_id", by=PERSON)
#: A person approved a client's request on the consent page.
CONSENT_GRANTED = _event(
    "consent_granted", "user_id", "client_id", "scope", "resource", by=PERSON
)
#: A person refused a client's request on the consent page.
CONSENT_DENIED = _event(
    "consent_denied", "user_id", "client_id", "scope", "resource", by=PERSON
)
#: A consent ended, and with it the client's tokens and the keys it made: the
#: person withdrew it, the client revoked a refresh token of it (RFC 7009
#: §2.1), an operator removed its resource, or the service ended it on a
#: replayed code or a reused refresh token.
CONSENT_REVOKED = _event(
    "consent_revoked",
    "user_id",
    "client_id",
    "consent_id",
    "api_key_ids",
    by=(PERSON, CLIENT, OPERATOR, SERVICE),
)
#: An API key was made, on the account page (no ``client_id``) or by a client
#: with the person's bearer token: the person's act either way.
API_KEY_CREATED = _event(
    "api_key_created", "user_id", "api_key_id", "client_id", "scopes", by=PERSON
)
#: An API key was revoked by its owner, or by the client that made it (with
#: the owner's bearer token).
API_KEY_REVOKED = _event(
    "api_key_revoked", "user_id", "api_key_id", "client_id", "scopes", by=PERSON
)
#: An authorization code was redeemed twice; the token it gave was revoked.
AUTHORIZATION_CODE_REPLAYED = _event(
    "authorization_code_replayed", "client_id", "user_id", "revoked_jti", by=SERVICE
)
#: A rotated-out refresh token came back after the grace window (RFC 9700
#: §4.14.2): the consent, its refresh chain and its tokens were ended.
REFRESH_TOKEN_REUSED = _event(
    "refresh_token_reused", "client_id", "user_id", "consent_id", by=SERVICE
)
#: An operator registered, changed or removed a resource (CLI); a removal
#: ended every consent and key for it.
RESOURCE_ADDED = _event("resource_added", "resource", "scopes", by=OPERATOR)
RESOURCE_UPDATED = _event("resource_updated", "resource", "scopes", by=OPERATOR)
RESOURCE_REMOVED = _event(
    "resource_removed", "resource", "consents", "api_key_ids", by=OPERATOR
)
#: An operator disabled an account (CLI); its tokens were cut off.
USER_DISABLED = _event("user_disabled", "user_id", "account", by=OPERATOR)
#: A service client was made, by a person on the account page or an operator.
SERVICE_CLIENT_CREATED = _event(
    "service_client_created",
    "client_id",
    "user_id",
    "resource",
    "scope",
    by=(PERSON, OPERATOR),
)
#: A service client was revoked, by its person on the account page or an operator.
SERVICE_CLIENT_REVOKED = _event(
    "service_client_revoked", "client_id", "user_id", by=(PERSON, OPERATOR)
)
#: A signed assertion presented again (RFC 7523 §3: each ``jti`` once).
ASSERTION_REPLAYED = _event("assertion_replayed", "issuer", "client_id", by=SERVICE)
IDENTITY_ISSUER_TRUSTED = _event(
    "identity_issuer_trusted",
    "issuer",
    "jwks_uri",
    "allow_public_clients",
    "email_domains",
    by=OPERATOR,
)
IDENTITY_ISSUER_DISTRUSTED = _event("identity_issuer_distrusted", "issuer", by=OPERATOR)
#: An operator published the next of the service's own signing keys.
SIGNING_KEY_ROTATED = _event("signing_key_rotated", "kid", "algorithm", by=OPERATOR)
#: The service made its first signing key (no key configured).
SIGNING_KEY_CREATED = _event("signing_key_created", "kid", "algorithm", by=SERVICE)


def record(event: Event, /, actor: Actor | None = None, **fields: Any) -> None:
    """Emit ``event`` with ``fields``, done by ``actor``: needed only when
    more than one can cause it. A field or an actor it does not declare is a
    bug."""
    unknown = fields.keys() - event.fields
    if unknown:
        raise TypeError(f"{event.name} has no field {', '.join(sorted(unknown))}")
    if actor is None and len(event.actors) == 1:
        actor = event.actors[0]
    if actor not in event.actors:
        allowed = ", ".join(event.actors)
        told = "no actor" if actor is None else f"not {actor}"
        raise TypeError(f"{event.name} is done by one of {allowed}: {told}")
    values = {name: _plain(fields.get(name)) for name in sorted(event.fields)}
    log.info("audit", extra={"event": event.name, "actor": str(actor), **values})


def record_api_key(event: Event, key_id: uuid.UUID) -> None:
    """Emit ``event`` for the API key ``key_id``, described from its row."""
    found = db.session.execute(
        select(ApiKey, Consent.client_id)
        .outerjoin(Consent, ApiKey.consent_id == Consent.id)
        .where(ApiKey.id == key_id)
    ).first()
    if found is None:
        return
    key = found.ApiKey
    record(
        event,
        user_id=key.user_id,
        api_key_id=key.id,
        client_id=found.client_id,
        scopes=key.scopes,
    )


def account_of(email: str) -> str:
    """The ``account`` a sign-in with ``email`` appears as in the audit trail."""
    return account_key(email, find_by_email(email))


def _plain(value: Any) -> Any:
    """A JSON-ready value, with anything shaped like a secret redacted."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    text = str(value)
    return REDACTED if SECRET_SHAPE.search(text) else text
