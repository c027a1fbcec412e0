"""Client ID Metadata Documents: a ``client_id`` that is a URL to its metadata.

draft-ietf-oauth-client-id-metadata-document, as the MCP authorization spec
profiles it. The verdict on a URL (a good document, or why not) is kept in
Redis for as long as the document's ``Cache-Control`` asks, within bounds, so
a fleet fetches once and a bad document cannot make us hammer its host; one
instance fetches while the others wait for its verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from authlib.oauth2.rfc7591.errors import InvalidClientMetadataError
from flask import g
from flask_babel import gettext as _
from sqlalchemy.dialects.postgresql import Insert, insert

from ..config import current_settings
from ..models import OAuthClient, utcnow
from ..redis_store import get_redis, get_script
from .client_metadata_fetch import MAX_BYTES, FetchPolicy, FetchProblem, check_url
from .client_metadata_fetch import fetch as fetch_document
from .clients import DOCUMENT_SOURCE, Client
from .redirect_uris import browser_host, redirect_uri_problem
from .registration import _client_name

log = logging.getLogger(__name__)

#: Longest URL accepted: the width of ``oauth_clients.client_id``.
MAX_URL_LENGTH = 128
#: Bounds on how long a good document is trusted (seconds).
MIN_CACHE_SECONDS = 300
MAX_CACHE_SECONDS = 86400
#: How long a failure is remembered: short, but a bad host is not hammered.
FAILURE_CACHE_SECONDS = 60
#: Longest a fetch may hold the lock; beyond the fetch deadline.
LOCK_SECONDS = 10
#: Same limit as registration (app/oauth/registration.py).
MAX_REDIRECT_URIS = 20
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]+)\"?\s*(?:,|$)", re.I)
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class ClientDocument:
    """What a good document says, reduced to what this service uses."""

    client_id: str
    client_name: str
    redirect_uris: list[str]


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


def is_document_url(client_id: str) -> bool:
    """Whether ``client_id`` names a metadata document rather than a registration."""
    return client_id.startswith(("https://", "http://"))


def load_document(url: str) -> ClientDocument | None:
    """The good document at ``url``, or ``None``; :func:`verdict` says why not."""
    return verdict(url).document


def verdict(url: str) -> Verdict:
    """The verdict on ``url``, looked up at most once per request."""
    memo = g.setdefault("client_documents", {})
    if url not in memo:
        memo[url] = _verdict(url)
    return memo[url]


def _verdict(url: str) -> Verdict:
    settings = current_settings()
    policy = FetchPolicy(settings.cimd_allow_loopback, settings.cimd_allowed_hosts)
    if len(url) > MAX_URL_LENGTH:
        return Verdict(problem="url_length", args={"limit": MAX_URL_LENGTH})
    try:
        # Checked before the cache, so a change of settings applies at once.
        check_url(url, policy)
    except FetchProblem as problem:
        return Verdict(problem=problem.code, args=problem.args_)
    key = hashlib.sha256(url.encode()).hexdigest()
    cached = get_redis().get("cimd:verdict:" + key)
    if cached is not None:
        return Verdict.loads(cached)
    return _fetch_once(url, policy, key)


def _fetch_once(url: str, policy: FetchPolicy, key: str) -> Verdict:
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
    """Block on the holder's wake-up (each waiter passes it on), then read."""
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


def cache_seconds(cache_control: str) -> int:
    """``max-age`` clamped to the bounds; the minimum when absent or ``no-store``."""
    match = _MAX_AGE.search(cache_control)
    seconds = int(match[1]) if match else 0
    return max(MIN_CACHE_SECONDS, min(MAX_CACHE_SECONDS, seconds))


def parse_document(url: str, body: bytes) -> ClientDocument:
    """Hold a fetched document to the draft's rules (§4.1); raise FetchProblem."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FetchProblem("not_json") from None
    if not isinstance(data, dict):
        raise FetchProblem("not_json")
    if data.get("client_id") != url:
        raise FetchProblem("client_id_mismatch")
    # A document is public; a secret in it is known to everyone (§4.1).
    if "client_secret" in data:
        raise FetchProblem("client_secret")
    if data.get("token_endpoint_auth_method") not in (None, "none"):
        raise FetchProblem("auth_method")
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        raise FetchProblem("redirect_uris")
    for uri in uris:
        if redirect_uri_problem(uri):
            raise FetchProblem("redirect_uri", uri=str(uri)[:200])
    try:
        # Absent, the name is the host: the one thing the document proves.
        name = _client_name(data) if data.get("client_name") else browser_host(url)
    except InvalidClientMetadataError:
        raise FetchProblem("client_name") from None
    return ClientDocument(url, name, list(dict.fromkeys(uris)))


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
            "The metadata document's token_endpoint_auth_method must be 'none'."
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
    result = verdict(client_id)
    return describe(result) if result.problem else None


def document_client_row(client: Client) -> Insert | None:
    """The statement keeping a metadata-document client's row, or ``None``.

    Grants refer to ``oauth_clients``; the row also names the client on the
    account page, refreshed from its document. Registered clients are left
    alone (``None``).
    """
    if client.document_host is None:
        return None
    row = client.row
    values = {
        "client_name": row.client_name,
        "redirect_uris": row.redirect_uris,
        "grant_types": row.grant_types,
        "response_types": row.response_types,
        "token_endpoint_auth_method": row.token_endpoint_auth_method,
        "scope": row.scope,
    }
    statement = insert(OAuthClient).values(
        client_id=row.client_id,
        client_secret_hash=None,
        registered_from=DOCUMENT_SOURCE,
        created_at=utcnow(),
        **values,
    )
    return statement.on_conflict_do_update(
        index_elements=[OAuthClient.client_id],
        set_=values,
        where=OAuthClient.registered_from == DOCUMENT_SOURCE,
    )
