"""The operator commands' group: a backing store that cannot be reached is
one line naming it, never a traceback.

Every ``flask --app app`` group is an :class:`OperatorGroup`, and the
``prune`` command an :class:`OperatorCommand`. A command that
finds Postgres or Redis down (refused, unreachable, a certificate not
trusted) ends with ``Error: Postgres is unreachable: <reason>`` and exit
status 1, as click reports any error of the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from flask.cli import AppGroup
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from .logs import reason


def _one_line(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except (OperationalError, InterfaceError) as exc:
        raise click.ClickException(f"Postgres is unreachable: {reason(exc)}") from None
    except RedisError as exc:
        raise click.ClickException(f"Redis is unreachable: {reason(exc)}") from None


class OperatorGroup(AppGroup):
    """Flask's command group, with backing-store failures as one line."""

    def invoke(self, ctx: click.Context) -> Any:
        return _one_line(lambda: super(OperatorGroup, self).invoke(ctx))


class OperatorCommand(click.Command):
    """An operator command outside any group (``prune``), failing the same way."""

    def invoke(self, ctx: click.Context) -> Any:
        return _one_line(lambda: super(OperatorCommand, self).invoke(ctx))
