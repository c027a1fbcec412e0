"""Scopes: what a token may do, declared once, below everything that uses them.

Resources (:mod:`.resources`), registration, the consent page, API keys and
discovery all read them from here; this module imports nothing of the app.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask_babel import lazy_gettext as _

#: Scopes this service knows, with what each lets a client do (shown on consent).
SCOPE_DESCRIPTIONS = {
    "read": _("Read your data and use read-only tools"),
    "write": _("Change your data and use tools that make changes"),
}
#: Scopes this service knows; a client may ask for any of them.
SCOPES = tuple(SCOPE_DESCRIPTIONS)
#: OpenID's scope for refresh tokens: accepted and ignored, since refresh
#: tokens do not depend on it (docs/reference.md, "Refresh tokens"); never
#: granted as a scope.
OFFLINE_ACCESS = "offline_access"


def within(scopes: Iterable[str], ceiling: str | None) -> list[str]:
    """``scopes`` less any the space-separated ``ceiling`` lacks.

    ``None``: nothing limits them.
    """
    if ceiling is None:
        return list(scopes)
    allowed = set(ceiling.split())
    return [scope for scope in scopes if scope in allowed]


def scope_tokens(scope: str | None) -> list[str]:
    """The scope-tokens of a requested ``scope``, each once, in order.

    RFC 6749 §3.3: tokens are separated by spaces (``%x20``) alone, so a tab,
    a newline or a no-break space is part of a token, which then names no
    scope. Runs of spaces are forgiven.
    """
    return list(dict.fromkeys(token for token in (scope or "").split(" ") if token))
