"""``flask --app app keys rotate|list``: the signing keys the service makes
itself when neither ``JWT_SIGNING_KEY`` nor ``JWT_SECRET`` is set
(app/signing_keys.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from . import audit, signing_keys
from .cli_group import OperatorGroup
from .config import Settings, current_settings
from .models import SigningKey

keys_cli = OperatorGroup("keys", help="Rotate the signing keys the service made.")


def _managed() -> Settings:
    settings = current_settings()
    if not settings.managed_keys:
        configured = "JWT_SIGNING_KEY" if settings.jwt_signing_key else "JWT_SECRET"
        raise click.ClickException(
            f"tokens are signed with {configured}; rotate it there"
            " (docs/settings.md), or unset it to let the service manage its keys"
        )
    return settings


def _describe(key: SigningKey) -> dict[str, str | None]:
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "signs_from": key.signs_from.isoformat(),
        "published_until": key.published_until.isoformat()
        if key.published_until
        else None,
    }


@keys_cli.command("rotate")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1, max=3650),
    default=None,
    help="Only if the key signing now is older than this (for a daily schedule).",
)
@click.option(
    "--switch-after",
    type=click.IntRange(min=0, max=7 * 86400),
    default=signing_keys.DEFAULT_SWITCH_AFTER,
    show_default=True,
    help="Seconds until the new key signs; verifiers fetch it meanwhile.",
)
def rotate_command(older_than_days: int | None, switch_after: int) -> None:
    """Publish the next signing key; it signs once verifiers have it, and the
    key it replaces stays published until its tokens have expired."""
    settings = _managed()
    older = timedelta(days=older_than_days) if older_than_days else None
    try:
        rotation = signing_keys.rotate(settings, switch_after, older)
    except signing_keys.KeyUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    key = rotation.key
    when = f"{key.signs_from:%Y-%m-%d %H:%M:%S} UTC"
    if rotation.outcome == "rotated":
        audit.record(audit.SIGNING_KEY_ROTATED, kid=key.kid, algorithm=key.algorithm)
        click.echo(f"{key.kid} ({key.algorithm}) signs from {when}")
    elif rotation.outcome == "pending":
        click.echo(f"a rotation is under way: {key.kid} signs from {when}")
    else:
        click.echo(f"kept {key.kid}: it has signed since {when}")
    if rotation.deleted:
        click.echo(f"deleted {rotation.deleted} retired key(s) whose tokens expired")


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def list_command(as_json: bool) -> None:
    """List the stored signing keys, oldest first."""
    _managed()
    keys = signing_keys.list_keys()
    if as_json:
        click.echo(json.dumps([_describe(key) for key in keys]))
        return
    for key in keys:
        described = _describe(key)
        until = described["published_until"] or "-"
        since = described["signs_from"]
        click.echo(f"{key.kid}  {key.algorithm}  from {since}  published until {until}")
