"""One-time authorization codes, kept in Redis and consumed atomically."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..redis_store import get_redis, get_script

#: Atomically take a code issued to client ARGV[1] and leave a tombstone naming
#: the token it becomes; a second redemption finds only the tombstone (RFC 6749
#: §4.1.2, replay). Another client's attempt leaves the code where it is, and
#: so does one naming another resource than the code's (ARGV[3], when given):
#: an error answer spends nothing (RFC 6749 §5.2).
_CONSUME = """
local value = redis.call('GET', KEYS[1])
if value then
  local ok, code = pcall(cjson.decode, value)
  if not ok or type(code) ~= 'table' or code['client_id'] ~= ARGV[1]
      or type(code['token_jti']) ~= 'string' then
    return {false, false}
  end
  if ARGV[3] ~= '' and code['resource'] ~= ARGV[3] then
    return {false, false, 1}
  end
  redis.call('DEL', KEYS[1])
  -- The tombstone names the token and, for the audit trail, the person.
  redis.call('SET', KEYS[2], code['token_jti'] .. ' ' .. tostring(code['user_id']),
             'EX', ARGV[2])
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
    #: The consent it was issued under; the token carries it on.
    consent_id: str
    #: The ``jti`` of the token it becomes, so that a replay can deny that token.
    token_jti: str

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
    #: The code is for another resource than the one asked for; it was kept.
    other_resource: bool = False


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

    def consume(self, code: str, client_id: str, resource: str = "") -> Consumed:
        """Take the code if it was issued to ``client_id`` (and, when given,
        for ``resource``), exactly once."""
        digest = _digest(code)
        keys = [self.PREFIX + digest, self.USED_PREFIX + digest]
        consume = get_script(_CONSUME)
        answer = consume(keys=keys, args=[client_id, self.tombstone_ttl, resource])
        value, used_by = answer[0], answer[1]
        if len(answer) > 2:
            return Consumed(None, None, other_resource=True)
        if not value:
            # Tombstones left before they named the person hold the jti alone.
            jti, _, user_id = (used_by or "").partition(" ")
            return Consumed(None, jti or None, user_id or None)
        return Consumed(AuthorizationCode(**json.loads(value)), None)
