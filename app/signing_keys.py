"""Signing keys the service makes, keeps and rotates itself.

When neither ``JWT_SIGNING_KEY`` nor ``JWT_SECRET`` is set (the default
deploy), the first release (``flask --app app db upgrade``), or failing that
the first token, makes a key of ``SIGNING_KEY_ALGORITHM`` (RS256 unless told
otherwise: what most verifiers assume). Its private half is stored in
Postgres sealed with AES-256-GCM under a key derived (HKDF-SHA256) from
``SECRET_KEY``; keys sealed under an earlier secret open with
``SECRET_KEY_FALLBACKS`` and are sealed again under the current one at the
next release.

``flask --app app keys rotate`` publishes the next key at once and lets it
sign only once every verifier's copy of the JWK Set has been refreshed
(``switch_after``: the set's ``max-age`` and this process's own re-read,
with a margin); the key it replaces stays published until the last token it
signed has expired, and a later rotation deletes it.

Each process keeps the key ring it built for at most :data:`RING_TTL`
seconds, and never past the next moment a key starts signing or stops being
published, so a rotation reaches every process long before it takes effect.
Keys are read and written in sessions of their own, never in the request's
transaction: the first token of a deploy may make the key, and commits it
whatever becomes of the request.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from . import audit
from .config import Settings
from .config_keys import generate_private_pem, load_signing_key
from .db import db
from .models import SigningKey, utcnow
from .process_cache import ProcessCache
from .surfaces import PUBLIC_MAX_AGE

log = logging.getLogger(__name__)

#: What the derived sealing key is for; a new purpose, a new key.
_HKDF_INFO = b"signing-keys/aes-256-gcm/v1"
#: Bound to every sealed key, so a sealed blob is no use as anything else.
_ASSOCIATED_DATA = b"signing-key"
_NONCE_BYTES = 12
#: Seconds a process keeps the ring it built.
RING_TTL = 60
#: From a rotation until the new key signs: every verifier's copy of the
#: JWK Set (kept up to its ``max-age``), and every process's ring, has been
#: refreshed by then.
DEFAULT_SWITCH_AFTER = PUBLIC_MAX_AGE + RING_TTL + 60
#: Beyond a token's ``exp``: clock skew allowed by verifiers.
SKEW = 60
#: The Postgres advisory lock held while keys are made or rotated.
_LOCK = 0x5167_4B45  # "QgKE": any constant of our own


class KeyUnreadable(Exception):
    """No secret of ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` opens a key."""


def _sealing_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return hkdf.derive(secret.encode())


def _bound(kid: str, algorithm: str) -> bytes:
    return b"\x00".join((_ASSOCIATED_DATA, kid.encode(), algorithm.encode()))


def seal(private_pem: bytes, secret: str, kid: str, algorithm: str) -> bytes:
    """The PEM encrypted under ``secret`` for key ``kid``: nonce, then
    ciphertext and tag."""
    nonce = os.urandom(_NONCE_BYTES)
    box = AESGCM(_sealing_key(secret))
    return nonce + box.encrypt(nonce, private_pem, _bound(kid, algorithm))


def unseal(key: SigningKey, settings: Settings) -> tuple[bytes, bool]:
    """The key's PEM, and whether it was sealed under the current ``SECRET_KEY``."""
    sealed = key.sealed_private_key
    nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    bound = _bound(key.kid, key.algorithm)
    secrets = (settings.secret_key, *settings.secret_key_fallbacks)
    for index, secret in enumerate(secrets):
        try:
            pem = AESGCM(_sealing_key(secret)).decrypt(nonce, body, bound)
        except InvalidTag:
            continue
        return pem, index == 0
    raise KeyUnreadable(
        "no secret in SECRET_KEY or SECRET_KEY_FALLBACKS opens the stored signing"
        " keys; set SECRET_KEY_FALLBACKS to the SECRET_KEY they were made under"
    )


def _new_key(algorithm: str, secret: str, signs_from: datetime) -> SigningKey:
    pem = generate_private_pem(algorithm)
    _, _, public = load_signing_key(pem.decode())
    kid = public.thumbprint()
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        sealed_private_key=seal(pem, secret, kid, algorithm),
        public_jwk=public.as_dict(private=False),
        signs_from=signs_from,
    )


@contextmanager
def _transaction(locked: bool = True) -> Iterator[Session]:
    """A session of its own, committed at the end of the block; ``locked``:
    holding the advisory lock until then, so one process makes keys at a time."""
    with Session(db.engine, expire_on_commit=False) as session, session.begin():
        if locked:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        yield session


def ensure(settings: Settings) -> SigningKey:
    """The newest key, made now if there is none; in its own transaction."""
    with _transaction() as session:
        newest = session.scalars(
            select(SigningKey).order_by(SigningKey.signs_from.desc()).limit(1)
        ).first()
        made = newest is None
        if newest is None:
            newest = _new_key(
                settings.signing_key_algorithm, settings.secret_key, utcnow()
            )
            session.add(newest)
    if made:
        audit.record(
            audit.SIGNING_KEY_CREATED, kid=newest.kid, algorithm=newest.algorithm
        )
    return newest


def reseal(settings: Settings) -> int:
    """Seal under the current ``SECRET_KEY`` every key opened only by a
    fallback; raise :class:`KeyUnreadable` if one opens with none. The count."""
    count = 0
    with _transaction() as session:
        for key in session.scalars(select(SigningKey)):
            pem, current = unseal(key, settings)
            if not current:
                key.sealed_private_key = seal(
                    pem, settings.secret_key, key.kid, key.algorithm
                )
                count += 1
    return count


@dataclass(frozen=True)
class Rotation:
    """What ``keys rotate`` did."""

    #: ``"rotated"``, ``"pending"`` (a rotation is under way) or ``"kept"``
    #: (the signing key is younger than asked).
    outcome: str
    key: SigningKey
    #: Retired keys deleted, their tokens all expired.
    deleted: int


def rotate(
    settings: Settings, switch_after: int, older_than: timedelta | None = None
) -> Rotation:
    """Publish the next key, signing ``switch_after`` seconds from now;
    delete keys whose tokens have all expired."""
    with _transaction() as session:
        now = utcnow()
        gone = session.scalars(
            delete(SigningKey)
            .where(SigningKey.published_until <= now)
            .returning(SigningKey.kid)
        )
        deleted = len(list(gone))
        keys = list(session.scalars(select(SigningKey).order_by(SigningKey.signs_from)))
        if keys and keys[-1].signs_from > now:
            return Rotation("pending", keys[-1], deleted)
        if keys and older_than is not None and keys[-1].signs_from > now - older_than:
            return Rotation("kept", keys[-1], deleted)
        # The first key has no verifier to wait for: it signs at once.
        signs_from = now + timedelta(seconds=switch_after if keys else 0)
        # Published until the last token the current key signs has expired.
        until = signs_from + timedelta(seconds=settings.access_token_ttl + SKEW)
        session.execute(
            update(SigningKey)
            .where(SigningKey.published_until.is_(None))
            .values(published_until=until)
        )
        new = _new_key(settings.signing_key_algorithm, settings.secret_key, signs_from)
        session.add(new)
    return Rotation("rotated", new, deleted)


def list_keys() -> list[SigningKey]:
    """Every stored key, oldest first."""
    with _transaction(locked=False) as session:
        return list(session.scalars(select(SigningKey).order_by(SigningKey.signs_from)))


@dataclass(frozen=True)
class StoredKeys:
    """The keys in force at one moment, and until when that holds."""

    #: The key that signs: ``(kid, algorithm, private PEM)``.
    signing: tuple[str, str, bytes]
    #: Every published key: ``(kid, algorithm, public JWK)``.
    published: tuple[tuple[str, str, dict[str, Any]], ...]
    #: Unix time at which a key starts signing or stops being published.
    changes_at: float


def _cache() -> ProcessCache[str, Any]:
    cache = current_app.extensions.get("signing_key_ring")
    if cache is None:
        cache = current_app.extensions["signing_key_ring"] = ProcessCache(2)
    return cache


def cached_ring(settings: Settings, build: Any) -> Any:
    """This process's ring of the stored keys, built by ``build(StoredKeys)``.

    While Postgres cannot be read, the ring read last goes on serving: the
    keys change only by a rotation, which gives every process minutes.
    """
    cache = _cache()
    ring = cache.get("ring")
    if ring is None:
        try:
            stored = _read(settings)
        except (OperationalError, InterfaceError):
            last = current_app.extensions.get("signing_key_ring_last")
            if last is None:
                raise
            return last
        ring = build(stored)
        cache.put("ring", ring, until=stored.changes_at)
        current_app.extensions["signing_key_ring_last"] = ring
    return ring


#: Fewest seconds between two early re-reads of the ring (a token naming a
#: key this process does not know).
REREAD_EVERY = 5


def reread_ring() -> bool:
    """Forget this process's ring, unless it did so within
    :data:`REREAD_EVERY` seconds; tell whether it did."""
    now = time.monotonic()
    last = current_app.extensions.get("signing_key_reread", -math.inf)
    if now - last < REREAD_EVERY:
        return False
    current_app.extensions["signing_key_reread"] = now
    _cache().evict("ring")
    return True


def _read(settings: Settings) -> StoredKeys:
    now = utcnow()
    rows = _published(now)
    if not rows:
        ensure(settings)
        now = utcnow()  # the key made just now already signs
        rows = _published(now)
    # Each public key is derived from its private key, never read from the
    # row: a row can publish only a key sealed under SECRET_KEY for its kid.
    opened = {row.kid: _opened(row, settings) for row in rows}
    rows = [row for row in rows if opened[row.kid] is not None]
    if not rows:
        raise KeyUnreadable(
            "no stored signing key opens under SECRET_KEY or SECRET_KEY_FALLBACKS"
            " as what its row says"
        )
    live = [row for row in rows if row.signs_from <= now] or rows[:1]
    signer = max(live, key=lambda row: row.signs_from)
    moments = [row.signs_from for row in rows if row.signs_from > now]
    moments += [row.published_until for row in rows if row.published_until]
    changes_at = min(
        [now.timestamp() + RING_TTL, *(moment.timestamp() for moment in moments)]
    )
    signer_pem, _ = opened[signer.kid] or (b"", {})
    return StoredKeys(
        signing=(signer.kid, signer.algorithm, signer_pem),
        published=tuple(
            (row.kid, row.algorithm, (opened[row.kid] or (b"", {}))[1]) for row in rows
        ),
        changes_at=changes_at,
    )


def _opened(row: SigningKey, settings: Settings) -> tuple[bytes, dict[str, Any]] | None:
    """A row's private PEM and the public JWK derived from it; ``None`` (and
    an error logged) when the key is not what its row says it is."""
    try:
        pem, _ = unseal(row, settings)
    except KeyUnreadable:
        log.error("signing key %s does not open under SECRET_KEY; not used", row.kid)
        return None
    algorithm, _, public = load_signing_key(pem.decode())
    if public.thumbprint() != row.kid or algorithm != row.algorithm:
        log.error("signing key %s is not what its row says; not used", row.kid)
        return None
    return pem, public.as_dict(private=False)


def _published(now: datetime) -> list[SigningKey]:
    with _transaction(locked=False) as session:
        return list(
            session.scalars(
                select(SigningKey)
                .where(
                    (SigningKey.published_until.is_(None))
                    | (SigningKey.published_until > now)
                )
                .order_by(SigningKey.signs_from)
            )
        )
