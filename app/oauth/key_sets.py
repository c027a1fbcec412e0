"""Public key sets that sign what others send us: clients' and identity issuers'.

A client authenticating with ``private_key_jwt`` (RFC 7523 §2.2) and a
trusted identity issuer signing identity assertions both publish JWK Sets
(RFC 7517 §5). A set is taken only if every key in it is a public key of an
asymmetric type, so no secret or HMAC key can ever verify a signature here
(the algorithm-confusion attack), and signatures are checked only with the
algorithms of :data:`ALGORITHMS`.

A set given at a URL (``jwks_uri``) is fetched under the same rules as a
client metadata document (:mod:`.client_metadata_fetch`: the address
allow-list, one deadline, a size cap, no redirects) and kept in Redis as long
as its ``Cache-Control`` asks, within the same bounds, so a fleet fetches
once. A key id the kept set lacks means the keys rotated: the set is fetched
again, at most once per :data:`REFETCH_SECONDS` per URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import secrets
import threading
import time
from typing import Any

from flask import Flask, current_app
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..config import current_settings
from ..db import is_storable
from ..rate_limits import client_address, spend
from ..redis_store import get_redis, get_script
from .client_metadata import (
    BUSY_RETRY_SECONDS,
    FAILURE_CACHE_SECONDS,
    FETCH_RATE_KEY,
    LOCK_SECONDS,
    MAX_CONCURRENT_FETCHES,
)
from .client_metadata_fetch import FetchBusy, FetchPolicy, FetchProblem, check_url
from .client_metadata_fetch import fetch as fetch_document
from .client_metadata_parse import cache_seconds

log = logging.getLogger(__name__)

#: JWS algorithms accepted on assertions: asymmetric only (RFC 8725 §3.1),
#: never ``none`` nor HMAC. Discovery metadata lists them.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Key types and, for elliptic curves, the curves those algorithms use.
_CURVES = {"EC": ("P-256", "P-384", "P-521"), "OKP": ("Ed25519", "Ed448")}
#: Members only a private or secret key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: RFC 7518 §3.3: RSA keys of at least 2048 bits; the largest in common use,
#: and the exponent nearly all keys have (a huge one makes checks costly).
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
RSA_EXPONENT = 65537
#: Longest base64url integer read: a 4096-bit modulus is 683 characters.
MAX_INTEGER_CHARS = 700
#: Most keys a set may hold, and the largest set read or stored: real sets
#: hold two or three keys, and a 4096-bit RSA key is under 1 KB.
MAX_KEYS = 10
MAX_SET_BYTES = 16 * 1024
#: The same for a set published at a URL, whose keys beyond ours (encryption
#: keys, certificate chains: Entra ID's set is about 15 KB) are left out.
MAX_PUBLISHED_KEYS = 32
MAX_PUBLISHED_BYTES = 64 * 1024
#: The longest key set URL kept.
MAX_URL_LENGTH = 2048
#: An unknown key id fetches the set again at most this often per URL.
REFETCH_SECONDS = 30
#: A failed fetch is answered from this marker until it expires.
_FAILED = "!"
#: How often a request waiting for another instance's fetch looks again.
WAIT_STEP = 0.05
_SLOTS = "key_set_fetch_slots"
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class KeySetProblem(ValueError):
    """A key set we will not use, or cannot get; the text says why, in one line."""


class KeySetBusy(Exception):
    """This request may not fetch now: too many fetches from its address
    (429) or at once in this process (503). Says nothing about the set."""

    def __init__(self, status: int = 503, retry_after: int = BUSY_RETRY_SECONDS):
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


def parse_key_set(data: Any, published: bool = False) -> KeySet:
    """A JWK Set of public asymmetric signing keys, or :class:`KeySetProblem`.

    A set given to us (``jwks``) must hold only such keys, so its maker hears
    of a mistake at once. A set ``published`` at a URL for many relying
    parties (an identity provider's) may hold others beside them, encryption
    keys say, or certificates: those are left out, and only a private key
    refuses the whole set (it is no longer a secret).
    """
    limit, most = (
        (MAX_PUBLISHED_BYTES, MAX_PUBLISHED_KEYS)
        if published
        else (
            MAX_SET_BYTES,
            MAX_KEYS,
        )
    )
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeySetProblem("a JWK Set is an object with a 'keys' list")
    try:
        # Stored as JSONB: no NaN, no NUL, no lone surrogate; and small.
        text = json.dumps(data, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        raise KeySetProblem("the JWK Set is not plain JSON") from None
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise KeySetProblem(f"a JWK Set here is at most {limit} bytes")
    # JSON writes a NUL as an escape, which Postgres's JSONB refuses too.
    if not is_storable(text) or "\\u0000" in text:
        raise KeySetProblem("the JWK Set holds characters that cannot be kept")
    keys = data["keys"]
    if not 0 < len(keys) <= most:
        raise KeySetProblem(f"a JWK Set here holds 1 to {most} keys")
    if published:
        keys = [key for key in keys if _usable(key)]
        if not keys:
            raise KeySetProblem("the JWK Set holds no key that signs as accepted here")
    for key in keys:
        _check_public_key(key)
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError) as exc:
        raise KeySetProblem("a key in the set cannot be read") from exc


def _usable(key: Any) -> bool:
    """Whether a published key is one to keep; a private one refuses all."""
    if isinstance(key, dict) and _PRIVATE_MEMBERS & key.keys():
        raise KeySetProblem("the set holds a private key; publish public keys only")
    try:
        _check_public_key(key)
    except KeySetProblem:
        return False
    return True


def _check_public_key(key: Any) -> None:
    if not isinstance(key, dict):
        raise KeySetProblem("each key is a JSON object")
    kty = key.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        raise KeySetProblem("only RSA, EC and OKP public keys are accepted")
    if _PRIVATE_MEMBERS & key.keys():
        raise KeySetProblem("the set holds a private key; publish public keys only")
    if kty in _CURVES and key.get("crv") not in _CURVES[kty]:
        raise KeySetProblem("an unsupported curve")
    if key.get("use", "sig") != "sig":
        raise KeySetProblem("a key whose 'use' is not 'sig'")
    alg = key.get("alg")
    if alg is not None and alg not in ALGORITHMS:
        raise KeySetProblem("a key names an algorithm not accepted here")
    kid = key.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise KeySetProblem("a key id ('kid') is a string")
    if kty == "RSA":
        _check_rsa(key)


def _check_rsa(key: dict) -> None:
    """RFC 7518 §3.3: at least 2048 bits; and no more than 4096, with the
    usual exponent, so that no key makes a signature costly to check
    (checked before joserfc reads the key, which only warns of short ones)."""
    modulus, exponent = _big_integer(key.get("n")), _big_integer(key.get("e"))
    if modulus is None or exponent is None:
        raise KeySetProblem("an RSA key needs 'n' and 'e'")
    if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
        raise KeySetProblem(f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    if exponent != RSA_EXPONENT:
        raise KeySetProblem(f"RSA keys must have the exponent {RSA_EXPONENT}")


def _big_integer(value: Any) -> int | None:
    """An unsigned integer in base64url (RFC 7518 §2, Base64urlUInt)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_INTEGER_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        return None
    return int.from_bytes(raw, "big")


def parse_key_set_text(text: str | bytes, published: bool = False) -> KeySet:
    """:func:`parse_key_set` of JSON text."""
    if len(text) > (MAX_PUBLISHED_BYTES if published else MAX_SET_BYTES):
        raise KeySetProblem("the JWK Set is too large")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise KeySetProblem("the JWK Set is not JSON") from exc
    return parse_key_set(data, published)


def fetch_policy() -> FetchPolicy:
    """Where key sets may be fetched from: where metadata documents may."""
    settings = current_settings()
    return FetchPolicy(
        settings.cimd_allow_loopback, settings.cimd_allowed_hosts, MAX_PUBLISHED_BYTES
    )


def check_key_set_url(url: Any) -> None:
    """Refuse a ``jwks_uri`` that could never be fetched (:class:`KeySetProblem`)."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise KeySetProblem(f"the key set URL is 1 to {MAX_URL_LENGTH} characters")
    try:
        check_url(url, fetch_policy())
    except FetchProblem as problem:
        raise KeySetProblem(f"the key set URL is refused ({problem.code})") from None


def has_key(key_set: KeySet, kid: str | None) -> bool:
    """Whether ``key_set`` can answer for a signature naming ``kid``."""
    if kid is None:
        return True
    return any(key.kid == kid for key in key_set.keys)


def init_app(app: Flask) -> None:
    # Sets an operator or a signed-in person registered (trusted issuers',
    # service clients') fetch in slots of their own, so clients from open
    # registration with slow URLs cannot keep them waiting.
    app.extensions[_SLOTS] = {
        vetted: threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)
        for vetted in (True, False)
    }


def key_set_at(url: str, kid: str | None, vetted: bool = False) -> KeySet:
    """The key set published at ``url``, fresh enough to hold ``kid``.

    ``vetted``: the URL was registered by an operator or a signed-in person,
    not through open registration. One instance fetches a set at a time;
    the others wait for what it finds. Raises :class:`KeySetProblem` (the
    set cannot be had or used) or :class:`KeySetBusy`.
    """
    redis = get_redis()
    digest = hashlib.sha256(url.encode()).hexdigest()
    cache_key = "jwks:" + digest
    cached = redis.get(cache_key)
    if cached == _FAILED:
        raise KeySetProblem("the key set could not be fetched lately")
    if cached is not None:
        key_set = parse_key_set_text(cached, published=True)
        if has_key(key_set, kid):
            return key_set
        # Rotated, perhaps: fetch again, but not on every unknown kid.
        if not redis.set("jwks:refetch:" + digest, "1", nx=True, ex=REFETCH_SECONDS):
            return key_set
        return _fetch_once(url, digest, vetted, stale=key_set)
    return _fetch_once(url, digest, vetted)


def _fetch_once(
    url: str, digest: str, vetted: bool, stale: KeySet | None = None
) -> KeySet:
    """Fetch under the URL's lock; without it, wait for the holder's result.

    With a ``stale`` set (a refetch for an unknown key id) a failure keeps
    it, and another instance's refetch is not waited for.
    """
    redis = get_redis()
    cache_key, lock = "jwks:" + digest, "jwks:lock:" + digest
    token = secrets.token_hex(16)
    if not redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return stale if stale is not None else _wait_for(cache_key)
    try:
        body, seconds = _fetch(url, vetted)
        try:
            if body is None:
                raise KeySetProblem("the key set could not be fetched")
            key_set = parse_key_set_text(body, published=True)
        except KeySetProblem:
            if stale is not None:
                return stale
            redis.set(cache_key, _FAILED, ex=FAILURE_CACHE_SECONDS)
            raise
        redis.set(cache_key, body, ex=seconds)
        return key_set
    finally:
        get_script(_RELEASE)(keys=[lock], args=[token])


def _wait_for(cache_key: str) -> KeySet:
    """Poll for the holder's result, no longer than it may hold the lock."""
    redis = get_redis()
    end = time.monotonic() + LOCK_SECONDS
    while time.monotonic() < end:
        cached = redis.get(cache_key)
        if cached == _FAILED:
            raise KeySetProblem("the key set could not be fetched")
        if cached is not None:
            return parse_key_set_text(cached, published=True)
        time.sleep(WAIT_STEP)
    raise KeySetProblem("the key set could not be fetched in time")


def _fetch(url: str, vetted: bool) -> tuple[str | None, int]:
    """The set's text and how long to keep it; ``None`` when it failed.

    Held to the limits of document fetches: so many per source address (the
    same budget), so many at once per process.
    """
    limit = current_settings().cimd_fetch_rate_limit
    retry_after = spend(limit, FETCH_RATE_KEY, client_address())
    if retry_after is not None:
        raise KeySetBusy(429, retry_after)
    slots: threading.BoundedSemaphore = current_app.extensions[_SLOTS][vetted]
    if not slots.acquire(blocking=False):
        raise KeySetBusy
    try:
        fetched = fetch_document(url, fetch_policy())
        return fetched.body.decode("utf-8"), cache_seconds(fetched.cache_control)
    except FetchBusy:
        raise KeySetBusy from None
    except (FetchProblem, UnicodeDecodeError) as problem:
        log.warning("key set %s refused: %s", url, getattr(problem, "code", problem))
        return None, FAILURE_CACHE_SECONDS
    finally:
        slots.release()
