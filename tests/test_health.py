"""Liveness, readiness, and clean 503s when a backing store is gone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import devservices
import pytest
import requests
from conftest import LiveServer
from helpers import Browser
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from app.logs import reason


def closed_port() -> int:
    return devservices.free_port()  # free now, and nothing will listen there


def test_healthz_answers_while_the_process_runs(browser: Browser) -> None:
    response = browser.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_postgres_and_redis(browser: Browser) -> None:
    response = browser.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readyz_is_503_naming_redis_when_redis_stops(
    make_server: Callable[..., LiveServer], doomed_redis: Any
) -> None:
    live = make_server(REDIS_URL=doomed_redis.url)
    assert requests.get(live.url + "/readyz", timeout=10).status_code == 200

    doomed_redis.stop()
    response = requests.get(live.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"] == {"postgres": "ok", "redis": "unavailable"}
    assert requests.get(live.url + "/healthz", timeout=10).status_code == 200


def test_readyz_is_503_naming_postgres_when_it_is_unreachable(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/x"
    )
    response = requests.get(live.url + "/readyz", timeout=30)
    assert response.status_code == 503
    assert response.json()["checks"] == {"postgres": "unavailable", "redis": "ok"}


def test_oauth_endpoints_answer_503_in_their_own_format_without_redis(
    make_server: Callable[..., LiveServer], doomed_redis: Any
) -> None:
    live = make_server(REDIS_URL=doomed_redis.url)
    doomed_redis.stop()
    response = requests.post(
        live.url + "/register",
        json={"redirect_uris": ["http://127.0.0.1/cb"]},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "Traceback" not in response.text


def test_a_503_logs_the_drivers_reason_in_one_line(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    live = make_server(REDIS_URL=doomed_redis.url)
    doomed_redis.stop()
    response = requests.post(
        live.url + "/register",
        json={"redirect_uris": ["http://127.0.0.1/cb"]},
        headers={"X-Request-ID": "redis-down-1"},
        timeout=30,
    )
    assert response.status_code == 503
    assert "refused" not in response.text  # the reason is the operator's

    records = [
        json.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if "redis-down-1" in line
    ]
    [logged] = [r for r in records if r["level"] == "ERROR"]
    message = logged["message"]
    assert message.startswith("backing store unavailable: "), message
    # Not only the exception's type: what redis-py said, on one line.
    port = urlsplit(doomed_redis.url).port
    assert f"connecting to 127.0.0.1:{port}" in message, message
    assert "Connection refused" in message, message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    "said",
    [
        # libpq quotes a DATABASE_URL it cannot parse, password and all.
        'end of string reached when looking for matching "]" in IPv6 host'
        ' address in URI: "postgresql://app:hunter2-pw@[::1/mcp"',
        "invalid connection option in host=db password='hunter2-pw' port=x",
        "Error connecting to rediss://:hunter2-pw@cache:6380/0\nsecond line",
    ],
)
def test_a_logged_reason_never_carries_a_password(said: str) -> None:
    said_by_psycopg = OperationalError("SELECT 1", {}, Exception(said))
    for exc in (said_by_psycopg, RedisConnectionError(said)):
        text = reason(exc)
        assert "hunter2" not in text and "SELECT" not in text
        assert "[redacted]" in text and "\n" not in text


def test_pages_answer_503_as_html_without_postgres(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/x"
    )
    response = requests.get(
        live.url + "/authorize?client_id=x&redirect_uri=http://127.0.0.1/cb", timeout=30
    )
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "temporarily unavailable" in response.text
