"""``flask --app app idps trust|list|distrust``: the identity providers whose
identity assertions (ID-JAG) are believed (docs/machines.md)."""

from __future__ import annotations

import json

import click

from . import trusted_issuers
from .cli_group import OperatorGroup
from .db import db

idps_cli = OperatorGroup(
    "idps", help="Manage the identity issuers trusted for enterprise sign-in."
)


@idps_cli.command("trust")
@click.argument("issuer")
@click.option("--jwks-uri", required=True, help="Where the issuer's keys are.")
@click.option(
    "--allow-public-clients",
    is_flag=True,
    help="Let public clients present its assertions too.",
)
@click.option(
    "--email-domain",
    "email_domains",
    multiple=True,
    help="A person it names by a verified email of this domain may be an "
    "existing account (repeatable; never for an issuer people sign in with).",
)
def trust_command(
    issuer: str,
    jwks_uri: str,
    allow_public_clients: bool,
    email_domains: tuple[str, ...],
) -> None:
    """Trust ISSUER's identity assertions (again, with these settings)."""
    try:
        with db.transaction():
            trusted_issuers.trust(issuer, jwks_uri, allow_public_clients, email_domains)
    except trusted_issuers.IssuerProblem as problem:
        raise click.ClickException(str(problem)) from None
    click.echo(issuer)


@idps_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_command(as_json: bool) -> None:
    """List the trusted issuers."""
    with db.transaction():
        found = trusted_issuers.list_all()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "issuer": t.issuer,
                        "jwks_uri": t.jwks_uri,
                        "allow_public_clients": t.allow_public_clients,
                        "email_domains": list(t.email_domains),
                    }
                    for t in found
                ],
                indent=2,
            )
        )
        return
    for t in found:
        public = "public clients allowed" if t.allow_public_clients else "confidential"
        domains = ",".join(t.email_domains) or "-"
        click.echo(f"{t.issuer}\t{t.jwks_uri}\t{public}\t{domains}")


@idps_cli.command("distrust")
@click.argument("issuer")
def distrust_command(issuer: str) -> None:
    """Stop believing ISSUER's assertions."""
    with db.transaction():
        removed = trusted_issuers.distrust(issuer)
    if not removed:
        raise click.ClickException(f"{issuer!r} is not trusted")
    click.echo(f"distrusted {issuer}")
