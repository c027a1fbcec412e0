"""``flask --app app resources add|list|update|remove|metadata``: the MCP
servers this service issues tokens for (docs/resource-servers.md)."""

from __future__ import annotations

import json

import click
from flask_babel import force_locale
from sqlalchemy import select

from . import resource_admin as admin
from .cli_group import OperatorGroup
from .config import current_settings
from .db import db
from .models import ResourceRow
from .oauth import consent
from .oauth.metadata import protected_resource_metadata
from .oauth.resources import Resource, load_registry

resources_cli = OperatorGroup(
    "resources", help="Manage the MCP servers tokens are for."
)

_describe = click.option(
    "--describe",
    multiple=True,
    metavar="SCOPE=TEXT",
    help="What a scope lets a client do, shown on the consent page.",
)
_describe_zh = click.option(
    "--describe-zh", multiple=True, metavar="SCOPE=TEXT", help="The same in Chinese."
)


def _fail(exc: admin.ResourceError) -> click.ClickException:
    return click.ClickException(str(exc))


def _announced() -> None:
    try:
        admin.announce()
    except Exception as exc:  # the change is stored; only the news is late
        click.echo(
            f"warning: stored, but running instances were not told ({exc}); "
            "each sees it when its link to Redis is back, or after a restart",
            err=True,
        )


@resources_cli.command("add")
@click.argument("uri")
@click.option("--name", required=True, help="Shown to people on the consent page.")
@click.option("--scopes", required=True, help='Its scopes, e.g. "read write".')
@_describe
@_describe_zh
@click.option("--token-ttl", type=int, help="Access-token lifetime, seconds.")
def add_command(
    uri: str,
    name: str,
    scopes: str,
    describe: tuple[str, ...],
    describe_zh: tuple[str, ...],
    token_ttl: int | None,
) -> None:
    """Register the MCP server at URI as a resource."""
    try:
        names = admin.parse_scopes(scopes)
        row = ResourceRow(
            uri=admin.canonical(uri),
            name=admin.check_name(name),
            scopes=admin.scope_entries(
                names,
                admin.parse_descriptions(describe, names),
                admin.parse_descriptions(describe_zh, names),
            ),
            access_token_ttl=admin.check_ttl(token_ttl),
        )
        with db.transaction():
            admin.add(row)
    except admin.ResourceError as exc:
        raise _fail(exc) from None
    _announced()
    click.echo(row.uri)


@resources_cli.command("update")
@click.argument("uri")
@click.option("--name", help="A new display name.")
@click.option("--scopes", help="Its scopes from now on (descriptions kept by name).")
@_describe
@_describe_zh
@click.option("--token-ttl", type=int, help="Access-token lifetime, seconds.")
@click.option("--default-token-ttl", is_flag=True, help="Use ACCESS_TOKEN_TTL.")
def update_command(
    uri: str,
    name: str | None,
    scopes: str | None,
    describe: tuple[str, ...],
    describe_zh: tuple[str, ...],
    token_ttl: int | None,
    default_token_ttl: bool,
) -> None:
    """Change a registered resource."""
    try:
        if token_ttl is not None and default_token_ttl:
            raise admin.ResourceError("give --token-ttl or --default-token-ttl")
        with db.transaction():
            row = admin.find_row(admin.not_builtin(uri))
            if row is None:
                raise admin.ResourceError(f"{admin.canonical(uri)} is not registered")
            old = {str(s["name"]): s for s in row.scopes}
            names = admin.parse_scopes(scopes) if scopes is not None else list(old)
            english = {n: str(old[n]["description"]) for n in names if n in old}
            chinese = {
                n: str(old[n]["description_zh"])
                for n in names
                if n in old and old[n]["description_zh"]
            }
            english.update(admin.parse_descriptions(describe, names))
            chinese.update(admin.parse_descriptions(describe_zh, names))
            row.scopes = admin.scope_entries(names, english, chinese)
            if set(names) != set(old):
                consent.keep_only(row.uri, names)
            if name is not None:
                row.name = admin.check_name(name)
            if token_ttl is not None:
                row.access_token_ttl = admin.check_ttl(token_ttl)
            if default_token_ttl:
                row.access_token_ttl = None
            admin.updated(row)
    except admin.ResourceError as exc:
        raise _fail(exc) from None
    _announced()
    click.echo(row.uri)


@resources_cli.command("remove")
@click.argument("uri")
def remove_command(uri: str) -> None:
    """Remove a resource, ending every consent, chain, key and token for it."""
    try:
        with db.transaction():
            removed = admin.remove(uri)
    except admin.ResourceError as exc:
        raise _fail(exc) from None
    _announced()
    click.echo(
        f"removed {admin.canonical(uri)}: ended {removed.consents} consent(s)"
        f" and {removed.api_keys} API key(s)"
    )


def _entry(resource: Resource, default: Resource | None, ttl: int | None) -> dict:
    return {
        "uri": resource.uri,
        "name": resource.name,
        "scopes": [
            {
                "name": s.name,
                "description": str(s.description),
                "description_zh": s.description_zh,
            }
            for s in resource.scopes
        ],
        "access_token_ttl": ttl,
        "builtin": resource.builtin,
        "default": resource is default,
    }


@resources_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_command(as_json: bool) -> None:
    """List the registered resources, the built-in one first."""
    registry = load_registry(current_settings())
    # Only a lifetime of its own; null: ACCESS_TOKEN_TTL.
    rows = db.session.execute(select(ResourceRow.uri, ResourceRow.access_token_ttl))
    ttls = {uri: ttl for uri, ttl in rows}
    # The built-in scopes' descriptions are translated; the operator reads English.
    with force_locale("en"):
        entries = [
            _entry(r, registry.default, ttls.get(r.uri)) for r in registry.resources
        ]
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
        return
    for entry in entries:
        flags = ["built-in"] if entry["builtin"] else []
        flags += ["default"] if entry["default"] else []
        scopes = " ".join(s["name"] for s in entry["scopes"])
        ttl = entry["access_token_ttl"] or "-"
        click.echo(
            "\t".join([entry["uri"], entry["name"], scopes, str(ttl), ",".join(flags)])
        )


@resources_cli.command("metadata")
@click.argument("uri")
def metadata_command(uri: str) -> None:
    """Print the RFC 9728 document the server at URI should serve."""
    settings = current_settings()
    try:
        wanted = admin.canonical(uri)
    except admin.ResourceError as exc:
        raise _fail(exc) from None
    found = load_registry(settings).named(wanted)
    if found is None:
        raise click.ClickException(f"{wanted} is not registered")
    document = protected_resource_metadata(settings, found)
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))
