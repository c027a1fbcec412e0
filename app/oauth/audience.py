"""RFC 8707 resource indicators: the one audience our tokens are for."""

from __future__ import annotations

from ..config import current_settings
from .oauth_errors import InvalidTargetError


def check_resource(values: list[str]) -> str:
    """Accept ``resource`` values only if each names our ``/mcp``.

    Anything else is ``invalid_target`` (RFC 8707 §2), at the authorization
    endpoint, at the code exchange and at a refresh alike: a grant never
    changes its audience.
    """
    resource = current_settings().mcp_resource
    if any(value != resource for value in values):
        raise InvalidTargetError()
    return resource
