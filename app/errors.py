"""Error pages for people and JSON errors for programs; never a traceback."""

from __future__ import annotations

import io
import logging
from typing import Any

import psycopg.errors
from flask import Flask, Response, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from flask_babel import gettext as _
from limits.errors import StorageError
from redis.exceptions import RedisError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import parse_set_header
from werkzeug.sansio.response import Response as BaseResponse

from .db import db
from .logs import reason
from .surfaces import surface_of

log = logging.getLogger(__name__)

#: Largest request body accepted (bytes); larger bodies get a 413.
MAX_CONTENT_LENGTH = 64 * 1024


def bound_chunked_body(environ: dict[str, Any], limit: int) -> None:
    """Give a chunked request body a length, so the one size rule applies.

    Without a Content-Length, werkzeug reads a streamed body up to
    ``MAX_CONTENT_LENGTH`` and silently stops there: the view sees a cut-off
    body. This buffers at most one byte more than ``limit`` and states the
    length, so an oversized body meets the same ``413`` as any other.
    """
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    chunked = coding is not None and "chunked" in parse_set_header(coding)
    if chunked and not environ.get("CONTENT_LENGTH"):
        body = _read_at_most(environ["wsgi.input"], limit + 1)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # The body is de-chunked now; werkzeug ignores a Content-Length
        # that comes with Transfer-Encoding: chunked.
        del environ["HTTP_TRANSFER_ENCODING"]
        environ.pop("wsgi.input_terminated", None)


def _read_at_most(stream: Any, most: int) -> bytes:
    body = bytearray()
    while len(body) < most:
        chunk = stream.read(most - len(body))
        if not chunk:
            break
        body.extend(chunk)
    return bytes(body)


def wants_html() -> bool:
    surface = surface_of(request.blueprint)
    if surface is not None:
        return surface.value.html_errors
    # Outside every blueprint (no route matched): whatever the caller prefers.
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def error_response(
    status: int, error: str, description: str, html_title: str | None = None
) -> tuple[Response | str, int]:
    """Render one error in the current route's format."""
    if wants_html():
        page = render_template(
            "error.html",
            status=status,
            title=html_title or description,
            description=description,
        )
        return page, status
    return json_error(status, error, description), status


def empty_response(status: int) -> Response:
    """An answer with no body, and so no media type to claim (RFC 9110 §8.3)."""
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


def json_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 §5.2-shaped JSON error: ``error`` and ``error_description``."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return response


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def challenge(scheme: str, **params: str) -> str:
    """Build a ``WWW-Authenticate`` challenge (RFC 9110 §11.6.1).

    Parameter values go out as quoted-strings (RFC 9110 §5.6.4), in order.
    """
    return f"{scheme} " + ", ".join(
        f"{name}={_quoted(value)}" for name, value in params.items()
    )


def _error_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def handle_http_exception(
    exc: HTTPException,
) -> BaseResponse | tuple[Response | str, int]:
    # A response built on purpose (e.g. a 401 with WWW-Authenticate) goes out as is.
    if exc.response is not None:
        return exc.response
    status = exc.code or 500
    return error_response(status, _error_code(exc), _(exc.description or exc.name))


def handle_unavailable(exc: Exception) -> tuple[Response | str, int]:
    _rollback()
    # The driver's reason (refused, a certificate not trusted...), which the
    # operator needs and the caller must not see.
    log.error("backing store unavailable: %s: %s", type(exc).__name__, reason(exc))
    response, status = error_response(
        503,
        "temporarily_unavailable",
        _("The service is temporarily unavailable. Please try again shortly."),
    )
    return response, status


def handle_unexpected(exc: Exception) -> tuple[Response | str, int]:
    _rollback()
    log.exception("unhandled error")
    return handle_http_exception(InternalServerError())  # type: ignore[return-value]


def _rollback() -> None:
    try:
        db.session.rollback()
    except SQLAlchemyError:
        pass


#: Failures of a backing store (connection lost, timeout), not bugs or bad data.
UNAVAILABLE = (
    RedisError,
    StorageError,
    PoolTimeoutError,
    OperationalError,
    InterfaceError,
)


def _dispatch(exc: Exception) -> BaseResponse | tuple[Response | str, int]:
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    if isinstance(exc, DataError | UnicodeError):
        # Input Postgres refuses to store or compare (a NUL byte, say) is bad
        # input, not a fault of ours; the views screen what they can first.
        _rollback()
        return error_response(400, "invalid_request", _("The request is malformed."))
    if isinstance(exc, UNAVAILABLE) or _session_ended(exc):
        return handle_unavailable(exc)
    return handle_unexpected(exc)


def _session_ended(exc: Exception) -> bool:
    """Postgres ended a session left idle in its transaction (a registration
    stalled past its limit, app/oauth/registration_caps.py): reported as an
    internal error, but the request met an outage, not a bug."""
    return isinstance(exc, DBAPIError) and isinstance(
        exc.orig, psycopg.errors.IdleInTransactionSessionTimeout
    )


class SafeJSONProvider(DefaultJSONProvider):
    """Treat JSON nested too deeply to parse as malformed, not as a crash."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def init_app(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json = SafeJSONProvider(app)
    app.register_error_handler(Exception, _dispatch)
