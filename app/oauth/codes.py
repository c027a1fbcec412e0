"""One-time authorization codes, kept in Redis and consumed atomically."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..redis_store import get_redis, get_script

#: Atomically take a code and leave a tombstone naming the token it will become
#: and the person it was for; a second redemption finds only the tombstone
#: (RFC 6749 §4.1.2, replay).
_CONSUME = """
local value = redis.call('GETDEL', KEYS[1])
if value then
  local user_id = cjson.decode(value)['user_id']
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. user_id, 'EX', ARGV[2])
  return {value, false}
end
return {false, redis.call('GET', KEYS[2])}
"""


def _digest(code: str) -> str:
    # Only a hash of the code is a key, so a Redis dump holds no usable code.
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class AuthorizationCode:
    """What a code was issued for; Authlib reads it through the getters."""

    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    code_challenge: str
    code_challenge_method: str
    resource: str
    auth_time: int
    #: When the code was issued (seconds, sub-second precision), so that a
    #: grant revoked afterwards also voids the code.
    issued_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass(frozen=True)
class Consumed:
    """The result of a redemption: the code, or the jti of an earlier redemption
    and the person that code was for."""

    code: AuthorizationCode | None
    replayed_jti: str | None
    replayed_user_id: str | None = None


class CodeStore:
    """Save codes with a lifetime and consume each exactly once."""

    PREFIX = "oauth:code:"
    USED_PREFIX = "oauth:code-used:"

    def __init__(self, ttl: int, tombstone_ttl: int) -> None:
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl

    def save(self, code: str, data: AuthorizationCode) -> None:
        get_redis().set(
            self.PREFIX + _digest(code), json.dumps(asdict(data)), ex=self.ttl, nx=True
        )

    def consume(self, code: str, token_jti: str) -> Consumed:
        """Take the code, recording ``token_jti`` as the token issued for it."""
        digest = _digest(code)
        keys = [self.PREFIX + digest, self.USED_PREFIX + digest]
        consume = get_script(_CONSUME)
        value, used_by = consume(keys=keys, args=[token_jti, self.tombstone_ttl])
        if not value:
            # Tombstones left before they named the person hold the jti alone.
            jti, _, user_id = (used_by or "").partition(" ")
            return Consumed(None, jti or None, user_id or None)
        return Consumed(AuthorizationCode(**json.loads(value)), None)
