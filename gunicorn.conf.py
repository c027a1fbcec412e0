"""gunicorn settings; the values come from the same validated settings as the app."""

from app.config import settings_from_environment

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
# Kubernetes' default). gunicorn stops accepting at once (the platform routes new
# requests to other instances) and gives requests in flight this long to finish.
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


def post_worker_init(worker: object) -> None:
    """Keep the cyclic garbage collector off what the loaded app will keep.

    The app's modules, routes and settings live as long as the worker; after
    gc.freeze() full collections no longer walk them on every request burst.
    """
    import gc

    gc.freeze()
