"""The audit trail: each event, driven over HTTP or the CLI, read back as JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
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
    get_code,
    new_key,
    pkce_pair,
    redeem,
    register_client,
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
        return event


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
    failed = audit_log.one("sign_in_failed")
    assert failed["account"] == account and "user_id" not in failed
    assert failed["method"] == "password"


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
    assert event["user_id"] == user["id"]
    assert event["client_id"] == client["client_id"]
    assert event["consent_id"] == action.split("/")[-2]
    assert event["api_key_ids"] == [key["id"]]
    assert event["request_id"] == request_id(response)


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

    expected = {
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
    expected = {"user_id": user["id"], "api_key_id": key_id, "client_id": None}
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
    assert event["client_id"] == client["client_id"]
    assert event["user_id"] == user["id"]
    assert event["revoked_jti"] == jwt_claims(first.json()["access_token"])["jti"]
    assert event["request_id"] == request_id(replay)


def test_disabling_a_user_is_on_stdout_despite_log_level_warning(
    base_env: dict, user: dict
) -> None:
    assert base_env["LOG_LEVEL"] == "WARNING"
    result = flask_cli(base_env, "users", "disable", user["email"])
    # A command's log lines go to stderr; its stdout is its answer.
    [event] = [e for e in json_lines(result.stderr) if e.get("name") == "app.audit"]
    assert event["event"] == "user_disabled"
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
