"""Service clients (client credentials) and private_key_jwt, end to end.

A service client is made by an operator (``flask --app app clients
create-service``) or by a person on the account page; it is bound to one
resource and a scope ceiling and gets tokens with ``grant_type=
client_credentials``, authenticated by a secret (``client_secret_basic``) or by
a signed assertion (``private_key_jwt``, RFC 7523 §2.2) checked against its
inline JWKS or its ``jwks_uri``. Any client may authenticate so at /token,
/revoke and /introspect, including one registered dynamically with keys.

Everything runs against the real app on a socket; the JWKS host is a real HTTP
server on loopback (the app runs with ``CIMD_ALLOW_LOOPBACK=on``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from conftest import LiveServer, make_user
from devservices import free_port
from document_server import DocumentServer
from helpers import (
    MCP_HEADERS,
    ROOT,
    SIGNING_ALGORITHMS,
    Browser,
    assertion_form,
    b64url,
    bearer,
    claims_of,
    client_assertion,
    compact_jwt,
    csrf_token,
    get_code,
    obtain_tokens,
    public_jwks,
    register_client,
    register_resource,
    run_command,
    signing_key,
    soup,
    start_web,
    whoami,
    whoami_output,
)

GATEWAY_SECRET = "gateway-secret-of-some-length"
GATEWAY = ("gateway", GATEWAY_SECRET)


# --- Servers, people, keys ------------------------------------------------------


@pytest.fixture(scope="module")
def live(base_env: dict[str, str]) -> Iterator[LiveServer]:
    """One app for the module: JWKS on loopback allowed, introspection on."""
    server = LiveServer(
        base_env,
        {
            "CIMD_ALLOW_LOOPBACK": "on",
            "RESOURCE_SERVERS": f"gateway:{GATEWAY_SECRET}",
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[DocumentServer]:
    """Where clients publish their keys (plain HTTP on 127.0.0.1)."""
    host = DocumentServer()
    yield host
    host.stop()


@pytest.fixture
def browser(live: LiveServer) -> Browser:
    return live.browser()


@pytest.fixture
def person(live: LiveServer) -> dict[str, str]:
    return make_user(live, "ops@example.com")


@pytest.fixture
def signed_in(live: LiveServer, person: dict[str, str]) -> Browser:
    """A browser with ``person`` signed in through the real form."""
    browser = live.browser()
    assert browser.login(person["email"], person["password"]).status_code == 302
    return browser


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return signing_key("RS256", kid="rsa-1")


def mcp_uri(server: Any) -> str:
    return server.issuer + "/mcp"


# --- Steps ------------------------------------------------------------------------


def create_service(
    server: Any,
    *options: str,
    name: str = "nightly-ci",
    scopes: str = "read write",
    resource: str | None = None,
    jwks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``clients create-service`` (``jwks`` through ``--jwks-file``); its JSON."""
    result = create_service_command(
        server, *options, name=name, scopes=scopes, resource=resource, jwks=jwks
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def create_service_command(
    server: Any,
    *options: str,
    name: str = "nightly-ci",
    scopes: str = "read write",
    resource: str | None = None,
    jwks: Any = None,
) -> Any:
    args = ["clients", "create-service", name]
    args += ["--resource", resource or mcp_uri(server), "--scopes", scopes, *options]
    with tempfile.TemporaryDirectory() as folder:
        if jwks is not None:
            path = Path(folder) / "jwks.json"
            path.write_text(jwks if isinstance(jwks, str) else json.dumps(jwks))
            args += ["--jwks-file", str(path)]
        return run_command(server, *args)


def secret_token(browser: Browser, client: dict[str, Any], **data: str) -> Any:
    """client_credentials with ``client_secret_basic``."""
    return browser.post(
        "/token",
        data={"grant_type": "client_credentials", **data},
        auth=(client["client_id"], client["client_secret"]),
    )


def jwt_post(
    browser: Browser,
    path: str,
    client_id: str,
    key: Any,
    alg: str,
    data: dict[str, str],
    **changes: Any,
) -> Any:
    """POST a form to ``path`` authenticated by a fresh assertion (``changes``
    to its claims)."""
    assertion = client_assertion(key, alg, client_id, browser.server.issuer, **changes)
    return browser.post(path, data=assertion_form(assertion, **data))


def jwt_token(
    browser: Browser, client_id: str, key: Any, alg: str = "RS256", **data: str
) -> Any:
    """client_credentials with ``private_key_jwt``."""
    form = {"grant_type": "client_credentials", **data}
    return jwt_post(browser, "/token", client_id, key, alg, form)


def granted(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


def tools_list(browser: Browser, token: str) -> Any:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    return browser.post("/mcp", json=message, headers={**MCP_HEADERS, **bearer(token)})


def works_at_mcp(browser: Browser, token: str) -> bool:
    response = tools_list(browser, token)
    if response.status_code == 401:
        return False
    assert response.status_code == 200, response.text
    assert [t["name"] for t in response.json()["result"]["tools"]] == ["whoami"]
    return True


def introspect(browser: Browser, token: str) -> dict[str, Any]:
    response = browser.post("/introspect", data={"token": token}, auth=GATEWAY)
    assert response.status_code == 200, response.text
    return response.json()


def serve_jwks(host: DocumentServer, *keys: Any) -> tuple[str, str]:
    """Publish the public ``keys`` at a fresh path; ``(url, path)``."""
    path = f"/{secrets.token_hex(4)}/jwks.json"
    host.respond(path, json.dumps(public_jwks(*keys)))
    return host.url(path), path


def service_rows(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text("SELECT count(*) FROM oauth_clients")
        ).scalar_one()


def flask_shell(base_env: dict[str, str], *args: str, **settings: str) -> Any:
    """``flask --app app ARGS`` in a process of its own, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env={**os.environ, **base_env, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- The command line ------------------------------------------------------------


def test_create_service_with_a_secret_prints_it_once(
    live: LiveServer, browser: Browser
) -> None:
    created = create_service(live, name="nightly-ci", scopes="read write")

    assert set(created) >= {
        "client_id",
        "client_secret",
        "client_name",
        "token_endpoint_auth_method",
        "resource",
        "scope",
        "sub",
    }
    assert created["client_name"] == "nightly-ci"
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["resource"] == mcp_uri(live)
    assert created["scope"].split() == ["read", "write"]
    assert created["sub"] == created["client_id"]
    assert len(created["client_secret"]) >= 32

    body = granted(secret_token(browser, created))
    assert claims_of(body["access_token"])["client_id"] == created["client_id"]
    wrong = {**created, "client_secret": created["client_secret"] + "x"}
    refused(secret_token(browser, wrong), 401, "invalid_client")


def test_create_service_with_a_jwks_file_acting_for_a_person(
    live: LiveServer, browser: Browser, person: dict[str, str], rsa_key: Any
) -> None:
    created = create_service(
        live, "--for", person["email"], scopes="read", jwks=public_jwks(rsa_key)
    )

    assert created["token_endpoint_auth_method"] == "private_key_jwt"
    assert "client_secret" not in created
    assert created["sub"] == person["id"]
    assert created["scope"] == "read"

    body = granted(jwt_token(browser, created["client_id"], rsa_key))
    claims = claims_of(body["access_token"])
    assert claims["sub"] == person["id"]
    assert claims["client_id"] == created["client_id"]


def test_create_service_with_a_jwks_uri(
    live: LiveServer, browser: Browser, jwks_host: DocumentServer
) -> None:
    key = signing_key("ES256")
    url, path = serve_jwks(jwks_host, key)

    created = create_service(live, "--jwks-uri", url)

    assert created["token_endpoint_auth_method"] == "private_key_jwt"
    assert "client_secret" not in created
    body = granted(jwt_token(browser, created["client_id"], key, "ES256"))
    assert claims_of(body["access_token"])["sub"] == created["client_id"]
    assert jwks_host.requests[path] >= 1


def weak_rsa_jwks(bits: int = 1024, exponent: int = 65537) -> dict[str, Any]:
    """A JWK Set of one RSA public key too weak to take (made by hand: joserfc
    will not make one)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(exponent, bits).public_key().public_numbers()

    def b64int(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {
        "keys": [
            {
                "kty": "RSA",
                "kid": "weak",
                "n": b64int(numbers.n),
                "e": b64int(numbers.e),
            }
        ]
    }


def bad_jwks_cases() -> list[Any]:
    rsa = signing_key("RS256", kid="k")
    private = {"keys": [rsa.as_dict(private=True)]}
    symmetric = {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldA"}]}
    return [
        pytest.param(
            {"resource": "https://elsewhere.example/mcp"}, id="unknown-resource"
        ),
        pytest.param({"scopes": "read admin"}, id="scope-not-the-resources"),
        pytest.param({"jwks": "{not json"}, id="jwks-not-json"),
        pytest.param({"jwks": {"keys": "nope"}}, id="jwks-not-a-set"),
        pytest.param({"jwks": {"keys": []}}, id="jwks-empty"),
        pytest.param({"jwks": private}, id="jwks-with-a-private-key"),
        pytest.param({"jwks": symmetric}, id="jwks-with-a-symmetric-key"),
        pytest.param({"jwks": weak_rsa_jwks()}, id="jwks-with-a-1024-bit-rsa-key"),
        pytest.param({"jwks": weak_rsa_jwks(2048, 3)}, id="jwks-rsa-exponent-3"),
        pytest.param({"options": ["--for", "nobody@example.com"]}, id="unknown-email"),
        pytest.param(
            {
                "jwks": public_jwks(rsa),
                "options": ["--jwks-uri", "https://keys.example/jwks.json"],
            },
            id="both-jwks-options",
        ),
    ]


@pytest.mark.parametrize("case", bad_jwks_cases())
def test_create_service_errors_are_one_line_and_exit_1(
    live: LiveServer, engine: sqlalchemy.Engine, case: dict[str, Any]
) -> None:
    result = create_service_command(
        live,
        *case.get("options", []),
        scopes=case.get("scopes", "read"),
        resource=case.get("resource"),
        jwks=case.get("jwks"),
    )

    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0], (result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    assert service_rows(engine) == 0


def test_list_services_shows_the_service_clients_only(
    live: LiveServer, browser: Browser, person: dict[str, str], rsa_key: Any
) -> None:
    with_secret = create_service(live, name="builder")
    with_key = create_service(
        live, "--for", person["email"], name="deployer", jwks=public_jwks(rsa_key)
    )
    ordinary = register_client(browser)

    plain = run_command(live, "clients", "list-services")
    assert plain.exit_code == 0, plain.output
    for client in (with_secret, with_key):
        assert client["client_id"] in plain.stdout
    assert "builder" in plain.stdout and "deployer" in plain.stdout
    assert ordinary["client_id"] not in plain.stdout
    assert with_secret["client_secret"] not in plain.stdout

    listed = run_command(live, "clients", "list-services", "--json")
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)
    assert isinstance(entries, list)
    assert {e["client_id"] for e in entries} == {
        with_secret["client_id"],
        with_key["client_id"],
    }
    assert with_secret["client_secret"] not in listed.stdout


def test_revoke_from_another_process_ends_live_tokens_at_once(
    live: LiveServer, browser: Browser, base_env: dict[str, str]
) -> None:
    client = create_service(live)
    token = granted(secret_token(browser, client))["access_token"]
    assert works_at_mcp(browser, token)
    assert browser.get("/auth/verify", headers=bearer(token)).status_code == 200
    assert introspect(browser, token)["active"] is True

    # As an operator runs it: a process of its own, the live server elsewhere.
    revoked = flask_shell(
        base_env, "clients", "revoke", client["client_id"], ISSUER=live.issuer
    )

    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {client['client_id']}"
    assert not works_at_mcp(browser, token)
    assert browser.get("/auth/verify", headers=bearer(token)).status_code == 401
    assert introspect(browser, token) == {"active": False}
    refused(secret_token(browser, client), 401, "invalid_client")


def test_revoking_an_unknown_client_fails(live: LiveServer) -> None:
    result = run_command(live, "clients", "revoke", "no-such-client")
    assert result.exit_code == 1, result.output
    assert "revoked" not in result.stdout


def test_revoke_in_process_ends_a_private_key_jwt_clients_tokens(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client = create_service(live, jwks=public_jwks(rsa_key))
    token = granted(jwt_token(browser, client["client_id"], rsa_key))["access_token"]
    assert works_at_mcp(browser, token)

    revoked = run_command(live, "clients", "revoke", client["client_id"])

    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.strip() == f"revoked {client['client_id']}"
    assert not works_at_mcp(browser, token)
    refused(jwt_token(browser, client["client_id"], rsa_key), 401, "invalid_client")
    again = run_command(live, "clients", "revoke", client["client_id"])
    assert again.exit_code == 1, again.output


# --- The account page ------------------------------------------------------------


def page_create(browser: Browser, **fields: str) -> Any:
    data = {
        "csrf_token": csrf_token(browser),
        "name": "nightly",
        "resource": mcp_uri(browser.server),
        "scopes": "",
        "acts_for": "me",
        **fields,
    }
    return browser.post("/account/service-clients", data=data)


def shown(response: Any, element_id: str) -> str | None:
    tag = soup(response).select_one(f"#{element_id}")
    if tag is None:
        return None
    value = tag.get("value")
    return value if isinstance(value, str) else tag.get_text(strip=True)


def created_on_page(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    assert response.headers["Cache-Control"] == "no-store"
    client_id = shown(response, "service-client-id")
    assert client_id, response.text
    return {
        "client_id": client_id,
        "client_secret": shown(response, "service-client-secret"),
    }


def listing(browser: Browser, client_id: str) -> str:
    """The text of the account page's entry for ``client_id``."""
    page = browser.get("/account")
    assert page.status_code == 200
    assert "Service clients" in page.text and "Last used" in page.text
    entries = [
        row.get_text(" ", strip=True)
        for row in soup(page).select("tr, li")
        if client_id in row.get_text()
    ]
    assert entries, f"{client_id} is not listed"
    return entries[-1]


def page_revoke(browser: Browser, client_id: str, token: str | None = None) -> Any:
    data = {"csrf_token": csrf_token(browser) if token is None else token}
    return browser.post(f"/account/service-clients/{client_id}/revoke", data=data)


def test_the_page_makes_a_secret_client_used_then_listed(
    signed_in: Browser, person: dict[str, str], live: LiveServer
) -> None:
    page = signed_in.get("/account")
    assert "Service clients" in page.text

    response = page_create(signed_in, name="nightly <build>", scopes="read")

    client = created_on_page(response)
    assert client["client_secret"]
    assert "nightly &lt;build&gt;" in response.text
    account = signed_in.get("/account")
    assert client["client_secret"] not in account.text  # shown once only
    before = listing(signed_in, client["client_id"])
    assert "never" in before.lower()

    body = granted(secret_token(live.browser(), client))
    claims = claims_of(body["access_token"])
    assert claims["sub"] == person["id"]
    assert claims["scope"] == "read"
    assert claims["aud"] == mcp_uri(live)

    after = listing(signed_in, client["client_id"])
    assert "never" not in after.lower(), after
    # "Never" became a time (the entry already shows when it was made).
    clock = re.compile(r"\d{1,2}:\d{2}")
    assert len(clock.findall(after)) == len(clock.findall(before)) + 1, after


def test_the_page_makes_a_key_client_acting_for_itself(
    signed_in: Browser, live: LiveServer, rsa_key: Any
) -> None:
    response = page_create(
        signed_in, name="agent", acts_for="self", jwks=json.dumps(public_jwks(rsa_key))
    )

    client = created_on_page(response)
    assert not client["client_secret"]
    body = granted(jwt_token(live.browser(), client["client_id"], rsa_key))
    claims = claims_of(body["access_token"])
    assert claims["sub"] == client["client_id"]
    # Empty scopes: all of the resource's.
    assert claims["scope"].split() == ["read", "write"]


def test_revoke_on_the_page_ends_its_tokens(
    signed_in: Browser, live: LiveServer
) -> None:
    client = created_on_page(page_create(signed_in))
    browser = live.browser()
    token = granted(secret_token(browser, client))["access_token"]
    assert works_at_mcp(browser, token)

    response = page_revoke(signed_in, client["client_id"])

    assert response.headers["Location"].endswith("/account")
    assert not works_at_mcp(browser, token)
    refused(secret_token(browser, client), 401, "invalid_client")
    assert client["client_id"] not in signed_in.get("/account").text
    assert page_revoke(signed_in, client["client_id"]).status_code == 404
    # Found, as every form of the account page answers (POST-redirect-GET).
    assert response.status_code == 302, response.status_code


def test_the_page_refuses_forms_without_a_good_csrf_token(
    signed_in: Browser, live: LiveServer, engine: sqlalchemy.Engine
) -> None:
    for token in ("", "wrong", csrf_token(signed_in) + "x"):
        response = page_create(signed_in, csrf_token=token)
        assert response.status_code == 400, (token, response.status_code)
    assert service_rows(engine) == 0

    client = created_on_page(page_create(signed_in))
    browser = live.browser()
    live_token = granted(secret_token(browser, client))["access_token"]
    for token in ("", "wrong"):
        assert page_revoke(signed_in, client["client_id"], token).status_code == 400
    assert works_at_mcp(browser, live_token)


def test_a_person_cannot_revoke_anothers_service_client(
    signed_in: Browser, live: LiveServer
) -> None:
    client = created_on_page(page_create(signed_in))
    browser = live.browser()
    token = granted(secret_token(browser, client))["access_token"]
    other = make_user(live, "mallory@example.com")
    mallory = live.browser()
    assert mallory.login(other["email"], other["password"]).status_code == 302

    response = page_revoke(mallory, client["client_id"])

    assert response.status_code == 404, response.status_code
    assert client["client_id"] not in mallory.get("/account").text
    assert works_at_mcp(browser, token)


def bad_page_forms() -> list[Any]:
    rsa = signing_key("RS256", kid="k")
    public = json.dumps(public_jwks(rsa))
    return [
        pytest.param(
            {"jwks": json.dumps({"keys": [rsa.as_dict(private=True)]})},
            id="private-key",
        ),
        pytest.param({"jwks": "{not json"}, id="jwks-not-json"),
        pytest.param(
            {"jwks": public, "jwks_uri": "https://keys.example/jwks.json"}, id="both"
        ),
        pytest.param(
            {"resource": "https://elsewhere.example/mcp"}, id="unknown-resource"
        ),
        pytest.param({"scopes": "read admin"}, id="scope-not-the-resources"),
        pytest.param({"name": ""}, id="no-name"),
    ]


@pytest.mark.parametrize("fields", bad_page_forms())
def test_the_page_refuses_bad_service_client_forms(
    signed_in: Browser, engine: sqlalchemy.Engine, fields: dict[str, str]
) -> None:
    response = page_create(signed_in, **fields)

    assert response.status_code == 400, response.status_code
    assert soup(response).select_one("#service-client-id") is None
    assert service_rows(engine) == 0


@pytest.mark.parametrize("acts_for", ["someone-else", "ME", None])
def test_the_page_acts_for_the_person_only_when_told(
    signed_in: Browser, live: LiveServer, acts_for: str | None
) -> None:
    data = {"csrf_token": csrf_token(signed_in), "name": "x", "scopes": "read"}
    data["resource"] = mcp_uri(live)
    if acts_for is not None:
        data["acts_for"] = acts_for

    response = signed_in.post("/account/service-clients", data=data)

    # Refused, or a client acting for itself; never one acting for the person.
    if response.status_code != 400:
        client = created_on_page(response)
        token = granted(secret_token(live.browser(), client))["access_token"]
        assert claims_of(token)["sub"] == client["client_id"]


# --- client_credentials ----------------------------------------------------------


def test_a_token_for_a_secret_client(
    live: LiveServer, browser: Browser, person: dict[str, str]
) -> None:
    client = create_service(live, "--for", person["email"], scopes="read write")

    response = secret_token(browser, client)

    body = granted(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["scope"].split() == ["read", "write"]
    assert "refresh_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["iss"] == live.issuer
    assert claims["sub"] == person["id"]
    assert claims["aud"] == mcp_uri(live)
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"].split() == ["read", "write"]
    assert claims["jti"]
    assert claims["iat"] <= time.time() + 5 < claims["exp"]
    assert "consent_id" not in claims

    # It works at /mcp, as its person.
    assert works_at_mcp(browser, body["access_token"])
    me = whoami_output(browser, body["access_token"])
    assert me["sub"] == person["id"]
    assert me["client_id"] == client["client_id"]


def test_a_client_acting_for_itself_is_its_own_subject(
    live: LiveServer, browser: Browser
) -> None:
    client = create_service(live)

    token = granted(secret_token(browser, client))["access_token"]

    assert claims_of(token)["sub"] == client["client_id"]
    assert works_at_mcp(browser, token)
    called = whoami(browser, token)
    assert called.status_code == 200, called.text
    assert "error" not in called.json(), called.text


def test_each_token_is_new(live: LiveServer, browser: Browser) -> None:
    client = create_service(live)
    first = granted(secret_token(browser, client))["access_token"]
    second = granted(secret_token(browser, client))["access_token"]
    assert claims_of(first)["jti"] != claims_of(second)["jti"]


def test_scope_within_the_ceiling_and_beyond(
    live: LiveServer, browser: Browser
) -> None:
    client = create_service(live, scopes="read write")
    narrow = create_service(live, scopes="read")

    assert granted(secret_token(browser, client, scope="read"))["scope"] == "read"
    token = granted(secret_token(browser, narrow))["access_token"]
    assert claims_of(token)["scope"] == "read"
    refused(secret_token(browser, narrow, scope="write"), 400, "invalid_scope")
    refused(secret_token(browser, narrow, scope="read write"), 400, "invalid_scope")
    refused(secret_token(browser, client, scope="admin"), 400, "invalid_scope")


def test_only_the_bound_resource(live: LiveServer, browser: Browser) -> None:
    other = register_resource(live, "http://127.0.0.1:9/tools", scopes="read")
    client = create_service(live)

    bound = granted(secret_token(browser, client, resource=mcp_uri(live)))
    assert claims_of(bound["access_token"])["aud"] == mcp_uri(live)
    refused(secret_token(browser, client, resource=other), 400, "invalid_target")
    refused(
        secret_token(browser, client, resource="https://elsewhere.example/mcp"),
        400,
        "invalid_target",
    )


def test_an_ordinary_client_may_not_use_client_credentials(browser: Browser) -> None:
    client = register_client(browser)

    response = secret_token(browser, client)

    refused(response, 400, "unauthorized_client")


def test_disabling_the_person_ends_tokens_of_all_its_clients(
    signed_in: Browser, live: LiveServer, person: dict[str, str], rsa_key: Any
) -> None:
    for_me = created_on_page(page_create(signed_in, name="for me", acts_for="me"))
    for_self = created_on_page(page_create(signed_in, name="itself", acts_for="self"))
    keyed = create_service(
        live, "--for", person["email"], name="keyed", jwks=public_jwks(rsa_key)
    )
    browser = live.browser()
    tokens = [
        granted(secret_token(browser, for_me))["access_token"],
        granted(secret_token(browser, for_self))["access_token"],
        granted(jwt_token(browser, keyed["client_id"], rsa_key))["access_token"],
    ]
    assert all(works_at_mcp(browser, token) for token in tokens)

    disabled = run_command(live, "users", "disable", person["email"])

    assert disabled.exit_code == 0, disabled.output
    for token in tokens:
        assert not works_at_mcp(browser, token), claims_of(token)
        assert introspect(browser, token) == {"active": False}
    refused(secret_token(browser, for_me), 401, "invalid_client")
    refused(secret_token(browser, for_self), 401, "invalid_client")
    refused(jwt_token(browser, keyed["client_id"], rsa_key), 401, "invalid_client")


# --- private_key_jwt at /token ---------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "PS256", "ES384"])
def test_assertions_signed_by_each_kind_of_key(
    live: LiveServer, browser: Browser, alg: str
) -> None:
    key = signing_key(alg)
    client = create_service(live, jwks=public_jwks(key))

    body = granted(jwt_token(browser, client["client_id"], key, alg))

    assert "refresh_token" not in body
    assert works_at_mcp(browser, body["access_token"])


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_assertions_checked_by_keys_at_a_jwks_uri(
    live: LiveServer, browser: Browser, jwks_host: DocumentServer, alg: str
) -> None:
    key = signing_key(alg)
    url, path = serve_jwks(jwks_host, key)
    client = create_service(live, "--jwks-uri", url)

    first = granted(jwt_token(browser, client["client_id"], key, alg))
    second = granted(jwt_token(browser, client["client_id"], key, alg))

    assert first["access_token"] != second["access_token"]
    assert jwks_host.requests[path] == 1  # cached, not fetched each time


def test_a_crowd_of_first_assertions_fetches_the_key_set_once(
    live: LiveServer, jwks_host: DocumentServer
) -> None:
    key = signing_key("ES256")
    url, path = serve_jwks(jwks_host, key)
    client_id = create_service(live, "--jwks-uri", url)["client_id"]
    jwks_host.respond(path, json.dumps(public_jwks(key)), delay=0.3)
    barrier = threading.Barrier(6)

    def send(_: int) -> int:
        session = live.browser()
        barrier.wait()
        return jwt_token(session, client_id, key, "ES256").status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, range(6)))

    assert statuses == [200] * 6
    assert jwks_host.requests[path] == 1


def test_the_audience_may_be_the_issuer_or_its_token_endpoint(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    form = {"grant_type": "client_credentials"}
    for audience in (
        live.issuer,
        live.issuer + "/token",
        [live.issuer],
        ["https://someone-else.example", live.issuer + "/token"],
    ):
        response = jwt_post(
            browser, "/token", client_id, rsa_key, "RS256", form, aud=audience
        )
        assert response.status_code == 200, (audience, response.text)


def test_an_assertion_may_name_its_client_in_the_form(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    form = {"grant_type": "client_credentials", "client_id": client_id}
    granted(jwt_post(browser, "/token", client_id, rsa_key, "RS256", form))


def test_an_assertion_living_the_longest_allowed_is_accepted(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    form = {"grant_type": "client_credentials"}
    exp = int(time.time()) + 300
    granted(jwt_post(browser, "/token", client_id, rsa_key, "RS256", form, exp=exp))


def test_a_rotated_key_at_the_jwks_uri_is_picked_up(
    live: LiveServer, browser: Browser, jwks_host: DocumentServer
) -> None:
    old = signing_key("RS256", kid="2026-11")
    new = signing_key("RS256", kid="2026-12")
    url, path = serve_jwks(jwks_host, old)
    client_id = create_service(live, "--jwks-uri", url)["client_id"]
    granted(jwt_token(browser, client_id, old))
    fetched = jwks_host.requests[path]

    # The client publishes its next key, then signs with it: an unknown kid.
    jwks_host.respond(path, json.dumps(public_jwks(old, new)))
    granted(jwt_token(browser, client_id, new))

    assert jwks_host.requests[path] == fetched + 1
    granted(jwt_token(browser, client_id, old))  # still published

    # And a second unknown kid soon after does not send the server back there.
    newest = signing_key("RS256", kid="2027-01")
    jwks_host.respond(path, json.dumps(public_jwks(new, newest)))
    refused(jwt_token(browser, client_id, newest), 401, "invalid_client")
    assert jwks_host.requests[path] == fetched + 1


def hs256_with(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda signing_input: hmac.new(
        secret, signing_input, hashlib.sha256
    ).digest()


def good_claims(client_id: str, issuer: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(16),
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


#: Each builds, from (client_id, its key, issuer, another client's id), an
#: assertion and the form's ``client_id`` (or ``None``).
Forgery = Callable[[str, Any, str, str], tuple[str, str | None]]


def forged(**changes: Any) -> Forgery:
    """A good assertion but for ``changes``; a callable value is given the time
    now, ``"{issuer}"`` in a string the issuer."""

    def build(client_id: str, key: Any, issuer: str, other: str) -> tuple[str, None]:
        now = int(time.time())
        claims = {
            name: value(now)
            if callable(value)
            else value.format(issuer=issuer)
            if isinstance(value, str)
            else value
            for name, value in changes.items()
        }
        return client_assertion(key, "RS256", client_id, issuer, **claims), None

    return build


def alg_none(client_id: str, key: Any, issuer: str, other: str) -> tuple[str, None]:
    header = {"alg": "none", "kid": key.kid, "typ": "JWT"}
    return compact_jwt(header, good_claims(client_id, issuer)), None


def hs256_public_pem(
    client_id: str, key: Any, issuer: str, other: str
) -> tuple[str, None]:
    # The classic confusion: HMAC keyed with the bytes of the public key.
    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    secret = key.as_pem(private=False)
    return compact_jwt(header, good_claims(client_id, issuer), hs256_with(secret)), None


def hs256_public_jwk(
    client_id: str, key: Any, issuer: str, other: str
) -> tuple[str, None]:
    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    secret = json.dumps(key.as_dict(private=False)).encode()
    return compact_jwt(header, good_claims(client_id, issuer), hs256_with(secret)), None


def foreign_key(client_id: str, key: Any, issuer: str, other: str) -> tuple[str, None]:
    # Another key, claiming the registered key's kid.
    impostor = signing_key("RS256", kid=key.kid)
    return client_assertion(impostor, "RS256", client_id, issuer), None


def tampered(client_id: str, key: Any, issuer: str, other: str) -> tuple[str, None]:
    good = client_assertion(key, "RS256", client_id, issuer)
    head, _, signature = good.split(".")
    claims = good_claims(client_id, issuer, scope="admin")
    body = compact_jwt({}, claims).split(".")[1]
    return f"{head}.{body}.{signature}", None


def iss_not_sub(client_id: str, key: Any, issuer: str, other: str) -> tuple[str, None]:
    return client_assertion(key, "RS256", client_id, issuer, iss=other), None


def form_names_another(
    client_id: str, key: Any, issuer: str, other: str
) -> tuple[str, str]:
    return client_assertion(key, "RS256", client_id, issuer), other


def for_another_client(
    client_id: str, key: Any, issuer: str, other: str
) -> tuple[str, None]:
    # Signed by this client's key, presented as the other client.
    return client_assertion(key, "RS256", other, issuer), None


def no_alg_header(
    client_id: str, key: Any, issuer: str, other: str
) -> tuple[str, None]:
    good = client_assertion(key, "RS256", client_id, issuer)
    _, body, signature = good.split(".")
    head = compact_jwt({"kid": key.kid}, {}).split(".")[0]
    return f"{head}.{body}.{signature}", None


REJECTIONS: dict[str, Forgery] = {
    "alg-none": alg_none,
    "hs256-keyed-with-the-public-pem": hs256_public_pem,
    "hs256-keyed-with-the-public-jwk": hs256_public_jwk,
    "a-foreign-key-with-the-same-kid": foreign_key,
    "claims-changed-after-signing": tampered,
    "no-alg-header": no_alg_header,
    "wrong-aud": forged(aud="https://someone-else.example"),
    "aud-the-mcp-resource": forged(aud="{issuer}/mcp"),
    "aud-the-issuer-with-a-slash": forged(aud="{issuer}/"),
    "expired": forged(exp=lambda now: now - 120, iat=lambda now: now - 300),
    # At most 300 s ahead, with 60 s of leeway for skew.
    "exp-too-far-ahead": forged(exp=lambda now: now + 420),
    "no-exp": forged(exp=None),
    "no-jti": forged(jti=None),
    "iss-not-sub": iss_not_sub,
    "form-client-id-differs": form_names_another,
    "signed-for-another-client": for_another_client,
    "unknown-client": forged(iss="ghost", sub="ghost"),
}


@pytest.mark.parametrize("name", list(REJECTIONS))
def test_bad_assertions_are_invalid_client(
    live: LiveServer, browser: Browser, rsa_key: Any, name: str
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    other_key = signing_key("RS256")
    other = create_service(live, name="other", jwks=public_jwks(other_key))["client_id"]
    assertion, form_client_id = REJECTIONS[name](client_id, rsa_key, live.issuer, other)
    data = {"grant_type": "client_credentials"}
    if form_client_id:
        data["client_id"] = form_client_id

    response = browser.post("/token", data=assertion_form(assertion, **data))

    refused(response, 401, "invalid_client")
    # Nothing else was wrong: a good assertion for the same client passes.
    granted(jwt_token(browser, client_id, rsa_key))


def test_an_assertion_is_used_once(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    assertion = client_assertion(rsa_key, "RS256", client_id, live.issuer)
    form = assertion_form(assertion, grant_type="client_credentials")

    token = granted(browser.post("/token", data=form))["access_token"]
    refused(browser.post("/token", data=form), 401, "invalid_client")
    # Nor at another endpoint.
    elsewhere = assertion_form(assertion, token=token)
    refused(browser.post("/revoke", data=elsewhere), 401, "invalid_client")
    refused(browser.post("/introspect", data=elsewhere), 401, "invalid_client")
    assert works_at_mcp(browser, token)


def test_a_spent_assertion_stays_spent_when_redis_forgets(
    live: LiveServer, browser: Browser, rsa_key: Any, redis_client: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    assertion = client_assertion(rsa_key, "RS256", client_id, live.issuer)
    form = assertion_form(assertion, grant_type="client_credentials")
    granted(browser.post("/token", data=form))

    redis_client.flushdb()  # as after a Redis lost without a snapshot

    refused(browser.post("/token", data=form), 401, "invalid_client")
    granted(jwt_token(browser, client_id, rsa_key))


def test_an_assertion_raced_in_parallel_is_used_once(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    assertion = client_assertion(rsa_key, "RS256", client_id, live.issuer)
    form = assertion_form(assertion, grant_type="client_credentials")
    barrier = threading.Barrier(8)

    def send(_: int) -> int:
        session = live.browser()
        barrier.wait()
        return session.post("/token", data=form).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(send, range(8)))

    assert statuses == [200] + [401] * 7


def test_a_key_client_has_no_secret_and_a_secret_client_no_keys(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    keyed = create_service(live, jwks=public_jwks(rsa_key))
    secret = create_service(live, name="secret")
    form = {"grant_type": "client_credentials"}

    for password in ("", "null", "None"):
        response = browser.post(
            "/token", data=form, auth=(keyed["client_id"], password)
        )
        refused(response, 401, "invalid_client")
    posted = {**form, "client_id": keyed["client_id"], "client_secret": ""}
    refused(browser.post("/token", data=posted), 401, "invalid_client")
    # The secret client has no keys: an assertion by any key is refused.
    response = jwt_token(browser, secret["client_id"], rsa_key)
    refused(response, 401, "invalid_client")
    granted(secret_token(browser, secret))


@pytest.mark.parametrize(
    "status, body",
    [
        (404, "not found"),
        (500, "{}"),
        (200, "{not json"),
        (200, '{"keys": "nope"}'),
        (200, "private"),
        (200, "symmetric"),
    ],
)
def test_a_bad_key_set_at_the_uri_is_invalid_client(
    live: LiveServer,
    browser: Browser,
    jwks_host: DocumentServer,
    rsa_key: Any,
    status: int,
    body: str,
) -> None:
    url, path = serve_jwks(jwks_host, rsa_key)
    client_id = create_service(live, "--jwks-uri", url)["client_id"]
    if body == "private":
        body = json.dumps({"keys": [rsa_key.as_dict(private=True)]})
    elif body == "symmetric":
        body = json.dumps(
            {"keys": [{"kty": "oct", "kid": rsa_key.kid, "k": "c2VjcmV0"}]}
        )
    jwks_host.respond(path, body, status=status)

    response = jwt_token(browser, client_id, rsa_key)

    refused(response, 401, "invalid_client")
    assert jwks_host.requests[path] == 1


def test_an_assertion_is_used_once_across_instances(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    issuer = f"http://127.0.0.1:{ports[0]}"
    key = signing_key("ES256")
    keys_file = tmp_path / "jwks.json"
    keys_file.write_text(json.dumps(public_jwks(key)))
    created = flask_shell(
        base_env,
        "clients",
        "create-service",
        "twin",
        "--resource",
        issuer + "/mcp",
        "--scopes",
        "read",
        "--jwks-file",
        str(keys_file),
        ISSUER=issuer,
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["client_id"]
    started: list[subprocess.Popen] = []
    try:
        for port in ports:
            started.append(
                start_web(base_env, port, tmp_path / f"{port}.log", ISSUER=issuer)
            )
        first, second = (f"http://127.0.0.1:{port}/token" for port in ports)
        assertion = client_assertion(key, "ES256", client_id, issuer)
        form = assertion_form(assertion, grant_type="client_credentials")

        assert requests.post(first, data=form, timeout=30).status_code == 200
        replayed = requests.post(second, data=form, timeout=30)
        refused(replayed, 401, "invalid_client")
        fresh = client_assertion(key, "ES256", client_id, issuer)
        form = assertion_form(fresh, grant_type="client_credentials")
        assert requests.post(second, data=form, timeout=30).status_code == 200
    finally:
        for web in started:
            web.terminate()
            web.wait(timeout=60)


def jwks_uri_refused(
    server: Any, url: str, path: str, key: Any, host: DocumentServer
) -> None:
    """A client whose keys are at ``url`` is refused when made, or never gets a
    token; either way the server never fetched from there."""
    result = create_service_command(server, "--jwks-uri", url)
    if result.exit_code == 0:
        client_id = json.loads(result.stdout)["client_id"]
        refused(jwt_token(server.browser(), client_id, key), 401, "invalid_client")
    else:
        assert result.exit_code == 1, result.output
    assert host.requests[path] == 0


def test_a_loopback_jwks_uri_is_refused_unless_allowed(
    server: LiveServer, jwks_host: DocumentServer, rsa_key: Any
) -> None:
    # The session's server runs with CIMD_ALLOW_LOOPBACK off (the default).
    url, path = serve_jwks(jwks_host, rsa_key)
    jwks_uri_refused(server, url, path, rsa_key, jwks_host)
    for loopback in (
        url.replace("127.0.0.1", "localhost"),
        url.replace("http:", "https:"),
    ):
        jwks_uri_refused(server, loopback, path, rsa_key, jwks_host)
    # Not for want of a working command: a public https URL is taken.
    create_service(server, "--jwks-uri", "https://keys.example/jwks.json")


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/jwks.json",
        "https://10.0.0.1/jwks.json",
        "https://192.168.1.1/jwks.json",
        "http://keys.example/jwks.json",
    ],
)
def test_private_or_plain_http_jwks_uris_are_refused(
    live: LiveServer, jwks_host: DocumentServer, rsa_key: Any, url: str
) -> None:
    # Loopback is allowed on this server; private addresses and plain http are not.
    started = time.monotonic()
    jwks_uri_refused(live, url, "/never-asked", rsa_key, jwks_host)
    assert time.monotonic() - started < 10
    # Not for want of a working command: a public https URL is taken.
    create_service(live, "--jwks-uri", "https://keys.example/jwks.json")


# --- private_key_jwt at /revoke and /introspect ----------------------------------


def test_a_key_client_revokes_its_own_token(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    token = granted(jwt_token(browser, client_id, rsa_key))["access_token"]
    assert works_at_mcp(browser, token)

    response = jwt_post(
        browser, "/revoke", client_id, rsa_key, "RS256", {"token": token}
    )

    assert response.status_code == 200, response.text
    assert not works_at_mcp(browser, token)


def test_a_key_client_cannot_revoke_anothers_token(
    live: LiveServer, browser: Browser, person: dict[str, str], rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    other = create_service(live, name="other")
    others = granted(secret_token(browser, other))["access_token"]
    _, person_tokens = obtain_tokens(live.browser(), person)

    for token in (others, person_tokens["access_token"]):
        form = {"token": token}
        response = jwt_post(browser, "/revoke", client_id, rsa_key, "RS256", form)
        # RFC 7009 §2.2: answered as if done, and nothing is done.
        assert response.status_code == 200, response.text
        assert works_at_mcp(browser, token)


def test_revoke_needs_a_good_assertion(
    live: LiveServer, browser: Browser, rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    token = granted(jwt_token(browser, client_id, rsa_key))["access_token"]
    impostor = signing_key("RS256", kid=rsa_key.kid)

    response = jwt_post(
        browser, "/revoke", client_id, impostor, "RS256", {"token": token}
    )

    refused(response, 401, "invalid_client")
    assert works_at_mcp(browser, token)


def test_a_key_client_introspects_its_own_tokens_only(
    live: LiveServer, browser: Browser, person: dict[str, str], rsa_key: Any
) -> None:
    client_id = create_service(live, jwks=public_jwks(rsa_key))["client_id"]
    own = granted(jwt_token(browser, client_id, rsa_key))["access_token"]
    other_service = create_service(live, name="other")
    others = granted(secret_token(browser, other_service))["access_token"]
    _, person_tokens = obtain_tokens(live.browser(), person)

    def ask(token: str) -> dict[str, Any]:
        form = {"token": token}
        response = jwt_post(browser, "/introspect", client_id, rsa_key, "RS256", form)
        assert response.status_code == 200, response.text
        return response.json()

    mine = ask(own)
    assert mine["active"] is True
    assert mine["client_id"] == client_id
    assert mine["sub"] == client_id
    assert mine["aud"] == mcp_uri(live)
    for token in (
        others,
        person_tokens["access_token"],
        person_tokens["refresh_token"],
    ):
        assert ask(token) == {"active": False}
    # The resource servers still see them all.
    assert introspect(browser, others)["active"] is True
    assert introspect(browser, own)["active"] is True

    impostor = signing_key("RS256", kid=rsa_key.kid)
    bad = jwt_post(browser, "/introspect", client_id, impostor, "RS256", {"token": own})
    refused(bad, 401, "invalid_client")


# --- Dynamic registration with keys ----------------------------------------------


def assertion_grant(
    browser: Browser, client: dict[str, Any], key: Any, alg: str, data: dict[str, str]
) -> Any:
    return jwt_post(browser, "/token", client["client_id"], key, alg, data)


def code_then_refresh(
    browser: Browser, client: dict[str, Any], person: dict[str, str], key: Any, alg: str
) -> None:
    code, verifier, _ = get_code(browser, client, person)
    # Only the client's own assertion redeems its code.
    impostor = signing_key(alg, kid=key.kid)
    redeem = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": verifier,
    }
    refused(
        assertion_grant(browser, client, impostor, alg, redeem), 401, "invalid_client"
    )
    tokens = granted(assertion_grant(browser, client, key, alg, redeem))
    claims = claims_of(tokens["access_token"])
    assert claims["sub"] == person["id"] and claims["client_id"] == client["client_id"]
    assert whoami_output(browser, tokens["access_token"])["sub"] == person["id"]

    again = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    plain = browser.post("/token", data={**again, "client_id": client["client_id"]})
    refused(plain, 401, "invalid_client")
    refreshed = granted(assertion_grant(browser, client, key, alg, again))
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert whoami_output(browser, refreshed["access_token"])["sub"] == person["id"]


def test_registered_with_a_jwks_the_client_uses_assertions(
    browser: Browser, person: dict[str, str]
) -> None:
    key = signing_key("ES256")
    client = register_client(
        browser,
        token_endpoint_auth_method="private_key_jwt",
        jwks=public_jwks(key),
        grant_types=["authorization_code", "refresh_token"],
    )

    assert client["token_endpoint_auth_method"] == "private_key_jwt"
    assert "client_secret" not in client
    code_then_refresh(browser, client, person, key, "ES256")
    # Keys make it no service client.
    machine = {"grant_type": "client_credentials"}
    response = assertion_grant(browser, client, key, "ES256", machine)
    refused(response, 400, "unauthorized_client")


def test_registered_with_a_jwks_uri_the_client_uses_assertions(
    browser: Browser, person: dict[str, str], jwks_host: DocumentServer
) -> None:
    key = signing_key("RS256")
    url, path = serve_jwks(jwks_host, key)
    client = register_client(
        browser,
        token_endpoint_auth_method="private_key_jwt",
        jwks_uri=url,
        grant_types=["authorization_code", "refresh_token"],
    )

    assert client["token_endpoint_auth_method"] == "private_key_jwt"
    assert client["jwks_uri"] == url
    assert "client_secret" not in client
    code_then_refresh(browser, client, person, key, "RS256")
    assert jwks_host.requests[path] >= 1


def bad_registrations() -> list[Any]:
    rsa = signing_key("RS256", kid="k")
    public = public_jwks(rsa)
    return [
        pytest.param(
            {"jwks": public, "jwks_uri": "https://keys.example/jwks.json"}, id="both"
        ),
        pytest.param({}, id="neither"),
        pytest.param({"jwks": {"keys": [rsa.as_dict(private=True)]}}, id="private-key"),
        pytest.param(
            {"jwks": {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldA"}]}},
            id="symmetric-key",
        ),
        pytest.param({"jwks": {"keys": "nope"}}, id="not-a-set"),
        pytest.param({"jwks": weak_rsa_jwks()}, id="a-1024-bit-rsa-key"),
        pytest.param({"jwks": [rsa.as_dict(private=False)]}, id="a-list-not-a-set"),
    ]


@pytest.mark.parametrize("metadata", bad_registrations())
def test_bad_key_registrations_are_invalid_client_metadata(
    browser: Browser, engine: sqlalchemy.Engine, metadata: dict[str, Any]
) -> None:
    body = {
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "private_key_jwt",
        **metadata,
    }

    response = browser.post("/register", json=body)

    refused(response, 400, "invalid_client_metadata")
    assert service_rows(engine) == 0


# --- Metadata --------------------------------------------------------------------


def test_metadata_lists_the_methods_and_algorithms(browser: Browser) -> None:
    document = browser.get("/.well-known/oauth-authorization-server").json()

    grants = document["grant_types_supported"]
    assert "client_credentials" in grants
    assert "urn:ietf:params:oauth:grant-type:jwt-bearer" in grants
    assert {"authorization_code", "refresh_token"} <= set(grants)
    methods = {"client_secret_basic", "client_secret_post", "none", "private_key_jwt"}
    for endpoint in ("token_endpoint", "revocation_endpoint"):
        listed = document[f"{endpoint}_auth_methods_supported"]
        assert sorted(listed) == sorted(methods), endpoint
        algs = document[f"{endpoint}_auth_signing_alg_values_supported"]
        assert sorted(algs) == sorted(SIGNING_ALGORITHMS), endpoint
    introspection = document["introspection_endpoint_auth_methods_supported"]
    assert sorted(introspection) == ["client_secret_basic", "private_key_jwt"]
    assert document["authorization_grant_profiles_supported"] == [
        "urn:ietf:params:oauth:grant-profile:id-jag"
    ]
