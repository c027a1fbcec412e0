"""What was revoked stays revoked when Redis loses its data (docs/reference.md).

Two gunicorn instances share a private Redis. Tokens are ended every way there
is; then that Redis comes back empty (restarted with no data), flushed, or
from a snapshot older than the revocations (a crash after its last save).
Each of those tokens must still be refused, by both instances and by one
started afterwards, while a token nobody revoked still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy
from conftest import make_user
from devservices import free_port
from helpers import (
    ROOT,
    Browser,
    RestartableRedis,
    bearer,
    claims_of,
    get_code,
    key_token,
    new_key,
    obtain_token,
    obtain_tokens,
    redeem,
    refresh,
    register_client,
    revoke,
    revoke_from_account_page,
    start_web,
    until,
    whoami,
)

SECRET = "gateway-secret-that-is-long-enough"
GATEWAY = ("gateway", SECRET)
#: How long the instances are watched refusing after Redis came back.
WATCH_SECONDS = 2.0


@dataclass
class Instance:
    """A gunicorn serving the app; enough of a server for :class:`Browser`."""

    url: str
    process: subprocess.Popen

    def browser(self) -> Browser:
        return Browser(self)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = RestartableRedis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings(base_env: dict[str, str], private_redis: Any) -> dict[str, str]:
    return {
        **base_env,
        "REDIS_URL": private_redis.url,
        "RESOURCE_SERVERS": f"gateway:{SECRET}",
        # Presenting a rotated-out refresh token again is reuse at once.
        "REFRESH_GRACE_SECONDS": "0",
    }


@pytest.fixture(scope="module")
def instances(
    settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    logs = tmp_path_factory.mktemp("web")
    ports = [free_port(), free_port()]
    issuer = f"http://127.0.0.1:{ports[0]}"
    started = []
    try:
        for port in ports:
            web = start_web(settings, port, logs / f"{port}.log", ISSUER=issuer)
            started.append(Instance(f"http://127.0.0.1:{port}", web))
        yield started
    finally:
        for instance in started:
            instance.process.terminate()
            instance.process.wait(timeout=60)


def disable(settings: dict[str, str], email: str) -> None:
    """The operator's command, run as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "users", "disable", email],
        cwd=ROOT,
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def ended_every_way(
    server: Any, front: Instance, settings: dict[str, str]
) -> dict[str, str]:
    """Obtain tokens through ``front`` and end each a different way."""
    alice = make_user(server, "alice@example.com")
    bob = make_user(server, "bob@example.com")
    browser = front.browser()
    ended: dict[str, str] = {}

    client = register_client(browser)
    token = redeem(browser, client, *get_code(browser, client, alice)[:2])
    ended["access token revoked"] = token.json()["access_token"]
    assert revoke(browser, client, {"token": ended["access token revoked"]}).ok

    # A replayed code ends its token, and the consent when a refresh chain
    # came with it.
    for grants in (["authorization_code"], ["authorization_code", "refresh_token"]):
        client = register_client(browser, grant_types=grants)
        code, verifier, _ = get_code(browser, client, alice)
        token = redeem(browser, client, code, verifier)
        ended[f"code replayed ({' '.join(grants)})"] = token.json()["access_token"]
        assert redeem(browser, client, code, verifier).status_code == 400

    client = register_client(browser)
    token = redeem(browser, client, *get_code(browser, client, alice)[:2])
    ended["consent revoked on the account page"] = token.json()["access_token"]
    revoke_from_account_page(browser, client["client_id"])

    client, tokens = obtain_tokens(browser, alice)
    first = refresh(browser, client, tokens["refresh_token"]).json()
    assert refresh(browser, client, tokens["refresh_token"]).status_code == 400
    ended["refresh token reused"] = tokens["access_token"]
    ended["refreshed, then reused"] = first["access_token"]

    manager = obtain_token(browser, alice)
    key = new_key(browser, manager)
    ended["API key revoked"] = key_token(browser, key["key"])
    gone = browser.delete(f"/api-keys/{key['id']}", headers=bearer(manager))
    assert gone.status_code == 204

    bob_browser = front.browser()
    ended["account disabled"] = obtain_token(bob_browser, bob)
    disable(settings, bob["email"])
    return ended


def accepted(instance: Instance, token: str) -> list[str]:
    """Where ``instance`` still honours ``token``: /mcp, /auth/verify, /introspect."""
    browser = instance.browser()
    places = []
    if whoami(browser, token).status_code != 401:
        places.append("/mcp")
    if browser.get("/auth/verify", headers=bearer(token)).status_code != 401:
        places.append("/auth/verify")
    answer = browser.post("/introspect", data={"token": token}, auth=GATEWAY)
    if answer.json() != {"active": False}:
        places.append("/introspect")
    return places


def honoured(instances: list[Any], tokens: dict[str, str]) -> dict[str, list[str]]:
    """Each token any instance still honours, with where."""
    found = {}
    for why, token in tokens.items():
        for instance in instances:
            places = accepted(instance, token)
            if places:
                found[f"{why} at {instance.url}"] = places
    return found


def works_everywhere(instances: list[Any], token: str) -> bool:
    return all(
        accepted(instance, token) == ["/mcp", "/auth/verify", "/introspect"]
        for instance in instances
    )


def watch(instances: list[Any], ended: dict[str, str], fresh: str) -> None:
    """For a while, as the instances reconnect and reload: none comes back."""
    deadline = time.monotonic() + WATCH_SECONDS
    while True:
        assert honoured(instances, ended) == {}
        assert works_everywhere(instances, fresh)
        if time.monotonic() > deadline:
            return


