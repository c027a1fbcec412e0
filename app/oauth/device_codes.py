"""A device flow's codes (RFC 8628), kept in Redis and decided atomically.

A device code's record holds what the device asked for and, once the person
acts at ``/device``, their decision. Each record is changed only by a Lua
script, so every instance sees one truth: a poll too soon after the last
one widens the interval for good (§3.5 ``slow_down``), one person claims a
code before anything is recorded for it and settles it once, and of
concurrent polls after approval exactly one takes the grant. Times
are Redis's own clock, the one every instance shares.

Only digests are keys: the device code is a bearer secret, and a dump of
Redis holds no user code that could be typed in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from ..redis_store import get_redis, get_script

#: RFC 8628 §6.1: 20 consonants, none that looks like another or like a
#: digit, and no vowel, so no word is spelled; 8 of them are 34.6 bits.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
#: RFC 8628 §3.2: seconds a device waits between polls, unless slowed down.
POLL_INTERVAL = 5
#: §3.5: what each ``slow_down`` adds to the interval.
SLOW_DOWN_STEP = 5
#: How long past its expiry a device code is still known, to answer
#: ``expired_token`` rather than ``invalid_grant``.
EXPIRED_KEPT = 600
#: Longest input worth normalising as a user code.
MAX_USER_CODE_INPUT = 64

DEVICE_PREFIX = "oauth:device:"
USER_CODE_PREFIX = "oauth:device-user:"

#: KEYS[1] the device code's record; ARGV[1] the polling client, ARGV[2]
#: the interval's step, ARGV[3] the resource asked for ('' for none). The
#: answer's first element is a :class:`Poll` value; ``approved`` comes with
#: the record. Another resource than the code's spends nothing (RFC 8707).
_POLL = """
local value = redis.call('GET', KEYS[1])
if not value then return {'unknown'} end
local ok, record = pcall(cjson.decode, value)
if not ok or type(record) ~= 'table' or record['client_id'] ~= ARGV[1] then
  return {'unknown'}
end
if ARGV[3] ~= '' and record['resource'] ~= ARGV[3] then return {'other_resource'} end
if record['status'] == 'used' then return {'used'} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if now >= tonumber(record['expires_at']) then return {'expired'} end
if record['status'] == 'approved' then
  record['status'] = 'used'
  redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
  return {'approved', value}
end
if record['status'] == 'denied' then return {'denied'} end
local last = tonumber(record['last_poll']) or 0
local interval = tonumber(record['interval'])
record['last_poll'] = now
local answer = 'pending'
if last > 0 and now - last < interval then
  record['interval'] = interval + tonumber(ARGV[2])
  answer = 'slow_down'
end
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return {answer}
"""

#: KEYS[1] the user code's index, KEYS[2] the device code's record; ARGV[1]
#: the record's digest, ARGV[2] the person deciding. Only a pending,
#: unexpired code is claimed, once; its user code is then forgotten. The
#: claimed record, or nothing.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local value = redis.call('GET', KEYS[2])
if not value then return false end
local record = cjson.decode(value)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if record['status'] ~= 'pending' or now >= tonumber(record['expires_at']) then
  return false
end
record['status'] = 'claimed'
record['claimed_by'] = ARGV[2]
redis.call('SET', KEYS[2], cjson.encode(record), 'KEEPTTL')
redis.call('DEL', KEYS[1])
return value
"""

#: KEYS[1] a claimed record; ARGV[1] its claimant, ARGV[2] the decision's
#: fields. Only the claimant settles it, once.
_SETTLE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local record = cjson.decode(value)
if record['status'] ~= 'claimed' or record['claimed_by'] ~= ARGV[1] then
  return 0
end
for name, field in pairs(cjson.decode(ARGV[2])) do record[name] = field end
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1
"""


class Poll(Enum):
    """What a poll found (RFC 8628 §3.5)."""

    #: No such device code for this client, or no longer known.
    UNKNOWN = "unknown"
    #: Taken already by an earlier poll.
    USED = "used"
    EXPIRED = "expired"
    DENIED = "denied"
    PENDING = "pending"
    SLOW_DOWN = "slow_down"
    #: Approved, and taken by this poll.
    APPROVED = "approved"
    #: For another resource than the one asked for; nothing spent.
    OTHER_RESOURCE = "other_resource"


@dataclass(frozen=True)
class DeviceRequest:
    """What a device asked for, and the person's approval once given."""

    client_id: str
    scope: str
    resource: str
    #: Unix time after which the codes are spent.
    expires_at: float
    user_id: str | None = None
    consent_id: str | None = None
    #: When the approving person signed in (OpenID Connect ``auth_time``).
    auth_time: int | None = None

    @classmethod
    def from_record(cls, value: str) -> DeviceRequest:
        record = json.loads(value)
        return cls(
            client_id=record["client_id"],
            scope=record["scope"],
            resource=record["resource"],
            expires_at=float(record["expires_at"]),
            user_id=record.get("user_id"),
            consent_id=record.get("consent_id"),
            auth_time=record.get("auth_time"),
        )


