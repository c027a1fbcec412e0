"""One JSON object per log line, each carrying the request id."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import sys
import threading
import time
from contextvars import ContextVar, Token
from typing import Any, NamedTuple

#: A caller's ``X-Request-ID`` is reused only if it is short and harmless.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Audit events (``audit.py``): kept at INFO whatever ``LOG_LEVEL`` says, since
#: an operator must be able to answer who signed in and what they authorized.
AUDIT_LOGGER = "app.audit"

log = logging.getLogger("app")

#: The id of the request being served on this thread, for every log record.
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


#: Made once: ``json.dumps(..., default=str)`` builds an encoder per call.
_ENCODER = json.JSONEncoder(default=str)


def _json_text(value: str | None) -> str:
    # JSONEncoder.encode hands a str straight to its C escaper.
    return "null" if value is None else _ENCODER.encode(value)


#: Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, name, message, then the extras.

    Written out rather than a general JSON-logging library, which renders and
    merges its field list again for every record (the request line is logged
    on every request).
    """

    _second = -1
    _second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self.time_text(record.created)

    def time_text(self, created: float) -> str:
        # strftime once a second, not once a record; same text as logging's default.
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(second)
            )
            self._second = second
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


class JsonLinesHandler(logging.StreamHandler):
    """JSON lines on a stream, with a direct path for the per-request line.

    The request line is written for every request, and a LogRecord's
    making, filtering and formatting cost several times the line itself;
    :meth:`write_request` writes the same JSON shape (what
    :class:`JsonLineFormatter` would make of ``log.info("request",
    extra=fields)``) under the handler's lock, so lines never interleave.

    Request lines are held here and written together within
    :data:`REQUEST_LINE_DELAY`, not one write each: under gunicorn's
    threads every write gives up the GIL and hands it around, which cost
    more than the rest of the line (and PaaS Python sets PYTHONUNBUFFERED,
    so stdout would not batch them). Any other record (audit events,
    warnings, errors) is written at once, after the lines held before it;
    exit writes what is left.
    """

    formatter: JsonLineFormatter

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.setFormatter(JsonLineFormatter())
        self.addFilter(RequestIdFilter())
        self._held: list[str] = []
        self._pending = threading.Event()
        self._flusher_pid = 0

    def write_request(
        self,
        method: str | None,
        path: str,
        status: int | None,
        duration_ms: float,
        remote_addr: str | None,
        request_id: str,
    ) -> None:
        """The request line, its fields in this order: spelled out rather
        than through the encoder, which sets up its C encoder again for each
        dictionary (about half the line's cost). Strings still go through the
        encoder's escaping; the rest are numbers or ``null``."""
        self._hold(
            f'{{"time": "{self.formatter.time_text(time.time())}", '
            f'"level": "INFO", "name": "{log.name}", "message": "request", '
            f'"method": {_json_text(method)}, "path": {_json_text(path)}, '
            f'"status": {"null" if status is None else int(status)}, '
            f'"duration_ms": {float(duration_ms)!r}, '
            f'"remote_addr": {_json_text(remote_addr)}, '
            f'"request_id": {_json_text(request_id)}}}{self.terminator}'
        )

    def _hold(self, text: str) -> None:
        self._ensure_flusher()
        with self.lock:  # type: ignore[union-attr]
            self._held.append(text)
            if len(self._held) >= HELD_LINES_MAX:
                self.flush()
        if not self._pending.is_set():
            self._pending.set()

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock: the held lines go out first.
        self._write_held()
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_held()
            super().flush()

    def _write_held(self) -> None:
        held, self._held = self._held, []
        if held:
            try:
                self.stream.write("".join(held))
            except (OSError, ValueError):
                pass  # as logging does: a closed or broken stream loses lines

    def _ensure_flusher(self) -> None:
        # Started on first use, so that each gunicorn worker (forked after
        # the app was built) has its own; lines held before a fork are the
        # parent's to write.
        pid = os.getpid()
        if self._flusher_pid == pid:
            return
        with self.lock:  # type: ignore[union-attr]
            if self._flusher_pid != pid:
                self._held = []
                self._pending = threading.Event()
                threading.Thread(
                    target=self._flush_pending, name="log-flusher", daemon=True
                ).start()
                self._flusher_pid = pid

    def _flush_pending(self) -> None:
        pending = self._pending
        while True:
            pending.wait()
            time.sleep(REQUEST_LINE_DELAY)
            pending.clear()
            try:
                self.flush()
            except (OSError, ValueError):
                pass  # the stream closed (the process is ending)


#: Longest a request line is held before it is written (seconds).
REQUEST_LINE_DELAY = 0.1
#: Held lines that are written at once, whatever the delay (bounds memory).
HELD_LINES_MAX = 256

#: The handler :func:`configure_logging` installed, while it is the only one.
_handler: JsonLinesHandler | None = None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def configure_logging(level: str) -> None:
    """Send JSON lines to stdout; safe to call more than once."""
    # The logging HOWTO's "Optimization": no record field we print needs the
    # thread, process or multiprocessing names; skip collecting them. (The
    # caller's frame is still looked up for each record, a few microseconds;
    # no request on a hot path logs one: the request line is written apart.)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _handler
    handler = _handler = JsonLinesHandler(sys.stdout)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Authlib writes the PKCE verifier of a sign-in at DEBUG: never below INFO.
    logging.getLogger("authlib").setLevel(max(logging.INFO, root.level))
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.setLevel(logging.INFO)
    # On the logger, not only the handler: every handler sees the request id.
    audit.filters = [RequestIdFilter()]