@pytest.fixture
def story(
    server: Any, instances: list[Instance], settings: dict[str, str]
) -> tuple[dict[str, str], str]:
    """Tokens ended every way, and one nobody ended; each instance has seen them."""
    ended = ended_every_way(server, instances[0], settings)
    fresh = obtain_token(instances[0].browser(), make_user(server, "carol@example.com"))
    # Both instances have loaded their copy of the denylist and use it.
    assert until(lambda: honoured(instances, ended) == {}, 5.0)
    assert works_everywhere(instances, fresh)
    return ended, fresh


def test_a_redis_restarted_empty_brings_no_revoked_token_back(
    instances: list[Instance], private_redis: Any, story: Any
) -> None:
    ended, fresh = story

    private_redis.stop()
    private_redis.start(empty=True)

    watch(instances, ended, fresh)


def test_a_flushed_redis_brings_no_revoked_token_back(
    instances: list[Instance],
    private_redis: Any,
    story: Any,
    make_server: Any,
    settings: dict[str, str],
) -> None:
    ended, fresh = story

    private_redis.run("FLUSHALL")
    # An instance started now knows nothing but what Redis and Postgres say.
    late = make_server(
        REDIS_URL=private_redis.url,
        RESOURCE_SERVERS=f"gateway:{SECRET}",
        ISSUER=instances[0].url,
    )

    watch([*instances, late], ended, fresh)


def test_a_redis_back_from_an_older_snapshot_brings_no_revoked_token_back(
    server: Any,
    instances: list[Instance],
    private_redis: Any,
    settings: dict[str, str],
) -> None:
    fresh = obtain_token(instances[0].browser(), make_user(server, "carol@example.com"))
    assert works_everywhere(instances, fresh)
    # Its last save, before anything below was revoked; that snapshot says
    # it was rebuilt from Postgres, as it then was.
    assert private_redis.run("GET", "denylist:rebuilt") is not None
    private_redis.run("SAVE")
    ended = ended_every_way(server, instances[0], settings)
    assert until(lambda: honoured(instances, ended) == {}, 5.0)

    private_redis.crash()
    private_redis.start()

    watch(instances, ended, fresh)


def _one_kept_one_ended(live: Any, user: dict[str, str]) -> tuple[Any, Any, Any]:
    """A token that stays good and one whose consent the person revoked, with
    the process's copy of the denylist current."""
    browser = live.browser()
    kept = obtain_token(browser, user)
    client = register_client(browser)
    ended = redeem(browser, client, *get_code(browser, client, user)[:2]).json()
    revoke_from_account_page(browser, client["client_id"])
    assert until(live.app.extensions["denylist_view"].is_current, 5.0)
    return browser, kept, ended


def test_while_another_instance_rebuilds_the_record_decides(
    make_server: Any, user: dict[str, str], restartable_redis: Any
) -> None:
    live = make_server(REDIS_URL=restartable_redis.url)
    browser, kept, ended = _one_kept_one_ended(live, user)
    view = live.app.extensions["denylist_view"]

    restartable_redis.stop()
    restartable_redis.start(empty=True)
    # Another instance has begun rebuilding and has not finished.
    restartable_redis.run("SET", "denylist:rebuilding", "elsewhere", "EX", "60")

    assert until(lambda: not view.is_current(), 5.0)
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        assert whoami(browser, ended["access_token"]).status_code == 401
        assert whoami(browser, kept).status_code == 200
        # A copy of what this Redis holds now would be missing the denial.
        assert not view.is_current()

    restartable_redis.run("DEL", "denylist:rebuilding")
    assert until(view.is_current, 5.0)
    assert whoami(browser, ended["access_token"]).status_code == 401
    assert restartable_redis.run("KEYS", "denied:consent:*") != []


def test_denials_are_kept_until_their_tokens_expire_then_pruned(
    browser: Browser, user: dict[str, str], engine: Any
) -> None:
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO denied_tokens (jti, expires_at)"
                " SELECT 'expired-' || n, now() - interval '1 minute'"
                " FROM generate_series(1, 3) AS n"
            )
        )
    client = register_client(browser)
    token = redeem(browser, client, *get_code(browser, client, user)[:2])
    token = token.json()["access_token"]

    assert revoke(browser, client, {"token": token}).status_code == 200

    with engine.connect() as connection:
        kept = connection.execute(
            sqlalchemy.text("SELECT jti, expires_at - now() AS left FROM denied_tokens")
        ).all()
    assert [row.jti for row in kept] == [claims_of(token)["jti"]]
    assert 0 < kept[0].left.total_seconds() <= 3601


def test_a_redis_that_refuses_info_still_forgets_nothing_when_emptied(
    make_server: Any, user: dict[str, str], tmp_path: Path
) -> None:
    # Some managed Redis restrict INFO; then only a missing sentinel can
    # show a Redis that lost its data, and that must still be enough.
    tmp_path.chmod(0o755)
    guarded = RestartableRedis(tmp_path / "redis", "--rename-command", "INFO", "")
    try:
        with pytest.raises(redis.ResponseError):
            guarded.run("INFO", "server")
        live = make_server(REDIS_URL=guarded.url)
        browser, kept, ended = _one_kept_one_ended(live, user)
        view = live.app.extensions["denylist_view"]

        guarded.stop()
        guarded.start(empty=True)

        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            assert whoami(browser, ended["access_token"]).status_code == 401
            assert whoami(browser, kept).status_code == 200
        assert until(view.is_current, 5.0)
    finally:
        guarded.stop()
