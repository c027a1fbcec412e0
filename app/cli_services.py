"""``flask --app app clients create-service|revoke|list-services``: service
clients, which get tokens with client credentials (docs/machines.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext

from . import audit, service_clients
from .db import db
from .oauth.resources import registry
from .users import find_by_email

#: The largest key file read.
MAX_KEY_FILE_BYTES = 64 * 1024


@click.command("create-service")
@with_appcontext
@click.argument("name")
@click.option("--resource", "resource_uri", required=True, help="Its one resource.")
@click.option("--scopes", default="", help="Its scope ceiling (default: all).")
@click.option("--jwks-uri", help="Where its public keys are (private_key_jwt).")
@click.option(
    "--jwks-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding its public keys, a JWK Set (private_key_jwt).",
)
@click.option("--for", "for_email", help="Act for this person (sub), not itself.")
def create_service_command(
    name: str,
    resource_uri: str,
    scopes: str,
    jwks_uri: str | None,
    jwks_file: Path | None,
    for_email: str | None,
) -> None:
    """Make a service client NAME; print it as JSON (its secret only now)."""
    resource = registry().named(resource_uri)
    if resource is None:
        raise click.ClickException(f"no registered resource is {resource_uri!r}")
    jwks_text = _read_key_file(jwks_file) if jwks_file is not None else None
    try:
        keys = service_clients.keys_from(jwks_text, jwks_uri)
        with db.transaction():
            owner = None
            if for_email is not None:
                owner = find_by_email(for_email)
                if owner is None or not owner.is_active:
                    raise click.ClickException(f"no enabled account is {for_email!r}")
            made = service_clients.create(
                name,
                resource,
                scopes,
                keys,
                owner,
                acts_for_owner=owner is not None,
                actor=audit.OPERATOR,
            )
    except service_clients.ServiceClientProblem as problem:
        raise click.ClickException(str(problem)) from None
    click.echo(json.dumps(made.as_json(), indent=2))


def _read_key_file(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise click.ClickException(f"{path} is larger than a key set can be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{path} is not UTF-8 text") from None


@click.command("revoke")
@with_appcontext
@click.argument("client_id")
def revoke_command(client_id: str) -> None:
    """Revoke the service client CLIENT_ID and end its tokens."""
    with db.transaction():
        revoked = service_clients.revoke(client_id, actor=audit.OPERATOR)
    if not revoked:
        raise click.ClickException(f"no live service client is {client_id!r}")
    click.echo(f"revoked {client_id}")


@click.command("list-services")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_services_command(as_json: bool) -> None:
    """List the live service clients."""
    with db.transaction():
        found = service_clients.list_all()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "client_id": c.client_id,
                        "client_name": c.client_name,
                        "resource": c.resource,
                        "scope": c.scope,
                        "token_endpoint_auth_method": c.method,
                        "sub": str(c.owner_id) if c.acts_for_owner else c.client_id,
                        "created_at": c.created_at.isoformat(),
                        "last_used_at": c.last_used_at.isoformat()
                        if c.last_used_at
                        else None,
                    }
                    for c in found
                ],
                indent=2,
            )
        )
        return
    for c in found:
        used = (
            c.last_used_at.isoformat(timespec="minutes") if c.last_used_at else "never"
        )
        click.echo(f"{c.client_id}\t{c.client_name}\t{c.resource}\t{c.scope}\t{used}")


COMMANDS = (create_service_command, revoke_command, list_services_command)