def log_to_stderr() -> None:
    """Send this process's records to stderr: a command's stdout is its answer
    (``URI=$(flask --app app resources add ...)``), its log lines beside it."""
    if _handler is not None:
        _handler.setStream(sys.stderr)


#: Where a driver's message may quote a password: a URI's ``user:password@``
#: (libpq quotes the whole DATABASE_URL when it cannot parse it) and a
#: ``password=`` option, quoted or not.
_PASSWORD_IN_TEXT = re.compile(
    r"(?P<uri>://[^\s/@:'\"]*:)[^\s@'\"]*(?=@)"
    r"|(?P<option>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&'\"]+)",
    re.IGNORECASE,
)


def reason(exc: BaseException) -> str:
    """Why a backing store failed, in one line for a log or a command's error:
    the first line of what the driver said (SQLAlchemy's wrapper, with its
    statement, and the rate limiter's are unwrapped), any password in it
    replaced by ``[redacted]``; the driver's exception's name if it said
    nothing."""
    cause = getattr(exc, "orig", None) or getattr(exc, "storage_error", None) or exc
    lines = str(cause).strip().splitlines()
    if not lines:
        return type(cause).__name__
    return _PASSWORD_IN_TEXT.sub(_redacted, lines[0])


def _redacted(match: re.Match[str]) -> str:
    return (match.group("uri") or match.group("option")) + "[redacted]"


class RequestStarted(NamedTuple):
    """What :func:`request_started` hands :func:`request_ended`."""

    request_id: str
    started: float
    context: Token[str | None]


def request_started(environ: dict[str, Any]) -> RequestStarted:
    """Name the request (the caller's ``X-Request-ID`` if harmless, else a
    fresh one) for every log record, and count it in flight.

    Called below Flask (``app/middleware.py``), with ``REMOTE_ADDR`` already
    what trusted proxies said, so the line is written for every answer,
    Flask's own errors included, at the cost of a few dictionary reads.
    """
    incoming = environ.get("HTTP_X_REQUEST_ID")
    request_id = (
        incoming
        if incoming and REQUEST_ID_PATTERN.match(incoming)
        else _new_request_id()
    )
    started = time.perf_counter()
    _in_flight[id(environ)] = (environ, request_id, started)
    return RequestStarted(request_id, started, _request_id.set(request_id))


def request_ended(
    environ: dict[str, Any], status: str | None, begun: RequestStarted
) -> None:
    """Write the request line (``status`` as sent, ``None`` if none was);
    end what :func:`request_started` began."""
    _in_flight.pop(id(environ), None)
    if log.isEnabledFor(logging.INFO):
        _log_request(environ, status, begun.started, begun.request_id)
    _request_id.reset(begun.context)


#: The requests this process is answering, by ``id(environ)``: the environ,
#: the request id and the start (``perf_counter``), from the moment
#: :func:`request_started` until the app hands back its answer. Read
#: only by :func:`log_requests_in_flight`; one dictionary store and one
#: removal per request, each atomic under the GIL.
_in_flight: dict[int, tuple[dict[str, Any], str, float]] = {}


def log_requests_in_flight(message: str) -> int:
    """Log ``message`` at ERROR once per request still being answered, with
    its method, path, request id, caller and time so far; return how many.

    For a process about to end with requests unanswered (gunicorn.conf.py,
    at the drain timeout of a graceful stop): each cut request leaves a line.
    """
    now = time.perf_counter()
    running = _in_flight.copy().values()  # one C call: safe beside the threads
    for environ, request_id, started in running:
        log.error(
            message,
            extra={
                "method": environ.get("REQUEST_METHOD"),
                "path": _path(environ),
                "duration_ms": round((now - started) * 1000, 2),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "request_id": request_id,
            },
        )
    return len(running)


def _new_request_id() -> str:
    # A correlation id, not a secret: 128 bits from the process's seeded PRNG
    # (reseeded in each forked worker). os.urandom gives up the GIL for its
    # system call, and under gunicorn's threads that hand-over cost more
    # than the rest of the request's bookkeeping.
    return f"{random.getrandbits(128):032x}"


def _path(environ: dict[str, Any]) -> str:
    # The path only: query strings carry codes, states and keys.
    return (
        environ.get("PATH_INFO", "")
        .encode("latin-1", "replace")
        .decode("utf-8", "replace")
    )


def _log_request(
    environ: dict[str, Any], status: str | None, started: float, request_id: str
) -> None:
    method = environ.get("REQUEST_METHOD")
    path = _path(environ)
    code = int(status[:3]) if status else None
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    remote_addr = environ.get("REMOTE_ADDR")
    handler = _handler
    if (
        handler is not None
        and log.handlers == []
        and logging.root.handlers == [handler]
    ):
        handler.write_request(method, path, code, duration_ms, remote_addr, request_id)
    else:  # logging was set up otherwise since: let it route the record
        log.info(
            "request",
            extra={
                "method": method,
                "path": path,
                "status": code,
                "duration_ms": duration_ms,
                "remote_addr": remote_addr,
                "request_id": request_id,
            },
        )
