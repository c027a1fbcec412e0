"""The one per-process cache type: its rule, and the frozen values it holds."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from helpers import get_code, register_client, wait_for_current_view

from app.oauth.clients import CLIENT_CACHE, CLIENT_CACHE_SIZE, query_client
from app.process_cache import ProcessCache


def test_an_entry_lives_until_its_expiry() -> None:
    cache: ProcessCache[str, str] = ProcessCache(10)
    cache.put("lasting", "a")
    cache.put("gone", "b", until=time.time() - 1)
    cache.put("later", "c", until=time.time() + 60)

    assert cache.get("lasting") == "a"
    assert cache.get("gone") is None
    assert cache.get("later") == "c"


def test_a_full_cache_drops_its_oldest_quarter() -> None:
    cache: ProcessCache[int, int] = ProcessCache(8)
    for n in range(8):
        cache.put(n, n)
    cache.put(8, 8)

    assert [cache.get(n) for n in range(9)] == [None, None, 2, 3, 4, 5, 6, 7, 8]
    assert len(cache) == 7


def test_evict_and_clear_forget() -> None:
    cache: ProcessCache[str, str] = ProcessCache(4)
    cache.put("a", "1")
    cache.put("b", "2")
    cache.evict("a")
    assert (cache.get("a"), cache.get("b")) == (None, "2")
    cache.clear()
    assert len(cache) == 0


def test_a_cached_client_row_is_frozen(
    server: Any, browser: Any, user: dict[str, str]
) -> None:
    client = register_client(browser)
    get_code(browser, client, user)
    wait_for_current_view(server)

    with server.app.test_request_context("/"):
        query_client(client["client_id"])
        view = server.app.extensions["denylist_view"]
        cached = view.cache(CLIENT_CACHE, CLIENT_CACHE_SIZE).get(client["client_id"])
        assert cached is not None
        found = query_client(client["client_id"])
        assert found is not None and found.row is cached
        with pytest.raises(dataclasses.FrozenInstanceError):
            cached.client_name = "changed"  # type: ignore[misc]
        assert isinstance(cached.redirect_uris, tuple)


def test_a_full_client_cache_still_takes_new_clients(
    server: Any, browser: Any, user: dict[str, str]
) -> None:
    """A full cache makes room (its oldest quarter goes): it never stops adding."""
    client = register_client(browser)
    get_code(browser, client, user)
    wait_for_current_view(server)

    with server.app.test_request_context("/"):
        view = server.app.extensions["denylist_view"]
        cache = view.cache(CLIENT_CACHE, CLIENT_CACHE_SIZE)
        assert cache is not None
        cache.clear()
        for n in range(CLIENT_CACHE_SIZE):
            cache.put(f"filler-{n}", "row")
        assert len(cache) == CLIENT_CACHE_SIZE

        found = query_client(client["client_id"])

        assert found is not None
        assert cache.get(client["client_id"]) is found.row
        assert len(cache) == CLIENT_CACHE_SIZE - CLIENT_CACHE_SIZE // 4 + 1
        assert cache.get("filler-0") is None
        assert cache.get(f"filler-{CLIENT_CACHE_SIZE - 1}") == "row"
