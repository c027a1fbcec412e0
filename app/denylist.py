"""The denylist: the one path by which access tokens end before they expire.

Access tokens are self-contained JWTs, so ending one early means remembering,
in Redis and only until the longest-lived token could expire, what is no
longer good. Each token names what it was issued under, so most entries are
plain existence markers keyed by an id:

- ``jti``: one token (a replayed code's, for instance);
- ``consent_id``: everything issued under one consent, which a re-approval
  replaces with a fresh id, so no time comparison is ever needed;
- ``api_key_id``: everything exchanged from one API key.

Only disabling a person needs a time cutoff, because their tokens share no
id narrower than their ``sub``. :func:`is_denied` checks every entry that
could apply to a token: in this process's copy of the denylist
(:mod:`app.denylist_view`) while that copy is provably current, otherwise in
one ``MGET``. Every write also announces the marker to those copies, in the
same round trip.

Ordering with Postgres (see :mod:`app.db`): deny here before the database
change commits, so a Redis failure leaves the change uncommitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app

from .config import current_settings
from .denylist_view import CHANNEL, DenylistView, announcement, eviction
from .redis_store import get_redis

#: Extra seconds an entry outlives the tokens it covers (clock skew between hosts).
MARKER_MARGIN = 60


def _marker_ttl() -> int:
    return current_settings().access_token_ttl + MARKER_MARGIN


def _jti_key(jti: str) -> str:
    return f"denied:jti:{jti}"


def _consent_key(consent_id: str) -> str:
    return f"denied:consent:{consent_id}"


def _api_key_key(key_id: str) -> str:
    return f"denied:api_key:{key_id}"


def _user_key(user_id: str) -> str:
    return f"denied:user:{user_id}"


_view_lock = threading.Lock()


def _write(markers: list[tuple[str, str]], ttl: int | None = None) -> None:
    """Store markers and announce each to every process's copy, in one round trip."""
    ttl = _marker_ttl() if ttl is None else ttl
    pipeline = get_redis().pipeline(transaction=False)
    for key, value in markers:
        pipeline.set(key, value, ex=ttl)
        pipeline.publish(CHANNEL, announcement(key, value, ttl))
    pipeline.execute()
    view = current_app.extensions.get("denylist_view")
    if view is not None:
        for key, value in markers:
            view.note(key, value, ttl)


def process_cache(name: str) -> dict[str, Any] | None:
    """A per-process cache kept coherent by :func:`evict`; ``None``: do not cache."""
    return _view().cache(name)


def evict(name: str, entries: list[str]) -> None:
    """Drop ``entries`` from every process's cache ``name`` (one round trip)."""
    if entries:
        pipeline = get_redis().pipeline(transaction=False)
        for entry in entries:
            pipeline.publish(CHANNEL, eviction(name, entry))
        pipeline.execute()


def _view() -> DenylistView:
    extensions = current_app.extensions
    view = extensions.get("denylist_view")
    if view is None:
        with _view_lock:
            view = extensions.get("denylist_view")
            if view is None:
                view = DenylistView(get_redis(), _marker_ttl())
                extensions["denylist_view"] = view
    return view


def deny_token(jti: str, expires_at: int | None = None) -> None:
    """Deny one token until it would have expired anyway."""
    ttl = _marker_ttl() if expires_at is None else int(expires_at - time.time()) + 1
    if ttl > 0:
        _write([(_jti_key(jti), "1")], min(ttl, _marker_ttl()))


def deny_consent(consent_id: str) -> None:
    """Deny every token issued under the consent ``consent_id``."""
    _write([(_consent_key(consent_id), "1")])


def deny_api_keys(key_ids: list[str]) -> None:
    """Deny every token exchanged from each of the API keys ``key_ids``."""
    if key_ids:
        _write([(_api_key_key(key_id), "1") for key_id in key_ids])


def deny_user_until_now(user_id: str) -> None:
    """Deny every token issued so far to ``user_id`` (account disabled)."""
    # Tokens carry whole-second ``iat``; the cutoff covers the current second.
    _write([(_user_key(user_id), str(int(time.time())))])


def is_denied(claims: Mapping[str, Any]) -> bool:
    """Tell whether a token with these (already verified) claims was denied."""
    keys = [_jti_key(str(claims.get("jti", ""))), _user_key(str(claims.get("sub")))]
    if claims.get("consent_id"):
        keys.append(_consent_key(str(claims["consent_id"])))
    if claims.get("api_key_id"):
        keys.append(_api_key_key(str(claims["api_key_id"])))
    values = _view().lookup(keys)
    if values is None:
        values = get_redis().mget(keys)
    jti_marker, user_cutoff, *markers = values
    if jti_marker is not None or any(marker is not None for marker in markers):
        return True
    return user_cutoff is not None and int(claims.get("iat", 0)) <= int(user_cutoff)


def is_user_denied(user_id: str) -> bool:
    """Tell whether ``user_id`` was disabled within the longest token lifetime."""
    key = _user_key(user_id)
    values = _view().lookup([key])
    if values is None:
        values = get_redis().mget([key])
    return values[0] is not None
