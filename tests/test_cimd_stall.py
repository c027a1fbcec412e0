"""A metadata-document host that answers a byte at a time cannot stop the server.

The attack: ``client_id`` URLs whose host sends its response headers one byte
every two seconds, each URL new so no cached failure helps, sent to
``/authorize`` (no sign-in needed) all at once. The app runs under gunicorn as
the Procfile starts it, one process with its few threads, so a thread held is
as scarce as in production.

And the other side of a bounded fetch: the lock one instance holds while it
fetches outlasts the fetch, so another waits for its verdict, not fetching.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveServer
from devservices import free_port
from document_server import DocumentServer
from helpers import (
    LOOPBACK_REDIRECT,
    authorize_params,
    authorize_path,
    pkce_pair,
    start_web,
)

from app.oauth.client_metadata import LOCK_SECONDS, MAX_CONCURRENT_FETCHES
from app.oauth.client_metadata_fetch import DEADLINE

#: As many as took the whole server down before.
ATTACKERS = 8


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def authorize_url(base: str, client_id: str) -> str:
    client = {"client_id": client_id, "redirect_uris": [LOOPBACK_REDIRECT]}
    return base + authorize_path(authorize_params(client, pkce_pair()[1]))


@pytest.fixture
def web(base_env: dict[str, str], tmp_path: Path) -> Any:
    port = free_port()
    process = start_web(
        base_env,
        port,
        tmp_path / "web.log",
        CIMD_ALLOW_LOOPBACK="on",
        # The per-address limit has its own test; all eight come from one here.
        CIMD_FETCH_RATE_LIMIT="1000 per minute",
    )
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=60)


def test_hosts_dribbling_headers_cannot_hold_the_server(
    web: Any, documents: DocumentServer, redis_client: Any
) -> None:
    urls = []
    for number in range(ATTACKERS):
        documents.dribble(f"/slow/{number}.json")
        urls.append(documents.url(f"/slow/{number}.json"))
    answers: list[tuple[int, float, requests.Response]] = []

    def attack(url: str) -> None:
        started = time.monotonic()
        response = requests.get(authorize_url(web, url), timeout=60)
        answers.append((response.status_code, time.monotonic() - started, response))

    threads = [threading.Thread(target=attack, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: documents.connections >= MAX_CONCURRENT_FETCHES,
        "the document host was never contacted",
    )

    health = requests.get(web + "/healthz", timeout=60)
    fetches_ended_by_then = [a for a in answers if a[0] != 503]

    for thread in threads:
        thread.join()
    # The probe answered while the fetches were still held by their hosts.
    assert health.status_code == 200
    assert fetches_ended_by_then == []
    statuses = Counter(status for status, _, _ in answers)
    assert statuses == {503: ATTACKERS - MAX_CONCURRENT_FETCHES, 400: 2}
    # Beyond the cap, refused at once: no connection, a page saying to retry.
    assert documents.connections == MAX_CONCURRENT_FETCHES
    for status, elapsed, response in answers:
        if status == 503:
            assert response.headers["Retry-After"] == str(LOCK_SECONDS)
            assert response.headers["Content-Type"].startswith("text/html")
            assert "temporarily_unavailable" in response.text
        else:
            # Each fetch ended at the wall-clock limit; the host would have
            # gone on for as long as the test ran.
            assert "took too long" in response.text
            assert elapsed < DEADLINE + 5
    # Only the fetches made left a verdict; a refusal says nothing of the host.
    assert len(redis_client.keys("cimd:verdict:*")) == MAX_CONCURRENT_FETCHES


def test_a_waiter_gets_the_holders_verdict_and_the_lock_outlasts_the_fetch(
    make_server: Callable[..., LiveServer],
    documents: DocumentServer,
    redis_client: Any,
) -> None:
    # Slow, but within the limit: the instance that fetches holds the lock
    # throughout, and the other waits for its verdict instead of fetching.
    url = documents.document("/c", delay=DEADLINE - 1.5)
    instances = [make_server(CIMD_ALLOW_LOOPBACK="on") for _ in range(2)]
    statuses: list[int] = []

    def ask(instance: Any) -> None:
        browser = instance.browser()
        statuses.append(browser.get(authorize_url("", url)).status_code)

    holder = threading.Thread(target=ask, args=(instances[0],))
    holder.start()
    wait_until(lambda: redis_client.keys("cimd:lock:*"), "no instance took the lock")
    (lock,) = redis_client.keys("cimd:lock:*")
    verdict = lock.replace("cimd:lock:", "cimd:verdict:")
    lock_seconds = redis_client.pttl(lock) / 1000
    waiter = threading.Thread(target=ask, args=(instances[1],))
    waiter.start()
    samples = []
    while holder.is_alive() or waiter.is_alive():
        # The lock first: the verdict is stored before the lock is released.
        samples.append((redis_client.exists(lock), redis_client.exists(verdict)))
        time.sleep(0.05)

    assert statuses == [302, 302]  # both on to sign in, with the one verdict
    assert documents.requests == {"/c": 1}
    assert all(locked for locked, decided in samples if not decided)
    assert lock_seconds > DEADLINE
    assert LOCK_SECONDS > DEADLINE
