"""gunicorn settings; the values come from the same validated settings as the app."""

import gc
import logging
import os
import signal
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
    """Close the worker's copy of the listening sockets as soon as it stops.

    The listening socket is shared by the master and every worker (each
    holds a copy since the fork), and it keeps accepting connections into
    the kernel's backlog until the last copy is closed. On SIGTERM the
    master closes its copy at once, but a gthread worker closes its own only
    after its drain, so a new connection would wait up to graceful_timeout
    and then be reset. Closed here right after the worker stops accepting,
    the socket is gone and a new connection is refused at once. A HUP
    reload also sends its old workers SIGTERM: the master's copy then stays
    open, for the new workers.

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
