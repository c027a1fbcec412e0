"""An attacker's look at this round's speed changes.

Refresh statements built once with parameters, client credentials answered
from the in-memory denylist, ``last_used_at`` noted once a minute per
process, ``db.transaction()`` opening no session for a block that uses
none, and the limiter's hooks confined to limited views with most limits
counted by two counters. A test here either shows a hole (it failed until
the app was fixed) or pins down a refusal that matters.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import sqlalchemy
from conftest import LiveServer, make_user
from helpers import Browser, csrf_token, select_one, until, wait_for_current_view
from redis.exceptions import ConnectionError as RedisConnectionError
from test_machine_attacks import create_service

from app import process_cache as process_cache_module
from app.db import db
from app.denylist import process_cache
from app.denylist_record import client_key, user_key
from app.models import User
from app.oauth.clients import CLIENT_CACHE, CLIENT_CACHE_SIZE
from app.users import disable_user

# --- a disabled person's service clients ---------------------------------------------


def _token_for(server: LiveServer, service: dict[str, str]) -> requests.Response:
    return requests.post(
        server.url + "/token",
        data={"grant_type": "client_credentials"},
        auth=(service["client_id"], service["client_secret"]),
        timeout=30,
    )


def _waiting_on_a_lock(engine: sqlalchemy.Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        ).scalar()
    return bool(waiting)


def _live_clients_of_disabled_people(engine: sqlalchemy.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sqlalchemy.text(
                    "SELECT c.client_id FROM oauth_clients c"
                    " JOIN users u ON u.id = c.owner_id"
                    " WHERE c.revoked_at IS NULL AND NOT u.is_active"
                )
            ).scalars()
        )


def _create_while_disabling(
    server: LiveServer, engine: sqlalchemy.Engine, person: dict, create: Callable
) -> Any:
    """Run ``create`` (which reads the person as enabled first) while the
    person is being disabled: it reads them before the disabling commits and
    reaches the person's row while the disabling holds it."""
    made: dict[str, Any] = {}

    def run() -> None:
        made["result"] = create()

    with server.app.app_context(), db.transaction():
        user = db.session.get(User, person["id"])
        assert user is not None
        disable_user(user)  # the person's row is locked until the commit
        racer = threading.Thread(target=run)
        racer.start()
        # The maker read the person as enabled (the disabling is not
        # committed) and now waits for the row the disabling holds.
        assert until(lambda: _waiting_on_a_lock(engine), 10)
    racer.join(30)
    assert not racer.is_alive()
    return made["result"]


def _after_the_marker_is_gone(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    redis_client: Any,
    person: dict,
) -> LiveServer:
    """Another instance of ``server``, as it is once the person's denial
    marker has expired (``ACCESS_TOKEN_TTL`` + 60 s after the disabling):
    every process has forgotten it by then."""
    redis_client.delete(user_key(person["id"]))
    return make_server(ISSUER=server.url)


def test_a_service_client_made_on_the_page_while_its_person_is_disabled_gets_no_token(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    redis_client: Any,
) -> None:
    person = make_user(server, "racer@example.com")
    browser = Browser(server)
    assert browser.login(person["email"], person["password"]).status_code == 302
    form = {
        "csrf_token": csrf_token(browser),
        "name": "ci",
        "resource": server.issuer + "/mcp",
        "scopes": "",
        "acts_for": "me",
    }

    def create() -> requests.Response:
        return browser.post("/account/service-clients", data=form)

    response = _create_while_disabling(server, engine, person, create)
    assert response.status_code in (201, 302, 400, 403), response.status_code
    if response.status_code == 201:
        # Made after all: then it must be dead like the person's others.
        client_id = select_one(response, "#service-client-id").get_text(strip=True)
        secret = select_one(response, "#service-client-secret").get_text(strip=True)
        service = {"client_id": client_id, "client_secret": secret}
        later = _after_the_marker_is_gone(server, make_server, redis_client, person)
        answer = _token_for(later, service)
        assert answer.status_code in (400, 401), (answer.status_code, answer.text)
    assert _live_clients_of_disabled_people(engine) == []


def test_a_service_client_made_by_the_operator_while_its_person_is_disabled_is_refused(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    engine: sqlalchemy.Engine,
    redis_client: Any,
) -> None:
    person = make_user(server, "racer@example.com")
    runner = server.app.test_cli_runner()
    args = [
        "clients",
        "create-service",
        "svc-" + secrets.token_hex(3),
        "--resource",
        server.issuer + "/mcp",
        "--for",
        person["email"],
    ]

    result = _create_while_disabling(
        server, engine, person, lambda: runner.invoke(args=args)
    )
    assert result.exit_code != 0, result.output
    assert _live_clients_of_disabled_people(engine) == []


