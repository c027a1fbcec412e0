"""Liveness and readiness probes for the platform."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from ..db import db
from ..redis_store import get_redis

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


#: The liveness answer never changes; probes call it often.
_ALIVE = b'{"status":"ok"}\n'


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process runs."""
    return Response(_ALIVE, mimetype="application/json")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Answer 200 only when Postgres and Redis both answer."""
    checks = {"postgres": _check_postgres(), "redis": _check_redis()}
    ready = all(state == "ok" for state in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return jsonify(body), 200 if ready else 503


def _check_postgres() -> str:
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is logged
        db.session.rollback()
        # The driver's own words (e.g. "certificate verify failed"), never the URL.
        log.warning("postgres not ready: %s", getattr(exc, "orig", None) or exc)
        return "unavailable"
    finally:
        db.session.close()


def _check_redis() -> str:
    try:
        get_redis().ping()
        return "ok"
    except Exception as exc:
        log.warning("redis not ready: %s", exc)
        return "unavailable"
