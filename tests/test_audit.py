"""The audit trail: each event, driven over HTTP or the CLI, read back as JSON,
with who acted: the person, the client, an operator or the service itself."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import (
    Browser,
    action_for,
    authorize_params,
    bearer,
    consent,
    create_on_page,
    created_key,
    csrf_token,
    get_code,
    new_key,
    obtain_tokens,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_resource,
    revoke,
    run_command,
)

from app import audit


class AuditLog(logging.Handler):
    """The app's audit lines, formatted as its stdout handler formats them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.getLogger().handlers[0].formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self, name: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        return [event for event in parsed if event["event"] == name]

    def one(self, name: str) -> dict[str, Any]:
        [event] = self.events(name)
        assert event["message"] == "audit" and event["level"] == "INFO"
        assert event["name"] == "app.audit"
        assert event["actor"] in ACTORS
        return event


#: Who can act: a person (on a page, or by their bearer token), a client
#: (authenticated at an endpoint), an operator (a command), the service.
ACTORS = {"person", "client", "operator", "service"}


@pytest.fixture
def audit_log(server: Any) -> Iterator[AuditLog]:
    handler = AuditLog()
    logger = logging.getLogger("app.audit")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def flask_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def digest(base_env: dict[str, str], email: str) -> str:
    return flask_cli(base_env, "users", "digest", email).stdout.strip()


def request_id(response: requests.Response) -> str:
    return response.headers["X-Request-ID"]


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def authorized_client(browser: Browser, user: dict) -> tuple[dict, str]:
    """Register a client, approve it, redeem; return the client and its token."""
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    return client, response.json()["access_token"]


def test_sign_in_success_and_failure_name_the_account_by_its_id(
    browser: Browser, user: dict, audit_log: AuditLog, base_env: dict
) -> None:
    page = browser.get("/login")
    response = browser.post(
        "/login",
        data={**browser.form(page), "email": "  ALICE@example.com", "password": "x"},
    )
    assert response.status_code == 401
    response = browser.login(user["email"], user["password"])
    assert response.status_code == 302

    event = audit_log.one("sign_in_succeeded")
    account = digest(base_env, "Alice@Example.com")
    assert account == user["id"]
    assert event["account"] == account
    assert event["user_id"] == user["id"]
    assert event["method"] == "password"
    assert event["address"] == "127.0.0.1"
    assert event["request_id"] == request_id(response)
    assert event["actor"] == "person"
    failed = audit_log.one("sign_in_failed")
    assert failed["account"] == account and "user_id" not in failed
    assert failed["method"] == "password"
    assert failed["actor"] == "person"


def test_sign_in_failure_for_an_unknown_email(
    browser: Browser, audit_log: AuditLog, base_env: dict
) -> None:
    page = browser.get("/login")
    response = browser.post(
        "/login",
        data={**browser.form(page), "email": "nobody@example.com", "password": "pw"},
        headers={"X-Request-ID": "audit-test-1"},
    )
    assert response.status_code == 401
    event = audit_log.one("sign_in_failed")
    assert event == {
        **event,
        "actor": "person",
        "account": digest(base_env, "nobody@example.com"),
        "address": "127.0.0.1",
        "method": "password",
        "provider": None,
        "reason": "credentials",
        "request_id": "audit-test-1",
    }
    assert audit_log.events("sign_in_succeeded") == []
    # Keyed by SECRET_KEY: hashing guessed addresses does not find the one tried.
    unkeyed = hashlib.sha256(b"nobody@example.com").hexdigest()
    assert event["account"] not in unkeyed
    other_key = {**base_env, "SECRET_KEY": secrets.token_urlsafe(32)}
    assert digest(other_key, "nobody@example.com") != event["account"]


