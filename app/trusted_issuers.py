"""Identity issuers an operator trusts to vouch for people (ID-JAG).

MCP's enterprise-managed authorization: a company's identity provider (Okta
first) issues identity assertions that a client trades here for tokens
(app/oauth/grants/identity_assertion.py). Only issuers registered with
``flask --app app idps trust`` are believed, with the keys at the
``jwks_uri`` given then (fetched under the safe-fetch rules,
app/oauth/key_sets.py). Domain functions only flush: the caller (the CLI)
opens the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from . import audit
from .db import db, is_storable
from .models import TrustedIssuer, utcnow
from .oauth.constants import LOOPBACK_BROWSER_HOSTS
from .oauth.key_sets import check_key_set_url, fetch_policy

#: The width of ``trusted_issuers.issuer``.
MAX_ISSUER_LENGTH = 512


class IssuerProblem(ValueError):
    """Why an issuer cannot be trusted as asked; one line."""


@dataclass(frozen=True)
class Trusted:
    issuer: str
    jwks_uri: str
    allow_public_clients: bool
    #: Verified emails of these domains may name an existing account.
    email_domains: tuple[str, ...] = ()


def _view(row: TrustedIssuer) -> Trusted:
    return Trusted(
        row.issuer,
        row.jwks_uri,
        row.allow_public_clients,
        tuple(row.email_domains or ()),
    )


def find(issuer: str) -> Trusted | None:
    """The trusted issuer ``issuer`` names exactly, if any."""
    if len(issuer) > MAX_ISSUER_LENGTH or not is_storable(issuer):
        return None
    row = db.session.get(TrustedIssuer, issuer)
    return _view(row) if row is not None else None


def list_all() -> list[Trusted]:
    rows = db.session.scalars(select(TrustedIssuer).order_by(TrustedIssuer.issuer))
    return [_view(row) for row in rows]


def trust(
    issuer: str,
    jwks_uri: str,
    allow_public_clients: bool,
    email_domains: tuple[str, ...] = (),
) -> Trusted:
    """Trust ``issuer`` (again, with these keys and these choices)."""
    if not issuer or len(issuer) > MAX_ISSUER_LENGTH or not is_storable(issuer):
        raise IssuerProblem("the issuer is a URL of at most 512 characters")
    _check_issuer(issuer)
    try:
        check_key_set_url(jwks_uri)
    except ValueError as problem:
        raise IssuerProblem(str(problem)) from None
    domains = tuple(dict.fromkeys(_check_domain(d) for d in email_domains))
    values = {
        "jwks_uri": jwks_uri,
        "allow_public_clients": allow_public_clients,
        "email_domains": list(domains),
    }
    db.session.execute(
        insert(TrustedIssuer)
        .values(issuer=issuer, created_at=utcnow(), **values)
        .on_conflict_do_update(index_elements=[TrustedIssuer.issuer], set_=values)
    )
    db.after_commit(
        lambda: audit.record(
            audit.IDENTITY_ISSUER_TRUSTED,
            issuer=issuer,
            jwks_uri=jwks_uri,
            allow_public_clients=allow_public_clients,
            email_domains=list(domains),
        )
    )
    return Trusted(issuer, jwks_uri, allow_public_clients, domains)


def _check_domain(domain: str) -> str:
    """A DNS name in ASCII, lower-cased: an email's domain is compared so."""
    name = domain.strip().lower()
    labels = name.split(".")
    if (
        not name.isascii()
        or len(name) > 253
        or len(labels) < 2
        or not all(label and label.replace("-", "").isalnum() for label in labels)
    ):
        raise IssuerProblem(f"{domain!r} is not a domain name")
    return name


def _check_issuer(issuer: str) -> None:
    """RFC 8414 §2 (as OpenID Connect's): an ``https`` URL with no query or
    fragment, compared byte for byte with the assertions' ``iss``; ``http``
    on loopback only where key sets may be fetched from there (tests)."""
    if any(not 0x21 <= ord(c) <= 0x7E for c in issuer):
        raise IssuerProblem("the issuer URL has spaces or characters beyond ASCII")
    try:
        parts = urlsplit(issuer)
        host = parts.hostname
    except ValueError:
        raise IssuerProblem("the issuer is not a URL") from None
    if not host or parts.query or parts.fragment or "#" in issuer or "@" in issuer:
        raise IssuerProblem("the issuer is an https URL with no query or fragment")
    loopback = (
        fetch_policy().allow_loopback
        and parts.netloc.rsplit(":", 1)[0] in LOOPBACK_BROWSER_HOSTS
    )
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise IssuerProblem("the issuer URL must be https")


def distrust(issuer: str) -> bool:
    """Stop believing ``issuer``; ``False`` if it was not trusted."""
    removed = db.session.execute(
        delete(TrustedIssuer)
        .where(TrustedIssuer.issuer == issuer)
        .returning(TrustedIssuer.issuer)
    ).first()
    if removed is not None:
        db.after_commit(
            lambda: audit.record(audit.IDENTITY_ISSUER_DISTRUSTED, issuer=issuer)
        )
    return removed is not None
