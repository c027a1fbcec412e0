"""People: creating, finding and checking the passwords of accounts."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .config import current_settings
from .db import db, is_storable
from .denylist import deny_user_until_now
from .models import OAuthClient, User, utcnow
from .oauth.clients import revoke_clients
from .passwords import (
    CURRENT_PREFIX,
    hash_password,
    needs_rehash,
    spend_the_other_cost,
    verify_password,
)
from .process_cache import ProcessCache

#: RFC 5321 limits a mailbox to 254 characters in practice.
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
#: argon2 hashes whatever it is given; a cap keeps huge inputs from costing CPU.
MAX_PASSWORD_LENGTH = 1024


class UserError(ValueError):
    """A user could not be created; the message says why."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def is_plausible_email(email: str) -> bool:
    local, _, domain = email.partition("@")
    return (
        bool(local)
        and "." in domain.strip(".")
        and len(email) <= MAX_EMAIL_LENGTH
        and not any(c.isspace() for c in email)
    )


def create_user(email: str, password: str) -> User:
    """Create an account; raise :class:`UserError` on bad input or a duplicate."""
    email = normalize_email(email)
    if not is_plausible_email(email):
        raise UserError(f"not a valid email address: {email!r}")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UserError(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} "
            "characters"
        )
    user = User(email=email, password_hash=hash_password(password))
    try:
        # A savepoint, so that a duplicate leaves the caller's transaction usable.
        with db.session.begin_nested():
            db.session.add(user)
    except IntegrityError:
        raise UserError(f"a user with email {email} already exists") from None
    return user


def disable_user(user: User) -> None:
    """Disable an account and deny every token it holds (see :mod:`app.db`)."""
    user.is_active = False
    # The record of the cut-off, which outlives Redis (app.denylist_record).
    user.tokens_cut_off_at = utcnow()
    db.session.flush()
    deny_user_until_now(str(user.id))
    # Their service clients too, whichever subject those act as.
    revoke_clients(OAuthClient.owner_id == user.id)


def find_by_email(email: str) -> User | None:
    if len(email) > MAX_EMAIL_LENGTH or not is_storable(email):
        return None  # no account can have such an address
    return db.session.scalar(select(User).where(User.email == normalize_email(email)))


def get_active_user(user_id: str | uuid.UUID | None) -> User | None:
    """Load an enabled user by id; ``None`` for anything else, bad ids included."""
    try:
        key = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
    except ValueError:
        return None
    user = db.session.get(User, key)
    return user if user is not None and user.is_active else None


def authenticate(user: User | None, password: str) -> User | None:
    """Return ``user`` if it is enabled and ``password`` is its password.

    Every miss (no such account, no password, a wrong one, a disabled
    account) spends the same time: a full argon2 verification.
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        password = ""
    ok = verify_password(user.password_hash if user else None, password)
    if not (ok and user is not None and user.is_active):
        if _older_hashes_remain():
            spend_the_other_cost(user.password_hash if user else None, password)
        return None
    if user.password_hash and needs_rehash(user.password_hash):
        _rehash(user, password)
    return user


#: Seconds a process trusts what it found about older hashes.
OLDER_HASHES_CHECKED_EVERY = 600


def _older_hashes_remain() -> bool:
    """Whether any account still has a hash of an older cost; asked of
    Postgres at most every :data:`OLDER_HASHES_CHECKED_EVERY` seconds."""
    cache = current_app.extensions.setdefault("older_hashes", ProcessCache(1))
    found = cache.get("remain")
    if found is None:
        older = select(User.id).where(
            User.password_hash.is_not(None),
            func.starts_with(User.password_hash, CURRENT_PREFIX).is_(False),
        )
        found = bool(db.session.scalar(select(older.exists())))
        cache.put("remain", found, until=time.time() + OLDER_HASHES_CHECKED_EVERY)
    return found


def _rehash(user: User, password: str) -> None:
    """Store the password again at today's cost; only if it did not change
    meanwhile (a concurrent sign-in, or a new password)."""
    old, new = user.password_hash, hash_password(password)
    with db.transaction():
        db.session.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == old)
            .values(password_hash=new)
            .execution_options(synchronize_session=False)
        )


def account_key(email: str, user: User | None) -> str:
    """Name the account a sign-in attempt is for: the one limits and audit count.

    The account's id when ``email`` names one (in any spelling); otherwise a
    keyed digest of the normalised email, so that guessing at an address
    with no account is counted too, without the address being kept.
    """
    return str(user.id) if user is not None else email_digest(email)


def email_digest(email: str) -> str:
    """HMAC-SHA256 of the normalised email, keyed by ``SECRET_KEY`` (32 hex digits)."""
    key = current_settings().secret_key.encode()
    message = normalize_email(email)[:320].encode("utf-8", "surrogatepass")
    return hmac.new(key, b"account\x00" + message, hashlib.sha256).hexdigest()[:32]
