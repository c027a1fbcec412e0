"""Every family of Redis keys the service writes: name, owner, lifetime, loss.

Postgres holds every fact; Redis holds what may be lost (codes in flight,
counters, caches) and copies that Postgres can rebuild (the denylist). This
is the one list of what lives there. ``tests/test_redis_keys.py`` fails when
the code writes a key no family here names, or a family here is no longer
written by its owner; ``docs/reference.md`` ("Redis keys") is checked against
it too. A new key family is declared here first.

Names use ``{...}`` for the variable parts; :attr:`KeyFamily.glob` is the
``SCAN`` pattern that finds a family's keys. Braces around other variable
parts are the name's own: the rate limiter's counters keep their name in a
Redis Cluster hash tag (``LIMITS:{...}``), so that both counters of a limit
live on one node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A variable part: braces with no brace inside.
_PART = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class KeyFamily:
    """One kind of Redis key: how it is named, who writes it, how long it lives."""

    #: The key's name, ``{...}`` marking each variable part.
    name: str
    #: The module that writes it (dotted).
    owner: str
    #: How long one key lives.
    lifetime: str
    #: What emptying Redis (a restart without its data, a flush) costs.
    lost: str
    #: ``"channel"`` for a pub/sub channel: named like a key, but never stored.
    kind: str = "key"

    @property
    def prefix(self) -> str:
        """The fixed start of every name in the family."""
        return _PART.split(self.name, maxsplit=1)[0]

    @property
    def glob(self) -> str:
        """The family as a ``SCAN MATCH`` / :func:`fnmatch.fnmatchcase` pattern."""
        return _PART.sub("*", self.name)


#: A limit counted by two counters (``{window}`` empty: the current window's,
#: from its first count; ``/-1``: the previous window's).
COUNTERS_LIFETIME = (
    "two of the limit's windows after its last count, at most (`{window}` "
    "empty: the current window's count; `/-1`: the previous window's)"
)
#: A limit counted exactly: a list of up to the limit's count of timestamps.
WINDOW_LIFETIME = (
    "the limit's window after its last count (a list of up to the limit's "
    "count of timestamps)"
)


#: Authorization codes, by the SHA-256 of the code (RFC 6749 §4.1.2: one use).
CODE = KeyFamily(
    "oauth:code:{sha256 of the code}",
    "app.oauth.codes",
    "`AUTH_CODE_TTL`, or until redeemed",
    "codes in flight: the client starts again at `/authorize`",
)
#: What a redeemed code became, so that a replay revokes it (RFC 6749 §4.1.2).
CODE_USED = KeyFamily(
    "oauth:code-used:{sha256 of the code}",
    "app.oauth.codes",
    "`ACCESS_TOKEN_TTL`",
    "a code replayed after the loss is refused as unknown, but the token it "
    "became is no longer revoked for the replay",
)
#: A device flow's request and the person's decision, by the SHA-256 of
#: its device code (RFC 8628): polled, decided and taken atomically.
DEVICE_CODE = KeyFamily(
    "oauth:device:{sha256 of the device code}",
    "app.oauth.device_codes",
    "`DEVICE_CODE_TTL` + 600 s (answering `expired_token` after it expires)",
    "devices waiting for a person start again at `/device_authorization`",
)
#: Which device request a user code names, by the SHA-256 of the code.
DEVICE_USER_CODE = KeyFamily(
    "oauth:device-user:{sha256 of the user code}",
    "app.oauth.device_codes",
    "`DEVICE_CODE_TTL`, or until the person approves or denies",
    "codes not yet entered are unknown at `/device`; the device starts again",
)
#: An access token denied at ``/revoke`` or for a replayed code.
DENIED_JTI = KeyFamily(
    "denied:jti:{jti}",
    "app.denylist_record",
    "until the token's `exp`, plus 60 s",
    "nothing: rebuilt from Postgres (`denied_tokens`)",
)
#: A withdrawn consent: every token issued under it.
DENIED_CONSENT = KeyFamily(
    "denied:consent:{consent id}",
    "app.denylist_record",
    "`ACCESS_TOKEN_TTL` + 60 s from the withdrawal",
    "nothing: rebuilt from Postgres (`consents.revoked_at`)",
)
#: A revoked API key: every token exchanged for it.
DENIED_API_KEY = KeyFamily(
    "denied:api_key:{key id}",
    "app.denylist_record",
    "`ACCESS_TOKEN_TTL` + 60 s from the revocation",
    "nothing: rebuilt from Postgres (`api_keys.revoked_at`)",
)
#: A disabled account: its tokens issued before the cut-off (the value).
DENIED_USER = KeyFamily(
    "denied:user:{user id}",
    "app.denylist_record",
    "`ACCESS_TOKEN_TTL` + 60 s from the cut-off",
    "nothing: rebuilt from Postgres (`users.tokens_cut_off_at`)",
)
#: A revoked client (a service client, or its person disabled): its tokens.
DENIED_CLIENT = KeyFamily(
    "denied:client:{client id}",
    "app.denylist_record",
    "`ACCESS_TOKEN_TTL` + 60 s from the revocation",
    "nothing: rebuilt from Postgres (`oauth_clients.revoked_at`)",
)
#: Names the Redis server (``run_id``) and rebuild whose markers Redis holds.
DENYLIST_REBUILT = KeyFamily(
    "denylist:rebuilt",
    "app.denylist_rebuild",
    "no expiry",
    "nothing: its absence is how a loss is noticed, and the next look-up "
    "rebuilds the denylist",
)
#: Held by the one instance rebuilding the denylist.
DENYLIST_REBUILDING = KeyFamily(
    "denylist:rebuilding",
    "app.denylist_rebuild",
    "15 s, or until the rebuild ends",
    "nothing: another instance takes the rebuild over",
)
#: Pub/sub channel: each denial, and each process-cache eviction, as it happens.
DENYLIST_CHANNEL = KeyFamily(
    "denylist:announce",
    "app.denylist_view",
    "none: messages are not stored",
    "nothing: each process reloads its copy when it resubscribes",
    kind="channel",
)
#: A signed-out session, so that a copy of its cookie is no longer accepted.
SESSION_ENDED = KeyFamily(
    "session:ended:{session id}",
    "app.sessions",
    "the session's lifetime (12 hours)",
    "a copy of a signed-out session's cookie works again until it expires",
)
#: A device cookie that spent its own sign-in budget (OWASP device cookies).
LOGIN_DEVICE_LOCKED = KeyFamily(
    "login:device-locked:{device digest}",
    "app.device_cookies",
    "until the device cookie expires (180 days at most)",
    "a locked device cookie earns a fresh budget of `LOGIN_RATE_LIMIT`",
)
#: A sign-in in flight at an identity provider: its PKCE verifier, nonce and
#: target, bound to the browser that started it; taken out by its callback.
SIGNIN_STATE = KeyFamily(
    "signin:state:{sha256 of the state}",
    "app.provider_states",
    "10 minutes, or until the provider sends the browser back",
    "sign-ins in flight at a provider end on the page that asks to start again",
)
#: An identity waiting to be linked to an existing account, after proof.
SIGNIN_LINK = KeyFamily(
    "signin:link:{sha256 of the link cookie}",
    "app.identity_links",
    "10 minutes, or until the person confirms the link",
    "the person signs in through the provider again to be offered the link",
)
#: At most one ``api_keys.last_used_at`` write a minute per key.
API_KEY_LAST_USED = KeyFamily(
    "api_key:last_used:{key id}",
    "app.api_key_exchange",
    "60 s",
    "one extra `last_used_at` write per key",
)
#: A client metadata document's verdict, by the SHA-256 of its URL.
CIMD_VERDICT = KeyFamily(
    "cimd:verdict:{sha256 of the URL}",
    "app.oauth.client_metadata",
    "the document's `Cache-Control: max-age` (bounded), 60 s for a failure",
    "the document is fetched again",
)
#: Held by the one instance fetching a document.
CIMD_LOCK = KeyFamily(
    "cimd:lock:{sha256 of the URL}",
    "app.oauth.client_metadata",
    "the fetch's deadline + 2 s, or until the fetch ends",
    "another instance may fetch the same document at once",
)
#: Wakes the instances waiting for another's fetch.
CIMD_DONE = KeyFamily(
    "cimd:done:{sha256 of the URL}",
    "app.oauth.client_metadata",
    "the fetch's deadline + 2 s",
    "waiters read the verdict at their next look (within 1 s)",
)
#: A signed assertion's ``jti`` spent (a client's, or an identity assertion's).
ASSERTION_JTI = KeyFamily(
    "assertion:jti:{sha256 of the kind, issuer and jti}",
    "app.oauth.assertions",
    "until the assertion's `exp`, plus 60 s",
    "an assertion presented before the loss and still unexpired (minutes for "
    "a client's, up to an hour for an identity assertion) could be presented "
    "once more",
)
#: A fetched JWK Set (a client's ``jwks_uri``, a trusted issuer's keys).
KEY_SET = KeyFamily(
    "jwks:{sha256 of the URL}",
    "app.oauth.key_sets",
    "the set's `Cache-Control: max-age` (bounded), 60 s for a failure",
    "the set is fetched again",
)
#: Held by the one instance fetching a key set.
KEY_SET_LOCK = KeyFamily(
    "jwks:lock:{sha256 of the URL}",
    "app.oauth.key_sets",
    "the fetch's deadline + 2 s, or until the fetch ends",
    "another instance may fetch the same set at once",
)
#: At most one fetch per 30 s of a set for a key id it lacks (rotation).
KEY_SET_REFETCH = KeyFamily(
    "jwks:refetch:{sha256 of the URL}",
    "app.oauth.key_sets",
    "30 s",
    "one extra fetch of the set",
)
#: Most limits: two counters per limit and caller address (``key_prefix="rl"``),
#: the current window's and, named with ``/-1``, the previous one's
#: (app.rate_limits, ``sliding-window-counter``).
RATE_LIMIT = KeyFamily(
    "LIMITS:{LIMITER/rl/{address}/{endpoint}/{limit}}{window}",
    "app.rate_limits",
    COUNTERS_LIFETIME,
    "the counts start again from zero",
)
#: Sign-in attempts per address at ``/login``: exact, a moving window (a list
#: of up to the limit's count of timestamps), as are the two families below.
RATE_LIMIT_SIGN_IN = KeyFamily(
    "LIMITS:LIMITER/rl/{address}/auth.login/{limit}",
    "app.rate_limits",
    WINDOW_LIFETIME,
    "the counts start again from zero",
)
#: Sign-in attempts per account: its id, or for an email with no account a
#: digest of it keyed with SECRET_KEY (app.users.account_key).
RATE_LIMIT_ACCOUNT = KeyFamily(
    "LIMITS:LIMITER/rl/login-account:{account id or email digest}/{endpoint}/{limit}",
    "app.blueprints.auth",
    WINDOW_LIFETIME,
    "the counts start again from zero",
)
#: Sign-in attempts per known browser (device cookie), by the nonce's digest.
RATE_LIMIT_DEVICE = KeyFamily(
    "LIMITS:LIMITER/rl/login-device:{device digest}/{endpoint}/{limit}",
    "app.blueprints.auth",
    WINDOW_LIFETIME,
    "the counts start again from zero",
)
#: Codes looked up at ``/device``, per address and per account: exact.
RATE_LIMIT_USER_CODE = KeyFamily(
    "LIMITS:LIMITER/user-code/{address}/{limit}",
    "app.blueprints.device",
    WINDOW_LIFETIME,
    "the counts start again from zero",
)
RATE_LIMIT_USER_CODE_ACCOUNT = KeyFamily(
    "LIMITS:LIMITER/user-code-account/{account id}/{limit}",
    "app.blueprints.device",
    WINDOW_LIFETIME,
    "the counts start again from zero",
)
#: ``/authorize`` requests per address that made the service fetch a document
#: (and key-set fetches): two counters, as :data:`RATE_LIMIT`.
RATE_LIMIT_CIMD_FETCH = KeyFamily(
    "LIMITS:{LIMITER/cimd-fetch/{address}/{limit}}{window}",
    "app.oauth.client_metadata",
    COUNTERS_LIFETIME,
    "the counts start again from zero",
)

#: Every family, in the order docs/reference.md lists them.
FAMILIES: tuple[KeyFamily, ...] = (
    CODE,
    CODE_USED,
    DEVICE_CODE,
    DEVICE_USER_CODE,
    DENIED_JTI,
    DENIED_CONSENT,
    DENIED_API_KEY,
    DENIED_USER,
    DENIED_CLIENT,
    DENYLIST_REBUILT,
    DENYLIST_REBUILDING,
    DENYLIST_CHANNEL,
    SESSION_ENDED,
    LOGIN_DEVICE_LOCKED,
    SIGNIN_STATE,
    SIGNIN_LINK,
    API_KEY_LAST_USED,
    CIMD_VERDICT,
    CIMD_LOCK,
    CIMD_DONE,
    ASSERTION_JTI,
    KEY_SET,
    KEY_SET_LOCK,
    KEY_SET_REFETCH,
    RATE_LIMIT,
    RATE_LIMIT_SIGN_IN,
    RATE_LIMIT_ACCOUNT,
    RATE_LIMIT_DEVICE,
    RATE_LIMIT_USER_CODE,
    RATE_LIMIT_USER_CODE_ACCOUNT,
    RATE_LIMIT_CIMD_FETCH,
)
