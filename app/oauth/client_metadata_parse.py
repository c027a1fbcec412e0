"""Judge a fetched Client ID Metadata Document (draft §4.1) and how long to trust it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from authlib.oauth2.rfc7591.errors import InvalidClientMetadataError

from .client_metadata_fetch import FetchProblem
from .client_names import client_name
from .redirect_uris import browser_host, redirect_uri_problem

#: Bounds on how long a good document is trusted (seconds).
MIN_CACHE_SECONDS = 300
MAX_CACHE_SECONDS = 86400
#: Same limit as registration (app/oauth/registration.py).
MAX_REDIRECT_URIS = 20
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]+)\"?\s*(?:,|$)", re.I)


@dataclass(frozen=True)
class ClientDocument:
    """What a good document says, reduced to what this service uses."""

    client_id: str
    client_name: str
    redirect_uris: list[str]


def cache_seconds(cache_control: str) -> int:
    """``max-age`` clamped to the bounds; the minimum when absent or ``no-store``."""
    match = _MAX_AGE.search(cache_control)
    seconds = int(match[1]) if match else 0
    return max(MIN_CACHE_SECONDS, min(MAX_CACHE_SECONDS, seconds))


def _public(data: dict) -> bool:
    """Whether the document lets the client authenticate with nothing (it is public).

    One ``token_endpoint_auth_method``, absent or ``none``; or OpenID
    Federation's RP Metadata Choices (§5.1.2), a
    ``token_endpoint_auth_methods_supported`` list, as ChatGPT publishes,
    that offers ``none`` among its choices, which we then make.
    """
    if "token_endpoint_auth_method" in data:
        return data["token_endpoint_auth_method"] in (None, "none")
    choices = data.get("token_endpoint_auth_methods_supported")
    if choices is None:
        return True
    return isinstance(choices, list) and "none" in choices


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
    if not _public(data):
        raise FetchProblem("auth_method")
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        raise FetchProblem("redirect_uris")
    for uri in uris:
        if redirect_uri_problem(uri):
            raise FetchProblem("redirect_uri", uri=str(uri)[:200])
    try:
        # Absent, the name is the host: the one thing the document proves.
        name = client_name(data) if data.get("client_name") else browser_host(url)
    except InvalidClientMetadataError:
        raise FetchProblem("client_name") from None
    return ClientDocument(url, name, list(dict.fromkeys(uris)))
