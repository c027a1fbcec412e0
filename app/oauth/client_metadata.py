"""Client ID Metadata Documents: a ``client_id`` that is a URL to its metadata.

draft-ietf-oauth-client-id-metadata-document, as the MCP authorization spec
profiles it. The verdict on a URL (a good document, or why not) is kept in
Redis for as long as the document's ``Cache-Control`` asks, within bounds, so
a fleet fetches once and a bad document cannot make us hammer its host; one
instance fetches while the others wait for its verdict.

Only the authorization endpoint fetches (:func:`look_up`), and only so many
times per source address and so many at once per process; every other
endpoint takes the verdict already known (:func:`known_verdict`), and without
one the stored row of a client a person approved (app/oauth/clients.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Flask, current_app, g
from flask_babel import gettext as _

from ..config import current_settings
from ..rate_limits import client_address, spend
from ..redis_store import get_redis, get_script
from .client_metadata_fetch import (
    DEADLINE,
    MAX_BYTES,
    FetchBusy,
    FetchPolicy,
    FetchProblem,
    check_url,
)
from .client_metadata_fetch import fetch as fetch_document
from .client_metadata_parse import ClientDocument, cache_seconds, parse_document

log = logging.getLogger(__name__)

#: Longest URL accepted: the width of ``oauth_clients.client_id``.
MAX_URL_LENGTH = 128
#: How long a failure is remembered: short, but a bad host is not hammered.
FAILURE_CACHE_SECONDS = 60
#: How long one instance holds the lock while it fetches, and so the longest
#: the others wait for its verdict: the fetch's hard limit, plus time to judge
#: the document and store the verdict. The lock cannot expire mid-fetch.
LOCK_SECONDS = math.ceil(DEADLINE) + 2
#: Requests per process that may fetch a document, or wait for another
#: instance's fetch, at once; the rest are refused at once rather than queued.
#: gunicorn gives a process 4 threads (gunicorn.conf.py): two stay free.
MAX_CONCURRENT_FETCHES = 2
#: Retry-After when refused for that: by then a fetch under way has ended.
BUSY_RETRY_SECONDS = LOCK_SECONDS
#: The rate limit's key: fetch-triggering requests per source address.
FETCH_RATE_KEY = "cimd-fetch"
_SLOTS = "cimd_fetch_slots"
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class FetchRefused(Exception):
    """This request may not fetch now: too many from its address (429) or too
    many at once here (503). Says nothing about the document; never cached."""

    def __init__(self, status: int, retry_after: int) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Verdict:
    document: ClientDocument | None = None
    problem: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> Verdict:
        data = json.loads(text)
        document = data["document"]
        return cls(
            ClientDocument(**document) if document else None,
            data["problem"],
            data["args"],
        )


def init_app(app: Flask) -> None:
    app.extensions[_SLOTS] = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)


def is_document_url(client_id: str) -> bool:
    """Whether ``client_id`` names a metadata document rather than a registration."""
    return client_id.startswith(("https://", "http://"))


def look_up(client_id: str | None) -> Verdict | None:
    """The verdict on the document ``client_id`` names, fetched if no instance
    has yet; ``None`` if it names none.

    Only the authorization endpoint calls this; the verdict stays with the
    request, so the client lookups that follow (:func:`known_verdict`) see it.
    Raises :class:`FetchRefused`.
    """
    if not (
        client_id
        and is_document_url(client_id)
        and current_settings().client_metadata_documents
    ):
        return None
    known = known_verdict(client_id)
    if known is None:
        known = _fetch_once(client_id, _policy(), _key(client_id))
        _memo()[client_id] = known
    return known


def known_verdict(url: str) -> Verdict | None:
    """The verdict on ``url`` this request or the cache holds; ``None`` if none.

    Never fetches: that is for :func:`look_up` alone.
    """
    memo = _memo()
    if url not in memo:
        known = _known(url)
        if known is None:
            return None
        memo[url] = known
    return memo[url]


def _memo() -> dict[str, Verdict]:
    """The verdicts this request reached. Authlib asks for the client by id
    alone, so the authorization endpoint's verdict reaches it through here."""
    return g.setdefault("client_documents", {})


def _policy() -> FetchPolicy:
    settings = current_settings()
    return FetchPolicy(settings.cimd_allow_loopback, settings.cimd_allowed_hosts)


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _known(url: str) -> Verdict | None:
    if len(url) > MAX_URL_LENGTH:
        return Verdict(problem="url_length", args={"limit": MAX_URL_LENGTH})
    try:
        # Checked before the cache, so a change of settings applies at once.
        check_url(url, _policy())
    except FetchProblem as problem:
        return Verdict(problem=problem.code, args=problem.args_)
    cached = get_redis().get("cimd:verdict:" + _key(url))
    return Verdict.loads(cached) if cached is not None else None