@pytest.mark.parametrize(
    "decision, name", [("approve", "consent_granted"), ("deny", "consent_denied")]
)
def test_consent_given_and_denied(
    signed_in: Browser, user: dict, audit_log: AuditLog, decision: str, name: str
) -> None:
    client = register_client(signed_in)
    params = authorize_params(client, pkce_pair()[1], scope="read")
    response = consent(signed_in, params, decision)
    assert response.status_code == 302

    event = audit_log.one(name)
    assert event["actor"] == "person"
    assert event["user_id"] == user["id"]
    assert event["client_id"] == client["client_id"]
    assert event["scope"] == "read"
    assert event["request_id"] == request_id(response)
    other = "consent_denied" if name == "consent_granted" else "consent_granted"
    assert audit_log.events(other) == []


def test_consent_revoked_on_the_account_page_names_the_keys_it_took_down(
    server: Any, signed_in: Browser, user: dict, audit_log: AuditLog
) -> None:
    client, token = authorized_client(server.browser(), user)
    key = new_key(signed_in, token)
    page = signed_in.get("/account")
    action = action_for(page, "/account/consents/")
    response = signed_in.post(action, data=signed_in.form(page))
    assert response.status_code == 302

    event = audit_log.one("consent_revoked")
    assert event["actor"] == "person"
    assert event["user_id"] == user["id"]
    assert event["client_id"] == client["client_id"]
    assert event["consent_id"] == action.split("/")[-2]
    assert event["api_key_ids"] == [key["id"]]
    assert event["request_id"] == request_id(response)


