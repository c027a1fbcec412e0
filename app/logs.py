"""One JSON object per log line, each carrying the request id."""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

#: A caller's ``X-Request-ID`` is reused only if it is short and harmless.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Audit events (``audit.py``): kept at INFO whatever ``LOG_LEVEL`` says, since
#: an operator must be able to answer who signed in and what they authorized.
AUDIT_LOGGER = "app.audit"

log = logging.getLogger("app")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id") if has_request_context() else None
        return True


def configure_logging(level: str) -> None:
    """Send JSON lines to stdout; safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "asctime": "time"},
        )
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.setLevel(logging.INFO)
    # On the logger, not only the handler: every handler sees the request id.
    audit.filters = [RequestIdFilter()]


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)


def _start_request() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = (
        incoming if REQUEST_ID_PATTERN.match(incoming) else secrets.token_hex(16)
    )
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    started = g.get("request_started")
    # The path only: query strings carry codes, states and keys.
    log.info(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)
            if started
            else None,
            "remote_addr": request.remote_addr,
        },
    )
    return response
