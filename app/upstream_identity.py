"""Who an identity provider says signed in, and what of it may be believed.

The identity is the pair (issuer, subject): OpenID Connect Core §5.7 makes
only ``iss`` with ``sub`` stable and unique. An email counts only when the
provider marks it verified, and never from Microsoft Entra ID, where any
tenant's administrator writes any address into ``email`` (the "nOAuth"
takeover); Entra's tenant id ``tid`` stands in for the domain there, as
Google's ``hd`` (the Workspace domain) does beside the email's. An Entra
account made here gets an address that can belong to nobody else
(``<oid>@<tid>.entra.invalid``, RFC 2606), so a claimed address can neither
take an account's place nor keep its owner from having one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .config_providers import ProviderSettings
from .db import is_storable
from .users import is_plausible_email, normalize_email

#: Why a sign-in through a provider failed; the audit trail's ``reason``.
REASONS = (
    "denied",  # the person (or the provider) declined at the provider
    "provider_error",  # the provider answered with another error, or no code
    "state",  # no such sign-in in flight here: replayed, expired, another browser's
    "issuer",  # RFC 9207: the answer names another issuer, or none when it must
    "token",  # the code was refused, or the ID token failed a check
    "unavailable",  # the provider could not be reached, or its discovery is wrong
    "email_unverified",  # no verified email where one is needed
    "domain",  # not a domain (hd, tid) that may have accounts made
    "disabled",  # the account is disabled
    "identity_taken",  # being added to one account, it signs in to another
)
#: Microsoft Entra ID's sign-in hosts, whose ``email`` is never believed.
ENTRA_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
    }
)
#: Entra External ID and B2C tenants' hosts.
ENTRA_HOST_SUFFIXES = (".ciamlogin.com", ".b2clogin.com")
#: Google's issuer, whose ``hd`` names the Workspace domain.
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
MAX_SUBJECT_LENGTH = 255
#: What Entra ID's multi-tenant documents (``common``, ``organizations``)
#: write for the tenant in their issuer; each token names its own.
TENANT_PLACEHOLDER = "{tenantid}"


class SignInFailure(Exception):
    """A sign-in through ``provider`` failed, for one of :data:`REASONS`."""

    def __init__(self, reason: str, provider: str, account: str | None = None) -> None:
        assert reason in REASONS, reason
        super().__init__(reason)
        self.reason = reason
        self.provider = provider
        #: The account concerned, when one is known (a disabled one).
        self.account = account


@dataclass(frozen=True)
class UpstreamIdentity:
    """A person as a provider vouched for them at this sign-in."""

    #: The provider's name in ``SIGN_IN_PROVIDERS``.
    provider: str
    issuer: str
    subject: str
    #: A verified email that may be believed; ``None`` otherwise.
    email: str | None
    #: What ``N_ALLOWED_DOMAINS`` is compared with: the verified email's
    #: domain, Google's ``hd``, Entra's ``tid``.
    domains: frozenset[str]
    #: The email an account made for this identity gets: the verified one,
    #: or for Entra one that can be nobody else's; ``None``: none can be made.
    account_email: str | None = None

    def allowed_by(self, allowed: frozenset[str]) -> bool:
        """Whether a first sign-in may make this person an account."""
        return bool(self.domains & allowed)


def is_entra(issuer: str) -> bool:
    host = urlsplit(issuer).hostname or ""
    return host in ENTRA_HOSTS or host.endswith(ENTRA_HOST_SUFFIXES)


def accepts_discovered_issuer(provider: ProviderSettings, discovered: Any) -> bool:
    """Whether a discovery document names the provider's issuer (OpenID
    Connect Discovery 1.0 §4.3): exactly, or for Entra ID's multi-tenant
    documents, as a template on the same host."""
    if discovered == provider.issuer:
        return True
    return (
        is_entra(provider.issuer)
        and isinstance(discovered, str)
        and TENANT_PLACEHOLDER in discovered
        and urlsplit(discovered).hostname == urlsplit(provider.issuer).hostname
    )


def token_issuer(discovered: str, id_token: Any) -> str | None:
    """The ``iss`` an ID token must carry: the discovered issuer, with Entra's
    tenant placeholder filled from the token's own ``tid``, which the
    signature check that follows then vouches for; ``None``: no tenant."""
    if TENANT_PLACEHOLDER not in discovered:
        return discovered
    tenant = _guid(_unverified_claims(id_token).get("tid"))
    return discovered.replace(TENANT_PLACEHOLDER, tenant) if tenant else None


def _unverified_claims(token: Any) -> dict[str, Any]:
    try:
        payload = str(token).split(".")[1]
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def is_verified(value: Any) -> bool:
    # Some providers (AWS Cognito among them) send the boolean as a string.
    return value is True or value == "true"


def verified_email(value: Any, verified: Any) -> str | None:
    """``value`` normalised, if the provider verified it and it can be an
    account's address here."""
    if not isinstance(value, str) or not is_verified(verified):
        return None
    # ASCII only: lower-casing folds other letters into ASCII ones (the
    # Kelvin sign into k), so one verified address could take another's.
    if not value.isascii() or not is_storable(value):
        return None
    email = normalize_email(value)
    return email if is_plausible_email(email) else None


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


def from_id_token(
    provider: ProviderSettings,
    claims: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    issuer: str | None = None,
) -> UpstreamIdentity:
    """The identity in a checked ID token (and its UserInfo answer); its
    ``issuer`` is the token's (an Entra tenant's), by default the provider's."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise SignInFailure("token", provider.name)
    if not is_storable(subject):
        raise SignInFailure("token", provider.name)
    # OpenID Connect Core §5.3.2: UserInfo about someone else is not believed.
    if userinfo and userinfo.get("sub") != subject:
        raise SignInFailure("token", provider.name)
    merged = {**userinfo, **claims}
    domains: set[str] = set()
    email = account_email = None
    # Entra in any of its clouds: its tokens carry the tenant (tid), and
    # its email claim is never believed.
    if is_entra(provider.issuer) or _guid(claims.get("tid")) is not None:
        tenant = _guid(claims.get("tid"))
        if tenant is not None:
            domains.add(tenant)
            account_email = _entra_address(claims, subject, tenant)
    else:
        email = verified_email(merged.get("email"), merged.get("email_verified"))
        if email is not None:
            domains.add(email_domain(email))
        hosted = claims.get("hd")
        if provider.issuer in GOOGLE_ISSUERS and isinstance(hosted, str) and hosted:
            domains.add(hosted.lower())
        account_email = email
    return UpstreamIdentity(
        provider=provider.name,
        issuer=issuer or provider.issuer,
        subject=subject,
        email=email,
        domains=frozenset(domains),
        account_email=account_email,
    )


def _entra_address(claims: Mapping[str, Any], subject: str, tenant: str) -> str:
    """An address in the reserved ``.invalid`` domain, one per Entra person."""
    # oid is the person's id across the tenant's applications; sub is
    # case-sensitive, so it is hashed rather than lower-cased.
    oid = _guid(claims.get("oid"))
    local = oid or hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"{local}@{tenant}.entra.invalid"


def _guid(value: Any) -> str | None:
    """A GUID (Entra's ``tid`` and ``oid``) in its usual spelling, or ``None``."""
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None
