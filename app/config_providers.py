"""Identity providers people sign in with, read from ``N_*`` variables.

``SIGN_IN_PROVIDERS`` names the providers; each name ``N`` brings its own
variables (``N_ISSUER``, ``N_CLIENT_ID``, ...), so their names are only known
once that list is read. :mod:`app.config` hands the environment over and
turns :class:`ProviderSettingError` into its one-line start-up failure.

Imports nothing from the app but plain values, so that settings can use it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config_uris import is_loopback_host

#: ``N_ISSUER`` of GitHub, which is OAuth without OpenID Connect.
GITHUB = "github"
#: GitHub's sign-in site; ``github:https://ghe.example.com`` names a GitHub
#: Enterprise Server instead.
GITHUB_WEB = "https://github.com"
#: Kinds of provider: found by OpenID Connect discovery, or the GitHub preset.
OIDC, GITHUB_KIND = "oidc", "github"
#: What is asked of a provider when ``N_SCOPES`` is unset.
DEFAULT_SCOPES = {
    OIDC: ("openid", "email", "profile"),
    # GitHub's documented scopes for the profile and the email addresses.
    GITHUB_KIND: ("read:user", "user:email"),
}
#: A provider's name: lower case, it names variables and a callback path.
NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
#: Paths under ``/login/`` that are not a provider's.
RESERVED_NAMES = frozenset({"link"})
#: RFC 6749 §3.3 ``scope-token``.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: A DNS name as a provider writes an email domain or Google's ``hd``.
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
MAX_LABEL_LENGTH = 64
MAX_ISSUER_LENGTH = 512


class ProviderSettingError(ValueError):
    """One provider variable is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class ProviderSettings:
    """One identity provider, as its ``N_*`` variables configure it."""

    #: The name in ``SIGN_IN_PROVIDERS``, lower-cased; also its callback path.
    name: str
    #: :data:`OIDC` or :data:`GITHUB_KIND`.
    kind: str
    #: The OpenID issuer exactly as the provider spells it (discovery must
    #: answer the same string); for GitHub its web site.
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    #: What the "Continue with ..." button says.
    label: str = ""
    scopes: tuple[str, ...] = ()
    #: Email domains (or Google ``hd`` values, or Entra tenant ids) whose
    #: people get an account at their first sign-in; empty: nobody's.
    allowed_domains: frozenset[str] = frozenset()

    @property
    def discovery_url(self) -> str:
        """OpenID Connect Discovery 1.0 §4: the issuer plus the well-known path."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def api_url(self) -> str:
        """GitHub's REST API: api.github.com, or ``/api/v3`` on a GitHub
        Enterprise Server (GitHub's documented layout)."""
        if self.issuer == GITHUB_WEB:
            return "https://api.github.com"
        return self.issuer + "/api/v3"


def provider_names(value: str) -> tuple[str, ...]:
    """``SIGN_IN_PROVIDERS``: comma-separated names, each used once."""
    names: list[str] = []
    for item in value.split(","):
        name = item.strip().lower()
        if not name:
            continue
        if not NAME.fullmatch(name):
            raise ValueError(
                f"{item.strip()!r} is not a provider name (a letter, then up to "
                "31 letters or digits)"
            )
        if name in RESERVED_NAMES:
            raise ValueError(f"{name} is reserved (a path of the sign-in page)")
        if name in names:
            raise ValueError(f"names {name} twice")
        names.append(name)
    if not names:
        raise ValueError("names no provider")
    return tuple(names)


def load_providers(
    names: tuple[str, ...], environ: Mapping[str, str]
) -> tuple[ProviderSettings, ...]:
    """Read each named provider's variables; raise :class:`ProviderSettingError`."""
    return tuple(_provider(name, environ) for name in names)


def _provider(name: str, environ: Mapping[str, str]) -> ProviderSettings:
    prefix = name.upper() + "_"

    def read(suffix: str, required: bool = False) -> str:
        value = environ.get(prefix + suffix, "").strip()
        if required and not value:
            raise ProviderSettingError(prefix + suffix, "is required but not set")
        return value

    kind, issuer = _issuer(prefix + "ISSUER", read("ISSUER", required=True))
    client_id = read("CLIENT_ID", required=True)
    if len(client_id) > 255 or not client_id.isprintable() or " " in client_id:
        raise ProviderSettingError(
            prefix + "CLIENT_ID", "is malformed: not a client_id"
        )
    label = read("LABEL") or ("GitHub" if kind == GITHUB_KIND else name.capitalize())
    if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ProviderSettingError(
            prefix + "LABEL",
            f"is malformed: at most {MAX_LABEL_LENGTH} printable characters",
        )
    return ProviderSettings(
        name=name,
        kind=kind,
        issuer=issuer,
        client_id=client_id,
        client_secret=read("CLIENT_SECRET", required=True),
        label=label,
        scopes=_scopes(prefix + "SCOPES", read("SCOPES"), kind),
        allowed_domains=_domains(prefix + "ALLOWED_DOMAINS", read("ALLOWED_DOMAINS")),
    )


def _issuer(variable: str, value: str) -> tuple[str, str]:
    """The kind of provider and its issuer (or GitHub site) URL."""
    if value.lower() == GITHUB:
        return GITHUB_KIND, GITHUB_WEB
    kind = OIDC
    if value.lower().startswith(GITHUB + ":"):
        kind, value = GITHUB_KIND, value[len(GITHUB) + 1 :].rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be an absolute https URL, or github"
    # Identities keep the issuer beside the subject (identities.issuer).
    elif len(value) > MAX_ISSUER_LENGTH:
        problem = f"must be at most {MAX_ISSUER_LENGTH} characters"
    elif parts.query or parts.fragment or "?" in value or "#" in value:
        problem = "must not have a query or fragment"
    elif parts.username is not None:
        problem = "must not carry credentials"
    # OpenID Connect Discovery 1.0 §3: the issuer uses https; plain http only
    # for a provider on this machine (development and tests).
    elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
        problem = "must use https unless the host is loopback"
    else:
        return kind, value
    raise ProviderSettingError(variable, f"is malformed: {problem}")


def _scopes(variable: str, value: str, kind: str) -> tuple[str, ...]:
    if not value:
        return DEFAULT_SCOPES[kind]
    scopes = tuple(dict.fromkeys(value.replace(",", " ").split()))
    for scope in scopes:
        if not SCOPE_TOKEN.fullmatch(scope):
            raise ProviderSettingError(
                variable, f"is malformed: {scope!r} is not a scope (RFC 6749 §3.3)"
            )
    # Without openid there is no ID token, so no identity to trust.
    if kind == OIDC and "openid" not in scopes:
        raise ProviderSettingError(variable, "is malformed: must include openid")
    return scopes


def _domains(variable: str, value: str) -> frozenset[str]:
    domains = {item.strip().lower() for item in value.split(",") if item.strip()}
    for domain in domains:
        if DOMAIN.fullmatch(domain) or _is_tenant_id(domain):
            continue
        raise ProviderSettingError(
            variable, f"is malformed: {domain!r} is neither a domain nor a tenant id"
        )
    return frozenset(domains)


def _is_tenant_id(value: str) -> bool:
    """Entra ID's ``tid``: a GUID, written in its usual hyphenated form."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
