"""The OpenAPI document (app/openapi.json) against the service's real answers.

Every answer a test provokes here is checked against what the document says
for that path, method and status: the status must be documented, the media
type and body must match its schema, documented headers must be present when
required and match their schemas. The document itself must be valid OpenAPI 3.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openapi_spec_validator
import requests
from conftest import LiveServer, make_user
from helpers import (
    Browser,
    client_post,
    device_lookup,
    get_code,
    obtain_token,
    redeem,
    register_client,
    token_request,
)
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOCUMENT_FILE = Path(__file__).resolve().parent.parent / "app" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))
BASE_URI = "urn:mcp-auth:openapi"
REGISTRY: Registry = Registry().with_resource(
    BASE_URI, DRAFT202012.create_resource(DOCUMENT)
)
METHODS = ("get", "post", "put", "patch", "delete")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _resolve(obj: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` between components (responses, headers)."""
    while "$ref" in obj:
        node: Any = DOCUMENT
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        obj = node
    return obj


def _validate(value: Any, *location: str) -> None:
    """Validate ``value`` against the schema at ``location`` in the document."""
    schema = {"$ref": f"{BASE_URI}#/{_pointer(*location)}"}
    Draft202012Validator(schema, registry=REGISTRY).validate(value)


def check(response: requests.Response, path: str, method: str) -> requests.Response:
    """Hold one real answer to the document; return it for further checks."""
    responses = DOCUMENT["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} {status} is undocumented"
    documented = _resolve(responses[status])
    for name, header in documented.get("headers", {}).items():
        header = _resolve(header)
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{name} missing on {status}"
            continue
        Draft202012Validator(header["schema"]).validate(value)
    content = documented.get("content")
    if content is None:
        assert response.content == b"", f"{status} should have no body"
        return response
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in content, f"{media_type!r} is not documented for {status}"
    location = responses[status]
    if "$ref" in location:
        pointer = location["$ref"].removeprefix("#/").split("/")
    else:
        pointer = ["paths", path, method, "responses", status]
    _validate(response.json(), *pointer, "content", media_type, "schema")
    return response


def error_of(response: requests.Response) -> str:
    return response.json()["error"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- The document itself ------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    openapi_spec_validator.validate(DOCUMENT)


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    # Holds even where openapi-spec-validator is not installed yet.
    for name, schema in DOCUMENT["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:
            raise AssertionError(f"components.schemas.{name}: {exc}") from exc


def test_document_is_served_with_the_issuer_as_server(
    browser: Browser, server: LiveServer
) -> None:
    response = browser.get("/openapi.json", headers={"Origin": "https://app.example"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    served = response.json()
    assert served["servers"] == [{"url": server.issuer}]
    assert {**served, "servers": DOCUMENT["servers"]} == DOCUMENT


def test_document_under_an_issuer_path_names_that_path(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    prefixed = make_server(ISSUER=live.url + "/prod-api")
    served = prefixed.browser().get("/openapi.json").json()
    assert served["servers"] == [{"url": live.url + "/prod-api"}]


def test_every_documented_operation_is_routed(app: Any) -> None:
    routed = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }
    missing = set()
    for path, operations in DOCUMENT["paths"].items():
        flask_path = path.replace("{", "<").replace("}", ">")
        flask_path = flask_path.replace("<id>", "<key_id>")
        for method in operations.keys() & set(METHODS):
            if (flask_path, method) not in routed:
                missing.add(path)
    assert not missing, missing


# --- POST /register -----------------------------------------------------------


def test_register_answers_as_documented(browser: Browser) -> None:
    confidential = check(
        browser.post("/register", json={"redirect_uris": ["http://127.0.0.1/cb"]}),
        "/register",
        "post",
    )
    assert confidential.status_code == 201
    assert "client_secret" in confidential.json()
    public = check(
        browser.post(
            "/register",
            json={
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "device_code"],
            },
        ),
        "/register",
        "post",
    )
    assert public.status_code == 201 and "client_secret" not in public.json()

    bad_uri = browser.post("/register", json={"redirect_uris": ["http://evil/cb"]})
    check(bad_uri, "/register", "post")
    assert (bad_uri.status_code, error_of(bad_uri)) == (400, "invalid_redirect_uri")
    bodies: list[Any] = [[1, 2], {"redirect_uris": ["https://a.example/"], "scope": 7}]
    for body in bodies:
        bad = check(browser.post("/register", json=body), "/register", "post")
        assert (bad.status_code, error_of(bad)) == (400, "invalid_client_metadata")


def test_register_limits_answer_as_documented(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(
        MAX_CLIENTS_PER_ADDRESS="1", REGISTRATION_RATE_LIMIT="2 per hour"
    )
    browser = live.browser()
    body = {"redirect_uris": ["http://127.0.0.1/cb"]}
    assert check(browser.post("/register", json=body), "/register", "post").ok
    capped = check(browser.post("/register", json=body), "/register", "post")
    assert (capped.status_code, error_of(capped)) == (403, "client_limit_exceeded")
    limited = check(browser.post("/register", json=body), "/register", "post")
    assert (limited.status_code, error_of(limited)) == (429, "too_many_requests")


# --- POST /token --------------------------------------------------------------


def test_token_answers_as_documented(browser: Browser, user: dict[str, str]) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    missing = check(
        token_request(
            browser,
            client,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": client["redirect_uris"][0],
            },
        ),
        "/token",
        "post",
    )
    assert (missing.status_code, error_of(missing)) == (400, "invalid_request")

    wrong_secret = check(
        browser.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": verifier,
            },
            auth=(client["client_id"], "sk-wrong"),
        ),
        "/token",
        "post",
    )
    assert (wrong_secret.status_code, error_of(wrong_secret)) == (401, "invalid_client")

    issued = check(redeem(browser, client, code, verifier), "/token", "post")
    assert issued.status_code == 200, issued.text

    replayed = check(redeem(browser, client, code, verifier), "/token", "post")
    assert (replayed.status_code, error_of(replayed)) == (400, "invalid_grant")

    unsupported = check(
        token_request(browser, client, {"grant_type": "password"}), "/token", "post"
    )
    assert unsupported.status_code == 400
    assert error_of(unsupported) == "unsupported_grant_type"


# --- POST /device_authorization and the device grant's polls -----------------


def test_device_flow_answers_as_documented(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(DEVICE_AUTHORIZATION_RATE_LIMIT="5 per minute")
    browser = live.browser()
    person = make_user(live, "device@example.com")
    # A device-only client registers no redirect URI.
    registered = check(
        browser.post(
            "/register",
            json={
                "grant_types": [DEVICE_GRANT, "refresh_token"],
                "token_endpoint_auth_method": "none",
            },
        ),
        "/register",
        "post",
    )
    assert registered.status_code == 201, registered.text
    device = registered.json()
    assert (device["redirect_uris"], device["response_types"]) == ([], [])

    def ask(client: dict[str, Any], **form: str) -> requests.Response:
        answer = client_post(browser, "/device_authorization", client, form)
        return check(answer, "/device_authorization", "post")

    approved, denied = ask(device, scope="read"), ask(device)
    assert approved.status_code == denied.status_code == 200, approved.text
    wide = ask(device, scope="admin")
    assert (wide.status_code, error_of(wide)) == (400, "invalid_scope")
    unregistered = ask(register_client(browser), scope="read")
    assert (unregistered.status_code, error_of(unregistered)) == (
        400,
        "unauthorized_client",
    )
    unknown = ask({"client_id": "nobody", "token_endpoint_auth_method": "none"})
    assert (unknown.status_code, error_of(unknown)) == (401, "invalid_client")
    limited = ask(device)
    assert (limited.status_code, error_of(limited)) == (429, "too_many_requests")

    def poll(codes: requests.Response) -> requests.Response:
        form = {"grant_type": DEVICE_GRANT, "device_code": codes.json()["device_code"]}
        return check(token_request(browser, device, form), "/token", "post")

    assert error_of(poll(approved)) == "authorization_pending"
    assert error_of(poll(approved)) == "slow_down"
    browser.login(person["email"], person["password"])
    for codes, decision in ((approved, "approve"), (denied, "deny")):
        page = device_lookup(browser, codes.json()["user_code"])
        assert page.status_code == 200, page.text
        data = {**browser.form(page), "decision": decision}
        assert browser.post("/device", data=data).status_code == 200
    issued = poll(approved)
    assert issued.status_code == 200, issued.text
    assert "refresh_token" in issued.json()
    assert error_of(poll(approved)) == "invalid_grant"
    assert error_of(poll(denied)) == "access_denied"


# --- POST /auth/token and /api-keys --------------------------------------------


def test_api_keys_answer_as_documented(browser: Browser, user: dict[str, str]) -> None:
    token = obtain_token(browser, user)
    unauthenticated = check(browser.get("/api-keys"), "/api-keys", "get")
    assert unauthenticated.status_code == 401
    forged = check(
        browser.post("/api-keys", json={"name": "x"}, headers=bearer("not.a.jwt")),
        "/api-keys",
        "post",
    )
    assert (forged.status_code, error_of(forged)) == (401, "invalid_token")
    bad_body = check(
        browser.post("/api-keys", json=["laptop"], headers=bearer(token)),
        "/api-keys",
        "post",
    )
    assert (bad_body.status_code, error_of(bad_body)) == (400, "invalid_request")

    created = check(
        browser.post(
            "/api-keys",
            json={"name": "laptop", "scopes": ["read", "write"], "expires_in_days": 30},
            headers=bearer(token),
        ),
        "/api-keys",
        "post",
    )
    assert created.status_code == 201, created.text
    listed = check(browser.get("/api-keys", headers=bearer(token)), "/api-keys", "get")
    assert [k["id"] for k in listed.json()["api_keys"]] == [created.json()["id"]]

    exchanged = check(
        browser.post("/auth/token", json={"apiKey": created.json()["key"]}),
        "/auth/token",
        "post",
    )
    assert exchanged.status_code == 200
    from_key = check(
        browser.get("/api-keys", headers=bearer(exchanged.json()["token"])),
        "/api-keys",
        "get",
    )
    assert (from_key.status_code, error_of(from_key)) == (403, "forbidden")
    refused = check(
        browser.post("/auth/token", json={"apiKey": "lsk_nope"}), "/auth/token", "post"
    )
    assert refused.status_code == 401

    path = f"/api-keys/{created.json()['id']}"
    deleted = check(
        browser.delete(path, headers=bearer(token)), "/api-keys/{id}", "delete"
    )
    assert deleted.status_code == 204
    gone = check(
        browser.delete(path, headers=bearer(token)), "/api-keys/{id}", "delete"
    )
    assert (gone.status_code, error_of(gone)) == (404, "not_found")


def test_api_key_scope_refusals_answer_as_documented(
    browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user, scope="write")
    write_only = redeem(browser, client, code, verifier).json()["access_token"]
    wider = check(
        browser.post(
            "/api-keys",
            json={"name": "laptop", "scopes": ["read"]},
            headers=bearer(write_only),
        ),
        "/api-keys",
        "post",
    )
    assert (wider.status_code, error_of(wider)) == (403, "insufficient_scope")


# --- POST /revoke and /introspect ---------------------------------------------


def test_revoke_answers_as_documented(
    app: Any, browser: Browser, user: dict[str, str]
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user)
    token = redeem(browser, client, code, verifier).json()["access_token"]
    revoked = check(
        browser.post(
            "/revoke",
            data={"token": token},
            auth=(client["client_id"], client["client_secret"]),
        ),
        "/revoke",
        "post",
    )
    assert revoked.status_code == 200
    wrong = check(
        browser.post(
            "/revoke", data={"token": token}, auth=(client["client_id"], "sk-wrong")
        ),
        "/revoke",
        "post",
    )
    assert (wrong.status_code, error_of(wrong)) == (401, "invalid_client")


def test_introspect_answers_as_documented(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(RESOURCE_SERVERS="gateway:" + "s" * 40)
    browser = live.browser()
    from conftest import make_user

    person = make_user(live, "introspect@example.com")
    token = obtain_token(browser, person)
    active = check(
        browser.post("/introspect", data={"token": token}, auth=("gateway", "s" * 40)),
        "/introspect",
        "post",
    )
    assert active.json()["active"] is True
    inactive = check(
        browser.post("/introspect", data={"token": "x"}, auth=("gateway", "s" * 40)),
        "/introspect",
        "post",
    )
    assert inactive.json() == {"active": False}
    refused = check(
        browser.post("/introspect", data={"token": token}), "/introspect", "post"
    )
    assert (refused.status_code, error_of(refused)) == (401, "invalid_client")


def test_introspect_switched_off_answers_as_documented(browser: Browser) -> None:
    off = check(browser.post("/introspect", data={"token": "x"}), "/introspect", "post")
    assert (off.status_code, error_of(off)) == (404, "not_found")
