"""Client authentication at the token endpoint that never fails loudly.

Authlib's built-in methods answer an unknown client with a 400 (docs/reference.md
wants 401 for every failure) and decode the Basic header in a way that raises
on bytes that are not UTF-8. These replacements return the client or ``None``;
Authlib then answers ``401 invalid_client`` with ``WWW-Authenticate: Basic``.
A request that tries two methods at once is refused before any of them runs
(:func:`check_one_method`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749.errors import InvalidRequestError

from .clients import Client

#: Longest credential worth looking at; anything longer cannot be ours.
MAX_CREDENTIAL_LENGTH = 512


def parse_basic_authorization(header: str | None) -> tuple[str, str] | None:
    """Return ``(client_id, client_secret)`` from a Basic header (RFC 6749 §2.3.1)."""
    if not header or len(header) > 2 * MAX_CREDENTIAL_LENGTH:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 §2.3.1: both parts are form-urlencoded before encoding.
    return unquote(client_id), unquote(client_secret)


def check_one_method(request: Any) -> None:
    """Refuse a request that authenticates the client in two ways at once.

    RFC 6749 §2.3: a client MUST NOT use more than one authentication method
    in each request. An Authorization header is one; a ``client_secret`` in the
    form is another, and so is a form ``client_id`` naming a client other than
    the one in a Basic header (§3.2.1 lets a client name itself, nothing more).
    """
    authorization = request.headers.get("Authorization")
    form = request.form
    asserted = "client_assertion" in form or "client_assertion_type" in form
    if asserted and (authorization is not None or "client_secret" in form):
        raise InvalidRequestError("Use only one client authentication method.")
    if authorization is None:
        return
    if "client_secret" in form:
        raise InvalidRequestError("Use only one client authentication method.")
    named = form.get("client_id")
    if named is None:
        return
    credentials = parse_basic_authorization(authorization)
    if credentials is None or credentials[0] != named:
        raise InvalidRequestError("Use only one client authentication method.")


def _usable(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CREDENTIAL_LENGTH


def _with_secret(
    query_client: Callable[[str], Client | None], client_id: Any, secret: Any
) -> Client | None:
    if not (_usable(client_id) and _usable(secret)):
        return None
    client = query_client(client_id)
    if client is None or not client.check_client_secret(secret):
        return None
    return client


def client_secret_basic(query_client: Callable, request: Any) -> Client | None:
    credentials = parse_basic_authorization(request.headers.get("Authorization"))
    if credentials is None:
        return None
    return _with_secret(query_client, *credentials)


def client_secret_post(query_client: Callable, request: Any) -> Client | None:
    form = request.form
    return _with_secret(query_client, form.get("client_id"), form.get("client_secret"))


def none(query_client: Callable, request: Any) -> Client | None:
    form = request.form
    client_id = form.get("client_id")
    # A public client proves nothing but its id; any other credential means the
    # caller meant another method.
    if form.get("client_secret") or request.headers.get("Authorization"):
        return None
    if form.get("client_assertion"):
        return None
    return query_client(client_id) if _usable(client_id) else None


def register(server: Any) -> None:
    server.register_client_auth_method("client_secret_basic", client_secret_basic)
    server.register_client_auth_method("client_secret_post", client_secret_post)
    server.register_client_auth_method("none", none)