def _fetch_once(url: str, policy: FetchPolicy, key: str) -> Verdict:
    """Fetch, or wait for another instance's fetch, if this request may."""
    limit = current_settings().cimd_fetch_rate_limit
    retry_after = spend(limit, FETCH_RATE_KEY, client_address())
    if retry_after is not None:
        raise FetchRefused(429, retry_after)
    slots: threading.BoundedSemaphore = current_app.extensions[_SLOTS]
    if not slots.acquire(blocking=False):
        raise FetchRefused(503, BUSY_RETRY_SECONDS)
    try:
        return _fetch_under_lock(url, policy, key)
    except FetchBusy:
        raise FetchRefused(503, BUSY_RETRY_SECONDS) from None
    finally:
        slots.release()


def _fetch_under_lock(url: str, policy: FetchPolicy, key: str) -> Verdict:
    """Fetch under a lock; without it, wait for the holder's verdict."""
    redis = get_redis()
    lock, done = "cimd:lock:" + key, "cimd:done:" + key
    token = secrets.token_hex(16)
    if not redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return _wait_for(key)
    try:
        redis.delete(done)  # a wake-up left from an earlier round means nothing
        result, seconds = _fetch_and_judge(url, policy)
        redis.set("cimd:verdict:" + key, result.dumps(), ex=seconds)
        redis.rpush(done, "1")
        redis.expire(done, LOCK_SECONDS)
    finally:
        get_script(_RELEASE)(keys=[lock], args=[token])
    return result


def _wait_for(key: str) -> Verdict:
    """Block on the holder's wake-up (each waiter passes it on), then read.

    No longer than the lock lasts: by then the holder has stored its verdict
    or is gone.
    """
    redis = get_redis()
    done = "cimd:done:" + key
    end = time.monotonic() + LOCK_SECONDS
    while True:
        cached = redis.get("cimd:verdict:" + key)
        if cached is not None:
            return Verdict.loads(cached)
        if time.monotonic() > end:
            return Verdict(problem="timeout")
        # Under the Redis client's socket timeout (2 s).
        if redis.blpop([done], timeout=1) is not None:
            redis.rpush(done, "1")


def _fetch_and_judge(url: str, policy: FetchPolicy) -> tuple[Verdict, int]:
    try:
        fetched = fetch_document(url, policy)
        document = parse_document(url, fetched.body)
    except FetchProblem as problem:
        log.warning("client metadata document %s refused: %s", url, problem.code)
        return Verdict(problem=problem.code, args=problem.args_), FAILURE_CACHE_SECONDS
    return Verdict(document), cache_seconds(fetched.cache_control)


def describe(result: Verdict) -> str:
    """Say, in the person's language, why a document cannot be used."""
    messages = {
        "url_length": _("The client_id URL is longer than %(limit)s characters."),
        "url_form": _("The client_id is not a URL written as a browser reads it."),
        "url_fragment": _("The client_id URL must not contain a fragment."),
        "url_userinfo": _("The client_id URL must not contain user information."),
        "url_dot_segments": _("The client_id URL must not contain dot segments."),
        "url_path": _("The client_id URL must have a path."),
        "url_scheme": _("The client_id URL must use https."),
        "host_not_allowed": _("Metadata documents from %(host)s are not accepted."),
        "resolve": _("The host %(host)s of the client_id URL was not found."),
        "address": _(
            "The host %(host)s resolves to %(address)s, an address this server "
            "does not connect to."
        ),
        "connect": _("The client's metadata document could not be fetched."),
        "timeout": _("The client's metadata document took too long to fetch."),
        "redirect": _(
            "The client_id URL answered with a redirect (HTTP %(status)s); "
            "redirects are not followed."
        ),
        "status": _("The client_id URL answered with HTTP %(status)s."),
        "encoding": _("The client's metadata document came compressed."),
        "too_large": _("The client's metadata document exceeds %(limit)s bytes."),
        "not_json": _("The client's metadata document is not a JSON object."),
        "client_id_mismatch": _(
            "The metadata document's client_id differs from its URL."
        ),
        "client_secret": _("The metadata document must not contain a client_secret."),
        "auth_method": _(
            "The metadata document's token_endpoint_auth_method must be 'none'"
            " (or its token_endpoint_auth_methods_supported must include it)."
        ),
        "redirect_uris": _(
            "The metadata document must list its redirect_uris (at most 20)."
        ),
        "redirect_uri": _(
            "The metadata document lists an unacceptable redirect URI: %(uri)s"
        ),
        "client_name": _("The metadata document's client_name is not acceptable."),
    }
    template = messages.get(result.problem or "", messages["connect"])
    return template % {"limit": MAX_BYTES, **result.args}


def problem_text(client_id: str) -> str | None:
    """Why the document ``client_id`` names cannot be used; ``None`` if it can,
    or if ``client_id`` names no document."""
    if not (
        is_document_url(client_id) and current_settings().client_metadata_documents
    ):
        return None
    result = known_verdict(client_id)
    return describe(result) if result is not None and result.problem else None