@dataclass(frozen=True)
class Pending:
    """A user code found at ``/device``, waiting for the person's decision."""

    user_code: str
    request: DeviceRequest


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_user_code(value: str | None) -> str | None:
    """The user code as issued (``BCDFGHJK``), from what a person typed: case,
    spaces and dashes do not matter. ``None`` if it cannot be one."""
    if not value or len(value) > MAX_USER_CODE_INPUT:
        return None
    code = "".join(c for c in value.upper() if c not in " -\t")
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def display_user_code(code: str) -> str:
    """RFC 8628 §6.1: shown in two groups, ``XXXX-XXXX``."""
    return f"{code[:4]}-{code[4:]}"


def _new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def issue(client_id: str, scope: str, resource: str, ttl: int) -> tuple[str, str]:
    """Store a new device request; return its device code and user code
    (the latter as shown, ``XXXX-XXXX``)."""
    device_code = secrets.token_urlsafe(32)
    digest = _digest(device_code)
    record = {
        "client_id": client_id,
        "scope": scope,
        "resource": resource,
        "expires_at": time.time() + ttl,
        "interval": POLL_INTERVAL,
        "last_poll": 0,
        "status": "pending",
    }
    redis = get_redis()
    redis.set(DEVICE_PREFIX + digest, json.dumps(record), ex=ttl + EXPIRED_KEPT)
    # Live user codes are few against 20^8, yet two must never share one.
    while True:
        user_code = _new_user_code()
        key = USER_CODE_PREFIX + _digest(user_code)
        if redis.set(key, digest, ex=ttl, nx=True):
            return device_code, display_user_code(user_code)


def find(user_code: str) -> Pending | None:
    """The pending, unexpired request a (normalised) user code names."""
    redis = get_redis()
    digest = redis.get(USER_CODE_PREFIX + _digest(user_code))
    if digest is None:
        return None
    value = redis.get(DEVICE_PREFIX + digest)
    if value is None:
        return None
    record = json.loads(value)
    if record.get("status") != "pending" or record["expires_at"] <= time.time():
        return None
    return Pending(user_code, DeviceRequest.from_record(value))


@dataclass(frozen=True)
class Claim:
    """A user code one person is deciding on; nobody else can any more."""

    digest: str
    user_id: str
    request: DeviceRequest


def claim(user_code: str, user_id: str) -> Claim | None:
    """Take a pending, unexpired user code for ``user_id`` to decide on,
    before anything is recorded; ``None`` if it was no longer pending
    (decided or claimed meanwhile, or expired)."""
    redis = get_redis()
    index = USER_CODE_PREFIX + _digest(user_code)
    digest = redis.get(index)
    if digest is None:
        return None
    claim_script = get_script(_CLAIM)
    value = claim_script(keys=[index, DEVICE_PREFIX + digest], args=[digest, user_id])
    if not value:
        return None
    return Claim(digest, user_id, DeviceRequest.from_record(value))


def settle(
    claimed: Claim,
    *,
    approved: bool,
    consent_id: str | None = None,
    scope: str | None = None,
    auth_time: int | None = None,
) -> bool:
    """Record the claimant's decision; the device's next poll answers it."""
    fields: dict[str, object] = {"status": "denied"}
    if approved:
        fields = {
            "status": "approved",
            "user_id": claimed.user_id,
            "consent_id": consent_id,
            "scope": scope,
            "auth_time": auth_time,
        }
    settle_script = get_script(_SETTLE)
    keys = [DEVICE_PREFIX + claimed.digest]
    return bool(settle_script(keys=keys, args=[claimed.user_id, json.dumps(fields)]))


@dataclass(frozen=True)
class PollResult:
    found: Poll
    #: The approved request, taken by this poll.
    request: DeviceRequest | None = None


def poll(device_code: str, client_id: str, resource: str = "") -> PollResult:
    """One poll of ``device_code`` by ``client_id`` (RFC 8628 §3.4), for
    ``resource`` when the request names one."""
    if len(device_code) > 128:
        return PollResult(Poll.UNKNOWN)
    poll_script = get_script(_POLL)
    keys = [DEVICE_PREFIX + _digest(device_code)]
    answer = poll_script(keys=keys, args=[client_id, SLOW_DOWN_STEP, resource])
    found = Poll(answer[0])
    if found is Poll.APPROVED:
        return PollResult(found, DeviceRequest.from_record(answer[1]))
    return PollResult(found)
