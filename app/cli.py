"""Operator commands: ``flask --app app users|clients|db|resources|idps ...``
and ``flask --app app prune``."""

from __future__ import annotations

import sys
from datetime import timedelta

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from . import audit, migrate, signing_keys
from . import prune as prune_rows
from .cli_group import OperatorCommand, OperatorGroup
from .cli_idps import idps_cli
from .cli_keys import keys_cli
from .cli_resources import resources_cli
from .cli_services import COMMANDS as SERVICE_COMMANDS
from .config import current_settings
from .db import db
from .denylist import deny_user_until_now
from .logs import log_to_stderr
from .models import User
from .oauth.resources import builtin_resource
from .users import UserError, create_user, disable_user, find_by_email

users_cli = OperatorGroup("users", help="Manage people's accounts.")
clients_cli = OperatorGroup("clients", help="Manage registered OAuth clients.")
db_cli = OperatorGroup("db", help="Apply database migrations.")


@users_cli.command("create")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def create_user_command(email: str, password_stdin: bool) -> None:
    """Create an account."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with db.transaction():
            user = create_user(email, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.email} ({user.id})")


@users_cli.command("list")
def list_users_command() -> None:
    """List accounts, oldest first."""
    for user in db.session.scalars(select(User).order_by(User.created_at)):
        state = "active" if user.is_active else "disabled"
        click.echo(f"{user.id}  {user.email}  {state}  {user.created_at:%Y-%m-%d}")


@users_cli.command("disable")
@click.argument("email")
def disable_user_command(email: str) -> None:
    """Disable an account and cut off the tokens it holds."""
    user = find_by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    with db.transaction():
        disable_user(user)
    # A time cutoff: again after the commit, past tokens issued meanwhile.
    deny_user_until_now(str(user.id))
    audit.record(audit.USER_DISABLED, user_id=user.id, account=str(user.id))
    click.echo(f"disabled {user.email}")


@users_cli.command("digest")
@click.argument("email")
def digest_command(email: str) -> None:
    """Print the account an email appears as in sign-in audit events."""
    click.echo(audit.account_of(email))


@click.command("prune", cls=OperatorCommand)
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1, max=36500),
    default=prune_rows.DEFAULT_OLDER_THAN_DAYS,
    show_default=True,
    help="Keep what ended (or was registered and never used) more recently.",
)
@click.option(
    "--unused-days",
    type=click.IntRange(min=1, max=36500),
    default=prune_rows.DEFAULT_UNUSED_DAYS,
    show_default=True,
    help="Clients last used longer ago, with no live consent, go.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=100_000),
    default=prune_rows.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@with_appcontext
def prune_command(
    older_than_days: int, unused_days: int, batch_size: int, dry_run: bool
) -> None:
    """Delete the dead rows of every kind (docs/reference.md, "What prune deletes")."""
    log_to_stderr()
    h = prune_rows.horizons(
        timedelta(days=older_than_days), timedelta(days=unused_days)
    )
    for kind in prune_rows.KINDS:
        if dry_run:
            with db.transaction():
                click.echo(f"would prune {prune_rows.count(kind, h)} {kind.name}")
            continue
        total = batches = 0
        for deleted in prune_rows.prune(kind, h, batch_size):
            total += deleted
            batches += 1
        click.echo(f"pruned {total} {kind.name} in {batches} batch(es)")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = current_settings()
    builtin = builtin_resource(settings).uri
    migrate.upgrade(settings.database_url, revision, builtin_resource=builtin)
    if settings.managed_keys and revision == "head":
        # The first release makes the service's signing key; a later one
        # seals again under SECRET_KEY what only a fallback opened.
        try:
            key = signing_keys.ensure(settings)
            resealed = signing_keys.reseal(settings)
        except signing_keys.KeyUnreadable as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"signing key {key.kid} ({key.algorithm})")
        if resealed:
            click.echo(f"sealed {resealed} signing key(s) under the current SECRET_KEY")


@db_cli.command("downgrade")
@click.argument("revision", default="-1")
def downgrade_command(revision: str) -> None:
    """Revert migrations down to REVISION (default: one step; 'base' for all)."""
    migrate.downgrade(current_settings().database_url, revision)


def init_app(app: Flask) -> None:
    for command in SERVICE_COMMANDS:
        clients_cli.add_command(command)
    groups = (users_cli, clients_cli, db_cli, resources_cli, idps_cli, keys_cli)
    for group in groups:
        # Runs before each of the group's commands.
        group.callback = log_to_stderr
        app.cli.add_command(group)
    app.cli.add_command(prune_command)
