"""GitHub's preset: OAuth without OpenID Connect, so the REST API says who.

GitHub documents ``GET /user`` (the numeric ``id`` never changes, whereas the
``login`` can be renamed and then taken by someone else) and
``GET /user/emails`` (each address with ``primary`` and ``verified``). The
identity is keyed by the numeric id; only the primary address, and only when
verified, counts as the person's email.
"""

from __future__ import annotations

from typing import Any

from .config_providers import ProviderSettings
from .upstream_identity import (
    SignInFailure,
    UpstreamIdentity,
    email_domain,
    verified_email,
)

#: GitHub's REST API version these answers are read as.
API_VERSION = {"X-GitHub-Api-Version": "2022-11-28", "Accept": "application/json"}


def github_identity(
    client: Any, provider: ProviderSettings, token: dict[str, Any]
) -> UpstreamIdentity:
    """The GitHub account behind ``token``; raise :class:`SignInFailure`."""
    user = _get(client, "user", token)
    account_id = user.get("id") if isinstance(user, dict) else None
    if type(account_id) is not int or account_id <= 0:
        raise SignInFailure("token", provider.name)
    email = _primary_verified(_get(client, "user/emails", token))
    return UpstreamIdentity(
        provider=provider.name,
        issuer=provider.issuer,
        subject=str(account_id),
        email=email,
        domains=frozenset({email_domain(email)} if email else ()),
        account_email=email,
    )


def _get(client: Any, path: str, token: dict[str, Any]) -> Any:
    response = client.get(path, token=token, headers=API_VERSION)
    response.raise_for_status()
    return response.json()


def _primary_verified(emails: Any) -> str | None:
    if not isinstance(emails, list):
        return None
    for entry in emails:
        if isinstance(entry, dict) and entry.get("primary") is True:
            return verified_email(entry.get("email"), entry.get("verified") is True)
    return None
