"""OAuth errors this service answers that Authlib does not define."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import (
    UnsupportedGrantTypeError,
    UnsupportedResponseTypeError,
)


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the ``resource`` is not one this server issues tokens for."""

    error = "invalid_target"
    description = "The requested resource is not served by this authorization server."


class ClientLimitExceededError(OAuth2Error):
    """Too many live clients, from one address or in all (docs/reference.md)."""

    error = "client_limit_exceeded"
    status_code = 403
    description = "No more clients can be registered."


class TooManyRequestsError(OAuth2Error):
    error = "too_many_requests"
    status_code = 429
    description = "Too many requests; retry later."


def _only(parameter: str, values: tuple[str, ...]) -> str:
    offered = " or ".join(f"'{parameter}={value}'" for value in values)
    return f"Only {offered} is supported."


class UnsupportedResponseType(UnsupportedResponseTypeError):
    """Authlib's error with a fixed message: echoing the input invites trouble."""

    def __init__(
        self, offered: tuple[str, ...], redirect_uri: str | None = None
    ) -> None:
        super().__init__(None, redirect_uri=redirect_uri)
        self.description = _only("response_type", offered)

    def get_error_description(self) -> str:
        return self.description


class UnsupportedGrantType(UnsupportedGrantTypeError):
    def __init__(self, offered: tuple[str, ...]) -> None:
        super().__init__(None)
        self.description = _only("grant_type", offered)

    def get_error_description(self) -> str:
        return self.description


class BusyError(OAuth2Error):
    """A key set cannot be fetched right now: too many fetches from this
    address (429) or at once here (503). Retrying later succeeds."""

    error = "temporarily_unavailable"
    status_code = 503
    description = "Too many key sets are being fetched; retry shortly."

    def __init__(self, status: int, retry_after: int) -> None:
        super().__init__()
        self.status_code = status
        if status == 429:
            self.error = TooManyRequestsError.error
            self.description = TooManyRequestsError.description
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]
