"""What every way of signing in ends in: a fresh session, the audit line, the
device cookie, and the way on."""

from __future__ import annotations

from flask import Response

from . import audit
from .config_providers import ProviderSettings
from .device_cookies import remember_device
from .models import User
from .rate_limits import client_address
from .signin import PASSWORD, begin, is_local_target, issuer_redirect

#: Where people land after signing in when no ``next`` was given.
DEFAULT_TARGET = "/account"


def target_of(value: str | None) -> str:
    """Where a sign-in asked to go (``next``), if it is a path here."""
    return value if value and is_local_target(value) else DEFAULT_TARGET


def complete(
    user: User, target: str, provider: ProviderSettings | None = None
) -> Response:
    """Sign ``user`` in, with the password or through ``provider``, and send
    them on to ``target``, a local path."""
    begin(user, provider.issuer if provider else PASSWORD)
    account = str(user.id)
    audit.record(
        audit.SIGN_IN_SUCCEEDED,
        user_id=user.id,
        account=account,
        address=client_address(),
        method=provider.kind if provider else PASSWORD,
        provider=provider.name if provider else None,
    )
    response = issuer_redirect(target)
    # A browser that signed in, by any method, keeps its way in to the
    # password form when strangers spend the account's shared budget.
    remember_device(response, account)
    return response
