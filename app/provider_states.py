"""Sign-ins in flight at an identity provider: ``state`` kept in Redis.

Authlib's Flask client keeps what a callback needs (the PKCE verifier, the
``nonce``, the redirect URI) under the ``state`` it sends. By default that is
the cookie session, which a copied cookie replays. Here it lives in Redis for
a few minutes, is taken out in one ``GETDEL`` (single use, whatever instances
race), and only the browser that started the sign-in may finish it: the
record carries a digest of a random value kept in that browser's session.
A callback carrying another browser's ``state`` (login CSRF, or a code
stolen in flight) finds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from authlib.integrations.flask_client import FlaskIntegration

from .redis_store import get_redis

#: Seconds a sign-in may spend at the provider before it must start again.
STATE_TTL = 600
#: The session entry naming this browser to its sign-ins in flight.
BROWSER = "signin_browser"
#: Longer ``state`` values are not ours (we send 30 characters).
MAX_STATE_LENGTH = 128


def _key(state: str) -> str:
    return "signin:state:" + hashlib.sha256(state.encode()).hexdigest()


def _digest(browser: str) -> str:
    return hashlib.sha256(browser.encode()).hexdigest()


class BrowserBoundStates(FlaskIntegration):
    """Authlib's store of ``state`` data, in Redis and bound to the browser."""

    expires_in = STATE_TTL

    def set_state_data(self, session: Any, state: str, data: dict) -> None:
        browser = session.get(BROWSER)
        if not isinstance(browser, str):
            browser = session[BROWSER] = secrets.token_urlsafe(16)
        record = {"provider": self.name, "browser": _digest(browser), "data": data}
        get_redis().set(_key(state), json.dumps(record), ex=self.expires_in)

    def get_state_data(self, session: Any, state: Any) -> dict | None:
        """Take the data of ``state`` out for good; ``None`` unless it is this
        browser's, for this provider, and still in time."""
        if not isinstance(state, str) or not 0 < len(state) <= MAX_STATE_LENGTH:
            return None
        raw = get_redis().getdel(_key(state))
        browser = session.get(BROWSER)
        if raw is None or not isinstance(browser, str):
            return None
        record = json.loads(raw)
        if record.get("provider") != self.name:
            return None
        if not hmac.compare_digest(record.get("browser", ""), _digest(browser)):
            return None
        data = record.get("data")
        return data if isinstance(data, dict) else None

    def clear_state_data(self, session: Any, state: Any) -> None:
        """Nothing left to clear: :meth:`get_state_data` took it out."""
