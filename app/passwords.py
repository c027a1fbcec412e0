"""Password hashing with argon2id, at OWASP's minimum cost.

OWASP's Password Storage Cheat Sheet: argon2id with 19 MiB of memory, two
passes, one lane. argon2-cffi's default (RFC 9106's second choice) takes
64 MiB per hash, so a burst of 16 sign-ins took a worker past 360 MB and two
workers past a 512 MB dyno. A hash made with other parameters (the older,
dearer ones) still verifies, and is replaced at its next sign-in.

While such older hashes remain, a failed sign-in would take longer for an
account that has one than for any other, telling them apart: every failure
then spends one verification at each cost (:func:`spend_the_other_cost`).
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

#: OWASP's first configuration: m = 19 MiB, t = 2, p = 1.
MEMORY_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
_hasher = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_KIB,
    parallelism=PARALLELISM,
    type=Type.ID,
)

#: Every hash at today's cost begins so.
CURRENT_PREFIX = f"$argon2id$v=19$m={MEMORY_KIB},t={TIME_COST},p={PARALLELISM}$"

#: Verified against when the account does not exist, so that a wrong email costs
#: as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password``; a missing hash still spends the full verification time."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether a verified hash was made with other parameters than today's."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.cache
def _older_dummy() -> str:
    # Made on first need: it costs what the older hashes cost (64 MiB).
    older = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
    return older.hash("not-a-real-password")


def spend_the_other_cost(password_hash: str | None, password: str) -> None:
    """After a failure, verify once more at the cost the failure did not
    spend: today's for an older hash, the older one for any other. Every
    failure then costs one of each, whichever account it was for."""
    older = password_hash is not None and not password_hash.startswith(CURRENT_PREFIX)
    dummy = _DUMMY_HASH if older else _older_dummy()
    try:
        PasswordHasher().verify(dummy, password)
    except (VerificationError, InvalidHashError):
        pass
