"""The audit trail: who signed in, and which application they authorized, when.

Each event is one JSON line on the ``app.audit`` logger (see ``logs.py``),
kept at INFO whatever ``LOG_LEVEL`` says, with ``"message": "audit"``, a
stable ``event`` name, the request id and the event's own fields. Events are
declared here, each with the only field names it may carry: no audit line
can hold a password, a token, a code, a cookie or a key. ``docs/audit.md``
lists them for operators.

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


@dataclass(frozen=True)
class Event:
    """An audit event: its ``event`` name, and the fields it may carry."""

    name: str
    fields: frozenset[str]


def _event(name: str, *fields: str) -> Event:
    return Event(name, frozenset(fields))


#: A person signed in to an enabled account, by ``method`` (``password``, or
#: a provider's kind, ``oidc`` or ``github``, with the ``provider``'s name).
SIGN_IN_SUCCEEDED = _event(
    "sign_in_succeeded", "user_id", "account", "address", "method", "provider"
)
#: A sign-in refused, for a ``reason``: ``credentials`` on the password form
#: (unknown email, no or a wrong password, disabled account), or one of
#: ``app.upstream_identity.REASONS`` through a provider.
SIGN_IN_FAILED = _event(
    "sign_in_failed", "account", "address", "method", "provider", "reason"
)
#: A person added a provider's identity to their account, after signing in
#: to the account by its current method.
IDENTITY_LINKED = _event("identity_linked", "user_id", "address", "provider")
#: A person removed one of their identities on the account page.
IDENTITY_REMOVED = _event("identity_removed", "user_id", "identity_id")
#: A person approved a client's request on the consent page.
CONSENT_GRANTED = _event("consent_granted", "user_id", "client_id", "scope", "resource")
#: A person refused a client's request on the consent page.
CONSENT_DENIED = _event("consent_denied", "user_id", "client_id", "scope", "resource")
#: A person withdrew a client's access, and with it the keys the client made.
CONSENT_REVOKED = _event(
    "consent_revoked", "user_id", "client_id", "consent_id", "api_key_ids"
)
#: An API key was made, on the account page (no ``client_id``) or by a client.
API_KEY_CREATED = _event(
    "api_key_created", "user_id", "api_key_id", "client_id", "scopes"
)
#: An API key was revoked by its owner, or by the client that made it.
API_KEY_REVOKED = _event(
    "api_key_revoked", "user_id", "api_key_id", "client_id", "scopes"
)
#: An authorization code was redeemed twice; the token it gave was revoked.
AUTHORIZATION_CODE_REPLAYED = _event(
    "authorization_code_replayed", "client_id", "user_id", "revoked_jti"
)
#: A rotated-out refresh token came back after the grace window (RFC 9700
#: §4.14.2): the consent, its refresh chain and its tokens were ended.
REFRESH_TOKEN_REUSED = _event(
    "refresh_token_reused", "client_id", "user_id", "consent_id"
)
#: An operator registered, changed or removed a resource (CLI); a removal
#: ended every consent and key for it.
RESOURCE_ADDED = _event("resource_added", "resource", "scopes")
RESOURCE_UPDATED = _event("resource_updated", "resource", "scopes")
RESOURCE_REMOVED = _event("resource_removed", "resource", "consents", "api_key_ids")
#: An operator disabled an account (CLI); its tokens were cut off.
USER_DISABLED = _event("user_disabled", "user_id", "account")
SERVICE_CLIENT_CREATED = _event(
    "service_client_created", "client_id", "user_id", "resource", "scope"
)
SERVICE_CLIENT_REVOKED = _event("service_client_revoked", "client_id", "user_id")
#: A signed assertion presented again (RFC 7523 §3: each ``jti`` once).
ASSERTION_REPLAYED = _event("assertion_replayed", "issuer", "client_id")
IDENTITY_ISSUER_TRUSTED = _event(
    "identity_issuer_trusted",
    "issuer",
    "jwks_uri",
    "allow_public_clients",
    "email_domains",
)
IDENTITY_ISSUER_DISTRUSTED = _event("identity_issuer_distrusted", "issuer")
#: An operator published the next of the service's own signing keys.
SIGNING_KEY_ROTATED = _event("signing_key_rotated", "kid", "algorithm")
#: The service made its first signing key (no key configured).
SIGNING_KEY_CREATED = _event("signing_key_created", "kid", "algorithm")


def record(event: Event, **fields: Any) -> None:
    """Emit ``event`` with ``fields``; a field it does not declare is a bug."""
    unknown = fields.keys() - event.fields
    if unknown:
        raise TypeError(f"{event.name} has no field {', '.join(sorted(unknown))}")
    values = {name: _plain(fields.get(name)) for name in sorted(event.fields)}
    log.info("audit", extra={"event": event.name, **values})


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
