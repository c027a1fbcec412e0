"""Liveness, readiness, and clean 503s when a backing store is gone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import devservices
import requests
from conftest import LiveServer
from helpers import Browser


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
