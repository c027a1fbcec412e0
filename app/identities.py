"""People's identities at providers: found by (issuer, subject), never by email.

An email names a person only to suggest which account a new identity might
belong to; the identity is linked to that account only once the person has
signed in to it (:mod:`app.identity_links`). Domain functions only flush:
the endpoint opens the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import db
from .identity_providers import signs_in
from .models import Identity, User, utcnow
from .upstream_identity import UpstreamIdentity
from .users import find_by_email


class IdentityTaken(Exception):
    """The identity already belongs to an account (another one, or a race)."""


class LastWayIn(Exception):
    """Removing the identity would leave the account no way to sign in."""


@dataclass(frozen=True)
class IdentityView:
    """One identity, as the account page lists it."""

    id: uuid.UUID
    issuer: str
    email: str | None
    created_at: datetime
    last_used_at: datetime | None


def owner_of(identity: UpstreamIdentity) -> User | None:
    """The account this identity signs in to, if it has one (enabled or not)."""
    found = db.session.execute(
        select(Identity, User)
        .join(User, Identity.user_id == User.id)
        .where(Identity.issuer == identity.issuer, Identity.subject == identity.subject)
    ).first()
    if found is None:
        return None
    found.Identity.last_used_at = utcnow()
    return found.User


def account_with_email(identity: UpstreamIdentity) -> User | None:
    """An account whose email is the identity's verified one: a candidate to
    link after proof, never an account to sign in to."""
    return find_by_email(identity.email) if identity.email else None


def create_account(identity: UpstreamIdentity) -> User:
    """A new account with no password, signed in to by ``identity``.

    Raise :class:`IdentityTaken` when the identity, or an account with its
    email, came into being meanwhile.
    """
    assert identity.account_email is not None
    user = User(email=identity.account_email, password_hash=None)
    try:
        with db.session.begin_nested():
            db.session.add(user)
            db.session.flush()
            db.session.add(_row(user.id, identity))
    except IntegrityError:
        raise IdentityTaken() from None
    return user


def link(user_id: uuid.UUID, identity: UpstreamIdentity) -> Identity:
    """Add ``identity`` to the account ``user_id``; raise :class:`IdentityTaken`."""
    row = _row(user_id, identity)
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        raise IdentityTaken() from None
    return row


def _row(user_id: uuid.UUID, identity: UpstreamIdentity) -> Identity:
    return Identity(
        user_id=user_id,
        issuer=identity.issuer,
        subject=identity.subject,
        email=identity.email,
        last_used_at=utcnow(),
    )


def list_identities(user_id: uuid.UUID) -> list[IdentityView]:
    rows = db.session.scalars(
        select(Identity)
        .where(Identity.user_id == user_id)
        .order_by(Identity.created_at)
    )
    return [
        IdentityView(row.id, row.issuer, row.email, row.created_at, row.last_used_at)
        for row in rows
    ]


def remove(user: User, identity_id: uuid.UUID) -> bool:
    """Remove one of ``user``'s identities, if another way in remains.

    ``False`` when there is no such identity; :class:`LastWayIn` when it is
    the last way in (no password and no other identity). The account row is
    locked first, so two removals at once cannot take away both of the last
    two ways in.
    """
    db.session.execute(
        select(User.id).where(User.id == user.id).with_for_update()
    ).one()
    row = db.session.get(Identity, identity_id)
    if row is None or row.user_id != user.id:
        return False
    # Only identities of providers configured today are ways in.
    others = [
        issuer
        for issuer in db.session.scalars(
            select(Identity.issuer).where(
                Identity.user_id == user.id, Identity.id != identity_id
            )
        )
        if signs_in(issuer)
    ]
    if not others and not user.password_hash:
        raise LastWayIn()
    db.session.delete(row)
    db.session.flush()
    return True