def test_a_refresh_token_revoked_by_its_client_ends_the_consent_as_the_client(
    browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client, tokens = obtain_tokens(browser, user)
    response = revoke(browser, client, {"token": tokens["refresh_token"]})
    assert response.status_code == 200

    # RFC 7009 §2.1: the whole consent ends, and the client did it, not the person.
    event = audit_log.one("consent_revoked")
    assert event["actor"] == "client"
    assert event["user_id"] == user["id"]
    assert event["client_id"] == client["client_id"]
    assert event["request_id"] == request_id(response)


def test_a_reused_refresh_token_ends_the_consent_as_the_service(
    browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client, tokens = obtain_tokens(browser, user)
    first = refresh(browser, client, tokens["refresh_token"]).json()
    assert refresh(browser, client, first["refresh_token"]).status_code == 200
    reuse = refresh(browser, client, tokens["refresh_token"])
    assert reuse.status_code == 400

    reused = audit_log.one("refresh_token_reused")
    ended = audit_log.one("consent_revoked")
    assert reused["actor"] == ended["actor"] == "service"
    assert reused["consent_id"] == ended["consent_id"]
    assert ended["user_id"] == user["id"]
    assert ended["client_id"] == client["client_id"]
    assert reused["request_id"] == ended["request_id"] == request_id(reuse)


def test_a_removed_resource_ends_its_consents_as_the_operator(
    server: Any, browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    uri = register_resource(server, server.issuer + "/github", scopes="repo")
    client = register_client(browser)
    get_code(browser, client, user, resource=uri, scope="repo")

    removed = run_command(server, "resources", "remove", uri)
    assert removed.exit_code == 0, removed.output

    assert audit_log.one("resource_removed")["actor"] == "operator"
    event = audit_log.one("consent_revoked")
    assert event["actor"] == "operator"
    assert event["client_id"] == client["client_id"]
    assert event["request_id"] is None


def test_api_keys_made_and_revoked_by_a_client(
    browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client, token = authorized_client(browser, user)
    created = browser.post(
        "/api-keys", json={"name": "ci", "scopes": ["read"]}, headers=bearer(token)
    )
    assert created.status_code == 201
    key_id = created.json()["id"]
    revoked = browser.delete(f"/api-keys/{key_id}", headers=bearer(token))
    assert revoked.status_code == 204

    # With the person's bearer token: the person's act, through their client.
    expected = {
        "actor": "person",
        "user_id": user["id"],
        "api_key_id": key_id,
        "client_id": client["client_id"],
        "scopes": ["read"],
    }
    made = audit_log.one("api_key_created")
    assert made == {**made, **expected, "request_id": request_id(created)}
    gone = audit_log.one("api_key_revoked")
    assert gone == {**gone, **expected, "request_id": request_id(revoked)}


def test_api_keys_made_and_revoked_on_the_account_page(
    signed_in: Browser, user: dict, audit_log: AuditLog
) -> None:
    created = create_on_page(signed_in, scopes=["read", "write"])
    created_key(created)
    page = signed_in.get("/account")
    action = action_for(page, "/account/api-keys/")
    revoked = signed_in.post(action, data=signed_in.form(page))
    assert revoked.status_code == 302

    key_id = action.split("/")[-2]
    expected = {
        "actor": "person",
        "user_id": user["id"],
        "api_key_id": key_id,
        "client_id": None,
    }
    made = audit_log.one("api_key_created")
    assert made == {**made, **expected, "scopes": ["read", "write"]}
    assert made["request_id"] == request_id(created)
    gone = audit_log.one("api_key_revoked")
    assert gone == {**gone, **expected, "request_id": request_id(revoked)}


def test_a_replayed_code_names_the_token_it_revoked(
    browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    first = redeem(browser, client, code, verifier)
    assert first.status_code == 200
    replay = redeem(browser, client, code, verifier)
    assert replay.status_code == 400

    event = audit_log.one("authorization_code_replayed")
    assert event["actor"] == "service"
    assert event["client_id"] == client["client_id"]
    assert event["user_id"] == user["id"]
    assert event["revoked_jti"] == jwt_claims(first.json()["access_token"])["jti"]
    assert event["request_id"] == request_id(replay)


def test_a_replayed_code_ends_its_consent_as_the_service(
    browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client = register_client(
        browser, grant_types=["authorization_code", "refresh_token"]
    )
    code, verifier, _ = get_code(browser, client, user)
    assert redeem(browser, client, code, verifier).status_code == 200
    replay = redeem(browser, client, code, verifier)
    assert replay.status_code == 400

    # The chain the code began ends with its consent: the service's detection,
    # not the person withdrawing it.
    assert audit_log.one("authorization_code_replayed")["actor"] == "service"
    event = audit_log.one("consent_revoked")
    assert event["actor"] == "service"
    assert event["user_id"] == user["id"]
    assert event["client_id"] == client["client_id"]


def test_disabling_a_user_is_on_stdout_despite_log_level_warning(
    base_env: dict, user: dict
) -> None:
    assert base_env["LOG_LEVEL"] == "WARNING"
    result = flask_cli(base_env, "users", "disable", user["email"])
    # A command's log lines go to stderr; its stdout is its answer.
    [event] = [e for e in json_lines(result.stderr) if e.get("name") == "app.audit"]
    assert event["event"] == "user_disabled"
    assert event["actor"] == "operator"
    assert event["user_id"] == user["id"]
    assert event["account"] == digest(base_env, user["email"])
    assert event["request_id"] is None  # no request: an operator's command


def test_no_audit_line_carries_a_secret(
    server: Any, browser: Browser, user: dict, audit_log: AuditLog
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    token = redeem(browser, client, code, verifier).json()["access_token"]
    api_key = new_key(browser, token)
    browser.delete(f"/api-keys/{api_key['id']}", headers=bearer(token))
    page_key = created_key(create_on_page(browser))
    redeem(browser, client, code, verifier)  # a replay, which revokes ``token``
    page = browser.get("/account")
    browser.post(action_for(page, "/account/consents/"), data=browser.form(page))
    browser.post("/login", data={**browser.form(page), "email": user["email"]})

    secrets = [
        user["email"],
        user["password"],
        code,
        verifier,
        token,
        client["client_secret"],
        api_key["key"],
        page_key,
        browser.form(page)["csrf_token"],
        *(cookie.value for cookie in browser.cookies),
    ]
    assert len(audit_log.lines) >= 8
    for line in audit_log.lines:
        for secret in secrets:
            assert secret not in line
        assert json.loads(line)["actor"] in ACTORS


def test_service_clients_made_and_revoked_by_a_person_or_an_operator(
    server: Any, signed_in: Browser, user: dict, audit_log: AuditLog
) -> None:
    mcp = server.issuer + "/mcp"
    data = {"name": "nightly", "resource": mcp, "scopes": "", "acts_for": "me"}
    made = signed_in.post(
        "/account/service-clients", data={**data, "csrf_token": csrf_token(signed_in)}
    )
    assert made.status_code == 201, made.text
    [mine] = audit_log.events("service_client_created")
    gone = signed_in.post(
        f"/account/service-clients/{mine['client_id']}/revoke",
        data={"csrf_token": csrf_token(signed_in)},
    )
    assert gone.status_code == 302
    made_by_command = run_command(
        server, "clients", "create-service", "ci", "--resource", mcp
    )
    assert made_by_command.exit_code == 0, made_by_command.output
    theirs = json.loads(made_by_command.stdout)["client_id"]
    revoked = run_command(server, "clients", "revoke", theirs)
    assert revoked.exit_code == 0, revoked.output

    created = {e["client_id"]: e for e in audit_log.events("service_client_created")}
    ended = {e["client_id"]: e for e in audit_log.events("service_client_revoked")}
    assert created[mine["client_id"]]["actor"] == "person"
    assert created[mine["client_id"]]["user_id"] == user["id"]
    assert ended[mine["client_id"]]["actor"] == "person"
    assert ended[mine["client_id"]]["request_id"] == request_id(gone)
    assert created[theirs]["actor"] == ended[theirs]["actor"] == "operator"
    assert created[theirs]["user_id"] is None
    assert ended[theirs]["request_id"] is None


def test_undeclared_fields_are_refused_and_secret_shapes_redacted(
    app: Any, audit_log: AuditLog
) -> None:
    with pytest.raises(TypeError, match="password"):
        audit.record(audit.SIGN_IN_FAILED, account="a", password="hunter2")
    with app.app_context():
        audit.record(audit.SIGN_IN_FAILED, account="lsk_abc", address="eyJa.eyJb.c")
    event = audit_log.one("sign_in_failed")
    assert event["account"] == event["address"] == audit.REDACTED
    assert "lsk_abc" not in audit_log.lines[0]


def test_the_actor_is_declared_with_the_event(app: Any, audit_log: AuditLog) -> None:
    # One actor declared: written without being named.
    with app.app_context():
        audit.record(audit.USER_DISABLED, user_id="u", account="u")
    assert audit_log.one("user_disabled")["actor"] == "operator"
    # Several: the caller must say which, and only one of those.
    with pytest.raises(TypeError, match="consent_revoked .*: no actor"):
        audit.record(audit.CONSENT_REVOKED, user_id="u")
    with pytest.raises(TypeError, match="service_client_revoked .*: not client"):
        audit.record(audit.SERVICE_CLIENT_REVOKED, audit.CLIENT, client_id="c")
    with pytest.raises(TypeError, match="refresh_token_reused .*: not operator"):
        audit.record(audit.REFRESH_TOKEN_REUSED, audit.OPERATOR, client_id="c")


def test_docs_list_every_event_with_its_actors_and_fields() -> None:
    text = (Path(__file__).parent.parent / "docs" / "audit.md").read_text()
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            name, _, actors, fields = line.strip("|").split(" | ")
            rows[name.strip("` ")] = (actors, fields)
    declared = [e for e in vars(audit).values() if isinstance(e, audit.Event)]
    assert sorted(rows) == sorted(e.name for e in declared)
    for event in declared:
        actors, fields = rows[event.name]
        named = set(re.findall(r"`([a-z_]+)`", actors)) & ACTORS
        assert named == set(event.actors), event.name
        assert event.fields <= set(re.findall(r"`([a-z_]+)`", fields)), event.name
