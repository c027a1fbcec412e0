"""gunicorn settings; the values come from the same validated settings as the app."""

import gc
import logging
import os
import signal
import socket
import threading
from typing import Any

from app.config import settings_from_environment
from app.logs import log_requests_in_flight

# Fail in the master with one clear line instead of letting workers crash-loop.
_settings = settings_from_environment()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
# Measured with `make bench` against sync and gevent (README "Performance"):
# threads overlap the Postgres and Redis waits that sync workers sit through,
# and psycopg and redis-py block a gevent hub unless patched.
worker_class = "gthread"
threads = 4
# Each worker listens on a socket of its own and the kernel deals new
# connections among them. On one shared socket every idle worker races to
# accept, and the first awake took a whole burst of new connections (wrk's
# 32, or a router's pool) about one run in ten: the other worker then sat
# idle while they stayed open, at half the instance's capacity. on_starting
# below keeps a port that is already taken a clear failure.
reuse_port = True
timeout = 30
# Every deploy sends SIGTERM, then SIGKILL some 30 s later (Heroku, Render,
# Kubernetes' default). gunicorn stops accepting at once and each worker closes
# its copy of the listening socket, so that new connections are refused (the
# platform routes them to other instances) rather than left waiting; requests
# in flight get this long to finish. One still running then is logged
# ("request cut at drain timeout") and cut (post_worker_init below).
graceful_timeout = 20
keepalive = 5
# The app logs one JSON line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = "warning"
# gunicorn's own records (a worker that failed to boot or timed out, a
# signal) as JSON lines through the app's formatter, so that a log drain
# reads one format. Merged by gunicorn over its defaults, key by key.
logconfig_dict = {
    "root": {"level": "WARNING", "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {
            "level": "WARNING",
            "handlers": ["json"],
            "propagate": False,
            "qualname": "gunicorn.error",
        },
        "gunicorn.access": {
            "level": "WARNING",
            "handlers": [],
            "propagate": False,
            "qualname": "gunicorn.access",
        },
    },
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "formatters": {"json": {"()": "app.logs.JsonLineFormatter"}},
}
# Bounded request lines and headers; bodies are capped by the app (413).
limit_request_line = 8190
limit_request_fields = 100
forwarded_allow_ips = "*" if _settings.trusted_proxy_hops else "127.0.0.1"


def on_starting(server: Any) -> None:
    """Stop in the master, with one line, if something already listens on
    the port.

    With ``reuse_port`` the master binds nothing and each worker binds its
    own socket with ``SO_REUSEPORT``: a second copy of the service on the
    same port would quietly take half its connections, and a program
    listening without the option would make every worker fail and be
    started again, endlessly.
    """
    for address in server.cfg.address:
        if isinstance(address, tuple):
            _fail_if_taken(address[0], address[1])


def _fail_if_taken(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn binds: connections of an earlier run still in
        # TIME_WAIT do not count, a socket listening on the port does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            message = f"cannot listen on {host}:{port}: {exc.strerror}"
            raise SystemExit(message) from None


def post_worker_init(worker: Any) -> None:
    """Keep the cyclic garbage collector off what the loaded app will keep;
    set up the worker's part of a graceful stop.

    The app's modules, routes and settings live as long as the worker; after
    gc.freeze() full collections no longer walk them on every request burst.
    """
    gc.freeze()
    _close_listeners_once_stopping(worker)
    # The settings in force (GUNICORN_CMD_ARGS and the command line included).
    _cut_requests_at_drain_timeout(float(worker.cfg.graceful_timeout))


def worker_int(worker: Any) -> None:
    """A quick stop (SIGINT, SIGQUIT) cuts what is running: one line each."""
    log_requests_in_flight("request cut by a quick shutdown")


def _close_listeners_once_stopping(worker: Any) -> None:
    """Close the worker's listening sockets as soon as it stops.

    Each worker listens on its own socket (``reuse_port``), and the kernel
    keeps dealing it new connections until it is closed. A gthread worker
    closes it only after its drain, so a new connection would wait up to
    graceful_timeout and then be reset. Closed here right after the worker
    stops accepting, the socket is gone: the kernel deals new connections to
    the sockets still open (the new workers' during a HUP reload), and once
    every worker of a stopping instance has closed its own, a new connection
    is refused at once.

    The one place that leans on gunicorn's internals, not its documented
    hooks (gunicorn 27, gthread worker): ``ThreadWorker.run`` calls
    ``self.set_accept_enabled(False)`` once its loop ends (``worker.alive``
    false), which takes the listeners out of its poller, and ``worker.sockets``
    are those listeners. tests/test_graceful_stop.py fails if an upgrade
    changes either.
    """
    stop_accepting = getattr(worker, "set_accept_enabled", None)
    if stop_accepting is None or not hasattr(worker, "sockets"):
        logging.getLogger("gunicorn.error").warning(
            "%s has no set_accept_enabled: new connections wait during a"
            " graceful stop (gunicorn.conf.py, _close_listeners_once_stopping)",
            type(worker).__name__,
        )
        return

    def set_accept_enabled(enabled: bool) -> None:
        stop_accepting(enabled)
        if not enabled and not worker.alive:
            for listener in worker.sockets:
                listener.close()  # a second close, gunicorn's own, does nothing

    worker.set_accept_enabled = set_accept_enabled


#: How long before graceful_timeout (counted from the SIGTERM) a worker stops
#: waiting for its requests: the master's SIGKILL is due at graceful_timeout
#: and would cut them without a word.
DRAIN_CUT_MARGIN = 1.0


def _cut_requests_at_drain_timeout(timeout: float) -> None:
    """On the worker's SIGTERM, a timer: just before the master's SIGKILL,
    one line per request still running, then the worker ends them itself.

    gunicorn has no hook there: the worker's own SIGTERM handler is kept
    and called after ours.
    """
    passed_on = signal.getsignal(signal.SIGTERM)
    delay = timeout - min(DRAIN_CUT_MARGIN, timeout / 4)
    timers: list[threading.Timer] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        if not timers:
            timers.append(threading.Timer(delay, _cut_requests_in_flight))
            timers[0].daemon = True
            timers[0].start()
        if callable(passed_on):
            passed_on(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # As gunicorn set it: a SIGTERM does not interrupt a request's system calls.
    signal.siginterrupt(signal.SIGTERM, False)


def _cut_requests_in_flight() -> None:
    log_requests_in_flight("request cut at drain timeout")
    logging.shutdown()  # flushes every handler, held request lines included
    os._exit(0)