def test_a_client_row_read_during_the_disabling_dies_though_its_last_eviction_is_lost(
    make_server: Callable[..., LiveServer],
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy instance reads a service client's row again just after the
    disabling announced its eviction and before it committed, and the
    announcement after the commit never leaves the disabling process (its
    network to Redis fails there, while the instance's stays up). The
    instance must not then hand the disabled person's client tokens once the
    denial markers expire: with no Postgres read per request, only the row's
    own lifetime in the cache can end it."""
    from app.oauth import clients

    one = make_server()
    two = make_server(ISSUER=one.url)
    person = make_user(one, "busy@example.com")
    service = create_service(one, "--for", person["email"])
    assert _token_for(two, service).status_code == 200
    wait_for_current_view(two)
    assert _token_for(two, service).status_code == 200  # and its row kept

    def cached() -> Any:
        with two.app.app_context():
            cache = process_cache(CLIENT_CACHE, CLIENT_CACHE_SIZE)
            return cache.get(service["client_id"]) if cache is not None else None

    def evicted() -> bool:
        with two.app.app_context():
            cache = process_cache(CLIENT_CACHE, CLIENT_CACHE_SIZE)
            return cache is not None and cache.get(service["client_id"]) is None

    assert until(lambda: cached() is not None, 5)

    def lost(*_: Any) -> None:
        raise RedisConnectionError("the network to Redis failed")

    with (
        pytest.raises(RedisConnectionError),
        one.app.app_context(),
        db.transaction(),
    ):
        user = db.session.get(User, person["id"])
        assert user is not None
        disable_user(user)  # revoked, denied and evicted, not yet committed
        assert until(evicted, 5)
        wait_for_current_view(two)  # so that what it reads, it keeps
        # Read again meanwhile (as not revoked) and kept; refused all the
        # same, by the person's marker.
        refused = _token_for(two, service)
        assert refused.status_code == 400, refused.text
        assert until(lambda: cached() is not None, 5)
        monkeypatch.setattr(clients, "evict", lost)  # the one after the commit

    # ACCESS_TOKEN_TTL + 60 s later: every denial marker has expired.
    view = two.app.extensions["denylist_view"]
    for key in (user_key(person["id"]), client_key(service["client_id"])):
        redis_client.delete(key)
        view._markers.pop(key, None)
    real_time = time.time
    monkeypatch.setattr(process_cache_module, "time", _Later(real_time() + 3660))
    answer = _token_for(two, service)
    assert answer.status_code in (400, 401), (answer.status_code, answer.text)


class _Later:
    """``time`` as a process cache reads it, at a later moment."""

    def __init__(self, moment: float) -> None:
        self.moment = moment

    def time(self) -> float:
        return self.moment


def test_without_redis_a_persons_client_is_503_and_one_for_itself_still_served(
    make_server: Callable[..., LiveServer], doomed_redis: Any
) -> None:
    """Whether a person is disabled is asked of the denylist now: with Redis
    gone (and the copy no longer current) that is a 503, never a 500 and
    never a token; a client acting for itself needs no such answer."""
    live = make_server(REDIS_URL=doomed_redis.url)
    person = make_user(live, "owner@example.com")
    theirs = create_service(live, "--for", person["email"])
    its_own = create_service(live)
    assert _token_for(live, theirs).status_code == 200
    assert _token_for(live, its_own).status_code == 200

    doomed_redis.stop()
    view = live.app.extensions["denylist_view"]
    assert until(lambda: not view.is_current(), 5)
    answer = _token_for(live, theirs)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert _token_for(live, its_own).status_code == 200


# --- db.transaction(): commits only what began, still commits all of it --------------


def _emails(engine: sqlalchemy.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(sqlalchemy.text("SELECT email FROM users")).scalars()
        )


def test_a_block_that_only_adds_commits_what_it_added(
    server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    """No statement is sent before the commit's flush: the session has begun
    all the same, so the block commits."""
    with server.app.test_request_context("/"), db.transaction():
        db.session.add(User(email="added@example.com"))
    assert "added@example.com" in _emails(engine)


def test_a_change_to_a_row_read_in_an_earlier_block_is_committed(
    server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    """Rows outlive their commit (``expire_on_commit=False``): changing one in
    a later block, with no statement of its own, still commits."""
    with server.app.test_request_context("/"):
        with db.transaction():
            user = User(email="before@example.com")
            db.session.add(user)
        with db.transaction():
            user.email = "after@example.com"
    assert _emails(engine) == {"after@example.com"}


def test_what_a_block_said_after_its_commit_is_unsaid_when_it_raises(
    server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    said: list[str] = []
    with server.app.test_request_context("/"):
        with pytest.raises(RuntimeError), db.transaction():
            db.session.add(User(email="never@example.com"))
            db.session.flush()
            db.after_commit(lambda: said.append("never"))
            raise RuntimeError("the block fails after its write")
        with db.transaction():
            db.after_commit(lambda: said.append("later"))
    assert said == ["later"]
    assert _emails(engine) == set()


# --- last_used_at, noted at most once a minute per process --------------------


def _last_used(engine: sqlalchemy.Engine, client_id: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT last_used_at FROM oauth_clients WHERE client_id = :id"
            ),
            {"id": client_id},
        ).scalar_one()


def _forget_use(engine: sqlalchemy.Engine, client_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE oauth_clients SET last_used_at = NULL WHERE client_id = :id"
            ),
            {"id": client_id},
        )


def test_a_use_is_remembered_only_once_it_is_stored(
    server: LiveServer, engine: sqlalchemy.Engine
) -> None:
    """Within the minute a process writes ``last_used_at`` once; but a
    noting whose transaction rolled back is not remembered, so the next
    token writes it."""
    from app import service_clients

    service = create_service(server)
    client_id = service["client_id"]
    assert _token_for(server, service).status_code == 200
    assert _last_used(engine, client_id) is not None

    # Noted within the minute: the next token costs Postgres nothing.
    _forget_use(engine, client_id)
    assert _token_for(server, service).status_code == 200
    assert _last_used(engine, client_id) is None

    service_clients._noted_at.clear()
    with server.app.test_request_context("/"):
        with pytest.raises(RuntimeError), db.transaction():
            service_clients.note_use(client_id)
            raise RuntimeError("the transaction fails after the noting")
    assert _last_used(engine, client_id) is None

    assert _token_for(server, service).status_code == 200
    assert _last_used(engine, client_id) is not None
