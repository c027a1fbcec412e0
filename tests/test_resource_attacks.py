"""An attacker's look at resources (RFC 8707, RFC 9728): a token for one MCP
server must be good for no other, anywhere the service checks one.

Each test drives the live server over HTTP as a client, a proxy or a resource
server would; resources are registered with the operator's own command, run
in this process (Flask's CLI runner) on the live server's app.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy
from conftest import LiveServer, make_user
from demo_nginx import start_nginx, stop_nginx
from devservices import free_port
from helpers import (
    Browser,
    authorize_params,
    authorize_path,
    bearer,
    claims_of,
    consent,
    create_key,
    get_code,
    key_token,
    pkce_pair,
    query_of,
    redeem,
    refresh,
    register_client,
    register_resource,
    revoke,
    select_one,
    soup,
    statements,
    until,
    wait_for_current_view,
    whoami,
)
from test_forward_auth_nginx import EXAMPLE as NGINX_EXAMPLE
from test_forward_auth_nginx import Upstream

#: A server on another host, and one whose path merely starts the same way.
GITHUB = "https://mcp.example.com/github"
GITHUB2 = "https://mcp.example.com/github2"
#: A server at the root of its origin, and one below it.
ROOT = "https://root.example"
ROOT_SPECIAL = "https://root.example/special"

RESOURCES: dict[str, str] = {
    GITHUB: "repo:read repo:write",
    GITHUB2: "read",
    ROOT: "read",
    ROOT_SPECIAL: "read",
}


# --- set-up ---------------------------------------------------------------


def cli(server: Any, *args: str) -> Any:
    """``flask --app app resources ...`` in this process, on the live app."""
    return server.app.test_cli_runner().invoke(args=["resources", *args])


def add_resource(server: Any, uri: str, scopes: str, name: str = "Tools") -> None:
    register_resource(server, uri, scopes=scopes, name=name)


def registry_uris(server: Any) -> set[str]:
    from app.oauth.resources import known_resources

    with server.app.app_context():
        return {resource.uri for resource in known_resources()}


def wait_registered(server: Any, *uris: str) -> None:
    assert until(lambda: set(uris) <= registry_uris(server), 5), uris


@pytest.fixture(autouse=True)
def forget_registered(server: Any) -> Iterator[None]:
    """Whatever a test registered is gone again (and announced) afterwards,
    so that no other test meets it in the server's cache."""
    yield
    forget_resources(server)


@pytest.fixture
def registered(server: Any) -> None:
    """The resources above, registered."""
    for uri, scopes in RESOURCES.items():
        add_resource(server, uri, scopes)
    wait_registered(server, *RESOURCES)


def forget_resources(server: Any) -> None:
    from app.db import db
    from app.resource_admin import announce

    with server.app.app_context():
        with db.transaction():
            db.session.execute(sqlalchemy.text("DELETE FROM resources"))
        announce()
    builtin = server.issuer + "/mcp"
    assert until(lambda: registry_uris(server) == {builtin}, 5)


def flow(
    browser: Browser,
    user: dict[str, str],
    resource: str | None,
    scope: str | None = None,
    client: dict[str, Any] | None = None,
    **metadata: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register (unless given) a client, approve it for ``resource``, redeem;
    return the client and the token response."""
    if client is None:
        metadata.setdefault("grant_types", ["authorization_code", "refresh_token"])
        client = register_client(browser, **metadata)
    extra = {k: v for k, v in {"resource": resource, "scope": scope}.items() if v}
    code, verifier, _ = get_code(browser, client, user, **extra)
    answer = redeem(browser, client, code, verifier, **extra)
    assert answer.status_code == 200, answer.text
    return client, answer.json()


def token_for(browser: Browser, user: dict[str, str], resource: str) -> str:
    return str(flow(browser, user, resource)[1]["access_token"])


def verify(browser: Browser, token: str | None, **headers: str) -> requests.Response:
    """``GET /auth/verify`` as a proxy asks it (header names with dashes)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if token is not None:
        sent.update(bearer(token))
    return browser.get("/auth/verify", headers=sent)


def raw_verify(server: Any, headers: list[tuple[str, str]]) -> int:
    """``GET /auth/verify`` with headers repeated as a proxy that appends sends
    them (requests would merge them)."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.putrequest("GET", "/auth/verify")
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def forwarded(uri: str) -> dict[str, str]:
    """The ``X-Forwarded-*`` a proxy sends for a request to ``uri``."""
    parts = urlsplit(uri)
    return {
        "X-Forwarded-Proto": parts.scheme,
        "X-Forwarded-Host": parts.netloc,
        "X-Forwarded-Uri": parts.path or "/",
    }


# --- /auth/verify: which resource a proxy guards ----------------------------


def test_a_token_passes_only_where_its_resource_is(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    github = token_for(browser, user, GITHUB)
    assert claims_of(github)["aud"] == GITHUB
    builtin = server.issuer + "/mcp"
    assert verify(browser, github, X_MCP_Resource=GITHUB).status_code == 200
    assert verify(browser, github, X_MCP_Resource=GITHUB + "/mcp").status_code == 200
    assert verify(browser, github, **forwarded(GITHUB + "/mcp?x=1")).status_code == 200
    refused = verify(browser, github, X_MCP_Resource=GITHUB2)
    assert refused.status_code == 401
    challenge = refused.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge
    assert (
        'resource_metadata="https://mcp.example.com/.well-known/'
        'oauth-protected-resource/github2"' in challenge
    )
    assert verify(browser, github, **forwarded(GITHUB2 + "/mcp")).status_code == 401
    # No header at all: the built-in resource, which it is not for.
    assert verify(browser, github).status_code == 401
    assert verify(browser, github, X_MCP_Resource=builtin).status_code == 401
    # Nor is it any good at /mcp itself.
    assert whoami(browser, github).status_code == 401


def test_spellings_of_the_guarded_address_find_the_one_resource(
    browser: Browser, user: dict, registered: None
) -> None:
    github = token_for(browser, user, GITHUB)
    for host in ("MCP.Example.COM", "mcp.example.com:443"):
        headers = {
            "X-Forwarded-Proto": "HTTPS",
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": "/github/mcp",
        }
        assert verify(browser, github, **headers).status_code == 200, host
    # The path is case-sensitive; another port or a trailing dot is another
    # origin: nothing registered there, a proxy set-up error, never a pass.
    for host, path in (
        ("mcp.example.com", "/GitHub/mcp"),
        ("mcp.example.com:8443", "/github/mcp"),
        ("mcp.example.com.", "/github/mcp"),
    ):
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": path,
        }
        answer = verify(browser, github, **headers)
        assert answer.status_code == 403, (host, path, answer.status_code)
        assert answer.json()["error"] == "invalid_target"


@pytest.mark.parametrize(
    "path",
    [
        "/github/../github2/mcp",
        "/github/./mcp/../../github2/mcp",
        "/github/%2e%2e/github2/mcp",
        "/%67ithub/mcp",
        "/github%2Fmcp",
        "//github/mcp",
        "/github//mcp",
        "/github\\mcp",
        "/github/mcp#/../../github2",
        "github/mcp",
        "/github\x7f/mcp",
    ],
)
def test_a_raw_uri_with_two_readings_is_refused(
    browser: Browser, user: dict, registered: None, path: str
) -> None:
    # nginx routes by the path it normalised; X-Forwarded-Uri ($request_uri)
    # is what the client typed. Only a path of one reading may pass.
    github = token_for(browser, user, GITHUB)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "mcp.example.com",
        "X-Forwarded-Uri": path,
    }
    assert verify(browser, github, **headers).status_code == 403


def test_a_smuggled_resource_header_cannot_redirect_the_check(
    browser: Browser, user: dict, registered: None
) -> None:
    # The proxy forwards the address (guarding github2); the client adds
    # X-MCP-Resource naming the server its token is for: they disagree.
    github = token_for(browser, user, GITHUB)
    answer = verify(browser, github, X_MCP_Resource=GITHUB, **forwarded(GITHUB2))
    assert answer.status_code == 403
    assert answer.json()["error"] == "invalid_target"
    # ... and the other way round: the proxy names it, the client forwards.
    answer = verify(browser, github, X_MCP_Resource=GITHUB2, **forwarded(GITHUB))
    assert answer.status_code == 403


def test_a_forwarded_proto_cannot_move_the_host(
    browser: Browser, user: dict, registered: None
) -> None:
    # A client-chosen X-Forwarded-Proto that smuggles an authority and path.
    github = token_for(browser, user, GITHUB)
    for proto in (
        "https://mcp.example.com/github",
        "https://mcp.example.com/github/x;",
        "https://mcp.example.com/github@",
        "https:",
        "https, http",
        "http",
    ):
        headers = {
            "X-Forwarded-Proto": proto,
            "X-Forwarded-Host": "mcp.example.com",
            "X-Forwarded-Uri": "/github2/mcp",
        }
        answer = verify(browser, github, **headers)
        assert answer.status_code in (401, 403), (proto, answer.status_code)


def test_a_forwarded_host_list_is_refused(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    github = token_for(browser, user, GITHUB)
    auth = ("Authorization", f"Bearer {github}")
    # A proxy that appends X-Forwarded-Host to the client's.
    status = raw_verify(
        server,
        [
            auth,
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "mcp.example.com"),
            ("X-Forwarded-Host", "mcp.example.com"),
            ("X-Forwarded-Uri", "/github/mcp"),
        ],
    )
    assert status == 403


def test_an_appended_forwarded_uri_cannot_name_the_clients_choice(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    """A proxy that appends ``X-Forwarded-Uri`` (HAProxy ``add-header``, an
    Envoy ``append``) after the client's own: the WSGI server joins them with
    a comma, as it does the host list refused above. Guarding github2, the
    joined ``/github/x,/github2/mcp`` must not pass a token for github."""
    github = token_for(browser, user, GITHUB)
    status = raw_verify(
        server,
        [
            ("Authorization", f"Bearer {github}"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "mcp.example.com"),
            ("X-Forwarded-Uri", "/github/x"),  # the client's
            ("X-Forwarded-Uri", "/github2/mcp"),  # the proxy's
        ],
    )
    assert status in (401, 403), status


def test_a_forwarded_host_is_only_a_host(
    browser: Browser, user: dict, registered: None
) -> None:
    """``X-Forwarded-Host`` is an authority (host and port). One that carries
    a path moves the check onto another resource: guarding github2's
    ``/github2/mcp``, the host ``mcp.example.com/github`` makes the address
    ``https://mcp.example.com/github/github2/mcp``, covered by github."""
    github = token_for(browser, user, GITHUB)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "mcp.example.com/github",
        "X-Forwarded-Uri": "/github2/mcp",
    }
    answer = verify(browser, github, **headers)
    assert answer.status_code == 403, answer.status_code


def test_repeated_resource_headers_are_refused(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    github = token_for(browser, user, GITHUB)
    status = raw_verify(
        server,
        [
            ("Authorization", f"Bearer {github}"),
            ("X-MCP-Resource", GITHUB),
            ("X-MCP-Resource", GITHUB2),
        ],
    )
    assert status == 403


def test_the_longest_prefix_wins_at_an_origin_root(
    browser: Browser, user: dict, registered: None
) -> None:
    root = token_for(browser, user, ROOT)
    assert claims_of(root)["aud"] == ROOT
    assert verify(browser, root, **forwarded(ROOT + "/")).status_code == 200
    assert verify(browser, root, **forwarded(ROOT + "/any/mcp")).status_code == 200
    assert verify(browser, root, **forwarded(ROOT + "/specialist")).status_code == 200
    # Below a more specific registration, the root's token is no good.
    assert verify(browser, root, **forwarded(ROOT_SPECIAL + "/mcp")).status_code == 401
    special = token_for(browser, user, ROOT_SPECIAL)
    assert verify(browser, special, **forwarded(ROOT + "/mcp")).status_code == 401


def test_odd_resource_headers_never_fail_the_server(
    browser: Browser, registered: None, server: Any
) -> None:
    builtin = server.issuer + "/mcp"
    for value in (
        "x" * 10000,
        "https://" + "a" * 5000 + "/x",
        "https://[::1",
        "https://mcp.example.com:99999/github",
        "https://mcp.example.com:-1/github",
        "https://user@mcp.example.com/github",
        "https://mcp.example.com/github?x=1",
        "\u00e9",
        "",
    ):
        answer = verify(browser, None, X_MCP_Resource=value)
        assert answer.status_code == 403, (value[:40], answer.status_code)
    for host in ("[::1", "a" * 5000, "mcp.example.com:http", "\u00e9.example"):
        headers = {"X-Forwarded-Host": host, "X-Forwarded-Uri": "/github"}
        answer = verify(browser, None, **headers)
        assert answer.status_code == 403, (host[:40], answer.status_code)
    # The built-in resource named outright works as without any header.
    answer = verify(browser, None, X_MCP_Resource=builtin)
    assert answer.status_code == 401
    assert "oauth-protected-resource" in answer.headers["WWW-Authenticate"]


def test_a_proxy_set_up_before_resources_passes_no_smuggled_resource(
    server: Any, base_env: dict[str, str]
) -> None:
    """docs/nginx-forward-auth.conf as it stood before resources existed (the
    same file without the three lines that now clear ``X-MCP-Resource`` and
    ``X-Forwarded-Host``/``-Uri``), in front of the built-in ``/mcp``
    upstream: the deployment an operator upgrades and then registers a
    second MCP server with. A client holding a token for that other server
    adds ``X-MCP-Resource: <its URI>``; nginx hands it on to ``/auth/verify``,
    which then checks the token against the resource the client chose, and
    the built-in upstream is reached with another resource's token."""
    cleared = [
        '        proxy_set_header X-MCP-Resource "";\n',
        '        proxy_set_header X-Forwarded-Host "";\n',
        '        proxy_set_header X-Forwarded-Uri "";\n',
    ]
    text = NGINX_EXAMPLE.read_text()
    for line in cleared:
        assert line in text
        text = text.replace(line, "")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    other = "https://other.example/tools"
    with contextlib.ExitStack() as stack:
        # As deployed before resources: the setting at its default.
        service = LiveServer(
            base_env,
            {
                "ISSUER": url,
                "TRUSTED_PROXY_HOPS": "1",
                "VERIFY_RESOURCE_HEADERS": "off",
            },
        )
        stack.callback(service.stop)
        upstream = Upstream()
        stub = ThreadingHTTPServer(("127.0.0.1", 0), upstream.handler())
        stack.callback(stub.server_close)
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        stack.callback(stub.shutdown)
        values = {
            "LISTEN": f"127.0.0.1:{port}",
            "SERVER_NAME": "127.0.0.1",
            "AUTH_SERVICE": service.url,
            "MCP_UPSTREAM": f"http://127.0.0.1:{stub.server_port}/mcp",
        }
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        directory.chmod(0o755)  # workers run as nobody when we are root
        stack.callback(stop_nginx, start_nginx(directory, text, port))
        add_resource(service, other, "read")
        wait_registered(service, other)
        person = make_user(service, "upgrader@example.com")
        gate = Browser(SimpleNamespace(url=url))  # type: ignore[arg-type]
        token = token_for(gate, person, other)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {**bearer(token), "X-MCP-Resource": other}
        answer = gate.post("/mcp", json=message, headers=headers)
        assert answer.status_code == 401, answer.status_code
        assert upstream.seen == []


# --- discovery -------------------------------------------------------------


def test_each_challenge_names_a_document_about_that_resource(
    server: Any, browser: Browser, registered: None
) -> None:
    """Whatever resource the proxy guards, its 401 names a metadata URL whose
    document is that resource's (RFC 9728 §3.3: the client must check
    ``resource``). A resource at the issuer's origin root would be told to
    read the built-in ``/mcp``'s document, so it cannot be registered."""
    origin_root = server.issuer  # the issuer has no path here
    refused = cli(server, "add", origin_root, "--name", "Root", "--scopes", "read")
    assert refused.exit_code == 1
    assert refused.output.count("\n") == 1 and "origin" in refused.output
    add_resource(server, origin_root + "/tools", "read")
    wait_registered(server, origin_root + "/tools")
    for uri in (server.issuer + "/mcp", origin_root + "/tools"):
        answer = verify(browser, None, X_MCP_Resource=uri)
        assert answer.status_code == 401
        challenge = answer.headers["WWW-Authenticate"]
        metadata = challenge.split('resource_metadata="')[1].split('"')[0]
        document = requests.get(metadata, timeout=30)
        assert document.status_code == 200, metadata
        assert document.json()["resource"] == uri, (uri, metadata)


# --- scopes and consent per resource ---------------------------------------


def test_another_resources_consent_is_no_silent_pass(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    client, _ = flow(browser, user, None)
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, resource=GITHUB, prompt="none")
    answer = browser.get(authorize_path(params))
    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "consent_required"


def test_a_code_is_for_its_resource_only(
    browser: Browser, user: dict, registered: None
) -> None:
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user, resource=GITHUB)
    answer = redeem(browser, client, code, verifier, resource=GITHUB2)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_target"
    answer = redeem(browser, client, code, verifier, resource=GITHUB + "2/../github")
    assert answer.status_code in (400, 401)


def test_a_code_survives_an_exchange_naming_another_resource(
    browser: Browser, user: dict, registered: None
) -> None:
    """An exchange that could never succeed (another resource than the
    code's) is refused before the code is spent, as the other malformed
    exchanges are (app/oauth/grants/authorization_code.py); the right
    exchange then still works."""
    client = register_client(browser)
    code, verifier, _ = get_code(browser, client, user, resource=GITHUB)
    answer = redeem(browser, client, code, verifier, resource=GITHUB2)
    assert answer.json()["error"] == "invalid_target"
    answer = redeem(browser, client, code, verifier, resource=GITHUB)
    assert answer.status_code == 200, answer.text


def test_a_refresh_never_changes_audience_and_is_not_spent(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    client, tokens = flow(browser, user, GITHUB)
    for other in (server.issuer + "/mcp", GITHUB2, ROOT, GITHUB + "2"):
        answer = refresh(browser, client, tokens["refresh_token"], resource=other)
        assert answer.status_code == 400, other
        assert answer.json()["error"] == "invalid_target", other
    # A sub-path or another spelling of its own resource is its own.
    answer = refresh(
        browser,
        client,
        tokens["refresh_token"],
        resource="HTTPS://MCP.EXAMPLE.COM:443/github/mcp/",
    )
    assert answer.status_code == 200, answer.text
    assert claims_of(answer.json()["access_token"])["aud"] == GITHUB


def test_the_api_key_routes_take_only_builtin_tokens(
    browser: Browser, user: dict, registered: None
) -> None:
    client, tokens = flow(browser, user, GITHUB, scope="repo:read repo:write")
    answer = create_key(browser, tokens["access_token"], scopes=["read"])
    assert answer.status_code == 401
    answer = browser.get("/api-keys", headers=bearer(tokens["access_token"]))
    assert answer.status_code == 401


def test_step_up_shows_and_grants_exactly_the_union(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    client, first = flow(browser, user, GITHUB, scope="repo:read")
    assert first["scope"] == "repo:read"
    # An approval for the built-in resource in between changes nothing here.
    flow(browser, user, None, scope="write", client=client)
    verifier, challenge = pkce_pair()
    params = authorize_params(
        client, challenge, resource=GITHUB, scope="repo:write offline_access"
    )
    page = browser.get(authorize_path(params))
    assert page.status_code == 200
    new = [
        select_one(li, "strong").get_text() for li in soup(page).select("li.scope-new")
    ]
    granted = [
        select_one(li, "strong").get_text()
        for li in soup(page).select("li.scope-granted")
    ]
    assert new == ["repo:write"] and granted == ["repo:read"]
    assert select_one(page, "#resource-uri").get_text() == GITHUB
    answer = browser.post(
        authorize_path(params), data={**browser.form(page), "decision": "approve"}
    )
    code = query_of(answer.headers["Location"])["code"]
    token = redeem(browser, client, code, verifier, resource=GITHUB).json()
    assert token["scope"] == "repo:write"
    # The consent is the union: a silent request for both now passes.
    verifier, challenge = pkce_pair()
    params = authorize_params(
        client, challenge, resource=GITHUB, scope="repo:read repo:write", prompt="none"
    )
    answer = browser.get(authorize_path(params))
    assert "code" in query_of(answer.headers["Location"]), answer.headers
    # The built-in consent is still the narrowed "write" it was approved for.
    params = authorize_params(client, challenge, scope="read", prompt="none")
    answer = browser.get(authorize_path(params))
    assert query_of(answer.headers["Location"])["error"] == "consent_required"


def test_odd_scope_names_survive_the_union(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    odd = "{a} b,c NULL 'q' % [x]"
    uri = "https://odd.example/mcp"
    add_resource(server, uri, odd)
    wait_registered(server, uri)
    client, first = flow(browser, user, uri, scope="{a} NULL")
    assert first["scope"] == "{a} NULL"
    _, second = flow(browser, user, uri, scope="b,c 'q' [x]", client=client)
    assert second["scope"] == "b,c 'q' [x]"
    verifier, challenge = pkce_pair()
    params = authorize_params(
        client, challenge, resource=uri, scope="{a} NULL b,c 'q' [x]", prompt="none"
    )
    answer = browser.get(authorize_path(params))
    assert "code" in query_of(answer.headers["Location"]), answer.headers


def test_step_up_after_the_scopes_were_renamed_does_not_fail(
    server: Any, browser: Browser, user: dict
) -> None:
    """An operator renames a resource's scopes (``resources update --scopes``);
    a client holding a consent to the old ones steps up to the new ones. The
    union of old and new overflows the consent's 200-character column: the
    approval must still succeed, not end on a "request is malformed" page
    (Postgres refusing the value, app/errors.py)."""
    uri = "https://db.example/mcp"
    old = " ".join(f"database:old{i:02}" for i in range(12))
    new = " ".join(f"database:new{i:02}" for i in range(12))
    add_resource(server, uri, old)
    wait_registered(server, uri)
    client, _ = flow(browser, user, uri)
    result = cli(server, "update", uri, "--scopes", new)
    assert result.exit_code == 0, result.output
    assert until(lambda: consent_page_lists(browser, client, uri, new), 5)
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, resource=uri, scope=new)
    answer = consent(browser, params)
    assert answer.status_code == 302, (answer.status_code, answer.text[:3000])


def consent_page_lists(
    browser: Browser, client: dict[str, Any], uri: str, scopes: str
) -> bool:
    _, challenge = pkce_pair()
    params = authorize_params(client, challenge, resource=uri, scope=scopes)
    return browser.get(authorize_path(params)).status_code == 200


def test_a_scope_dropped_from_a_resource_is_no_longer_issued(
    server: Any, browser: Browser, user: dict
) -> None:
    """``resources update --scopes`` drops ``repo:admin``; neither a refresh of
    a chain begun before nor a key made before may keep minting it (§13:
    scopes are the resource's)."""
    uri = "https://gh.example/mcp"
    add_resource(server, uri, "repo:read repo:admin")
    wait_registered(server, uri)
    client, tokens = flow(browser, user, uri)
    assert tokens["scope"] == "repo:read repo:admin"
    # A key the person made on the account page for that server, too.
    page = browser.get("/account")
    made = browser.post(
        "/account/api-keys",
        data={
            **browser.form(page),
            "name": "ci",
            "resource": uri,
            "scopes": ["repo:read", "repo:admin"],
        },
    )
    key = select_one(made, "#new-key").get_text(strip=True)
    result = cli(server, "update", uri, "--scopes", "repo:read")
    assert result.exit_code == 0, result.output
    assert until(lambda: not consent_page_lists(browser, client, uri, "repo:admin"), 5)
    answer = refresh(browser, client, tokens["refresh_token"])
    assert answer.status_code == 200, answer.text
    refreshed = claims_of(answer.json()["access_token"])["scope"]
    exchanged = claims_of(key_token(browser, key))["scope"]
    assert "repo:admin" not in refreshed and "repo:admin" not in exchanged, (
        refreshed,
        exchanged,
    )


def test_a_client_registered_without_scope_may_ask_any_resources_scopes(
    server: Any, browser: Browser, user: dict
) -> None:
    """A client that registered no ``scope`` (most MCP clients) may ask for a
    resource's every scope, even when the resource shares a name with the
    built-in one (``read``)."""
    uri = "https://warehouse.example/mcp"
    add_resource(server, uri, "read admin")
    wait_registered(server, uri)
    client = register_client(browser)
    _, challenge = pkce_pair()
    params = authorize_params(client, challenge, resource=uri, scope="read admin")
    browser.login(user["email"], user["password"])
    page = browser.get(authorize_path(params))
    assert page.status_code == 200, page.headers.get("Location")


# --- removal ---------------------------------------------------------------


def test_removal_leaves_nothing_that_comes_back_with_the_resource(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    client, tokens = flow(browser, user, GITHUB)
    access = tokens["access_token"]
    builtin_client, builtin_tokens = flow(browser, user, None)
    # A code issued before the removal, redeemed after the resource is back.
    pending = get_code(browser, client, user, resource=GITHUB)
    assert verify(browser, access, X_MCP_Resource=GITHUB).status_code == 200
    result = cli(server, "remove", GITHUB)
    assert result.exit_code == 0, result.output
    assert until(lambda: GITHUB not in registry_uris(server), 5)
    assert verify(browser, access, X_MCP_Resource=GITHUB).status_code == 403
    add_resource(server, GITHUB, RESOURCES[GITHUB])
    wait_registered(server, GITHUB)
    assert verify(browser, access, X_MCP_Resource=GITHUB).status_code == 401
    answer = refresh(browser, client, tokens["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    code, verifier, _ = pending
    answer = redeem(browser, client, code, verifier, resource=GITHUB)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    # The built-in consent of the same person is untouched.
    assert whoami(browser, builtin_tokens["access_token"]).status_code == 200
    answer = refresh(browser, builtin_client, builtin_tokens["refresh_token"])
    assert answer.status_code == 200, answer.text


def test_an_account_key_for_a_removed_resource_dies_with_it(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    browser.login(user["email"], user["password"])
    page = browser.get("/account")
    options = [
        attribute_value(o) for o in soup(page).select("select[name=resource] option")
    ]
    assert GITHUB in options
    made = browser.post(
        "/account/api-keys",
        data={
            **browser.form(page),
            "name": "ci",
            "resource": GITHUB,
            "scopes": "repo:read",
        },
    )
    key = select_one(made, "#new-key").get_text(strip=True)
    exchanged = browser.post("/auth/token", json={"apiKey": key})
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["token"]
    assert claims_of(token)["aud"] == GITHUB
    assert whoami(browser, token).status_code == 401
    assert verify(browser, token, X_MCP_Resource=GITHUB).status_code == 200
    result = cli(server, "remove", GITHUB)
    assert result.exit_code == 0, result.output
    add_resource(server, GITHUB, RESOURCES[GITHUB])
    wait_registered(server, GITHUB)
    assert browser.post("/auth/token", json={"apiKey": key}).status_code == 401
    assert verify(browser, token, X_MCP_Resource=GITHUB).status_code == 401


def attribute_value(tag: Any) -> str:
    return str(tag.get("value", ""))


# --- other instances, introspection, the default resource -----------------


def test_another_instance_follows_additions_and_removals(
    server: Any, make_server: Any, registered: None
) -> None:
    other = make_server()
    look = other.browser()
    assert verify(look, None, X_MCP_Resource=GITHUB).status_code == 401
    assert verify(look, None, X_MCP_Resource=GITHUB2).status_code == 401
    result = cli(server, "remove", GITHUB)
    assert result.exit_code == 0, result.output
    assert until(
        lambda: verify(look, None, X_MCP_Resource=GITHUB).status_code == 403, 5
    )
    fresh = "https://fresh.example/mcp"
    assert verify(look, None, X_MCP_Resource=fresh).status_code == 403
    add_resource(server, fresh, "read")
    assert until(lambda: verify(look, None, X_MCP_Resource=fresh).status_code == 401, 5)


RS_GITHUB = ("gh", "gh-secret-0123456789")
RS_LEGACY = ("legacy", "legacy-secret-0123456789")


def test_introspection_is_bound_and_the_default_is_the_setting(
    server: Any, make_server: Any, user: dict, registered: None
) -> None:
    entries = [
        f"{RS_GITHUB[0]}:{RS_GITHUB[1]} HTTPS://MCP.Example.com:443/github/",
        f"{RS_LEGACY[0]}:{RS_LEGACY[1]}",
    ]
    live = make_server(
        RESOURCE_SERVERS=",".join(entries), DEFAULT_RESOURCE=GITHUB + "/"
    )
    look = live.browser()
    _, tokens = flow(look, user, None)  # no resource: the default one
    github = tokens["access_token"]
    assert claims_of(github)["aud"] == GITHUB
    builtin = flow(look, user, live.issuer + "/mcp")[1]["access_token"]

    def active(credentials: tuple[str, str], token: str) -> bool:
        answer = look.post("/introspect", data={"token": token}, auth=credentials)
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["active"])

    assert active(RS_GITHUB, github) and active(RS_LEGACY, github)
    assert not active(RS_GITHUB, builtin) and not active(RS_LEGACY, builtin)
    assert not active(RS_GITHUB, tokens["refresh_token"])
    # /mcp keeps its own resource and challenge whatever the default.
    refused = whoami(look, github)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].endswith(
        f'resource_metadata="{live.issuer}/.well-known/oauth-protected-resource"'
    )
    assert whoami(look, builtin).status_code == 200
    # The default cannot be removed while it is the default.
    result = live.app.test_cli_runner().invoke(args=["resources", "remove", GITHUB])
    assert result.exit_code == 1 and "DEFAULT_RESOURCE" in result.stderr


def test_a_token_of_deeply_nested_json_is_no_crash_at_introspect(
    make_server: Any,
) -> None:
    """``/introspect`` answers ``{"active": false}`` for anything not ours."""
    live = make_server(RESOURCE_SERVERS=f"{RS_LEGACY[0]}:{RS_LEGACY[1]}")
    answer = live.browser().post(
        "/introspect", data={"token": deeply_nested_token()}, auth=RS_LEGACY
    )
    assert answer.status_code == 200, answer.status_code
    assert answer.json() == {"active": False}


#: A cache of this test's own, whose eviction marks the announcements' progress.
SENTINEL = "test-sentinel"


def test_a_registry_read_before_a_removal_is_not_kept_after_it(
    server: Any, browser: Browser, registered: None
) -> None:
    """A request reads the registry from Postgres (cache miss) just before an
    operator removes a resource; the removal's eviction reaches the process
    before that request puts what it read into the cache. The removed
    resource must not then stay registered in this process for good (new
    consents and tokens for it would pass here); today it does, as the
    registry's cache entry has no expiry and ``put`` follows any eviction."""
    from app.denylist import evict, process_cache
    from app.oauth.resources import REGISTRY_CACHE, REGISTRY_KEY
    from app.resource_admin import announce

    def cached() -> Any:
        with server.app.app_context():
            cache = process_cache(REGISTRY_CACHE, 1)
            return cache.get(REGISTRY_KEY) if cache is not None else None

    wait_for_current_view(server)
    with server.app.app_context():
        announce()
    assert until(lambda: cached() is None, 5)
    wait_for_current_view(server)
    engine = server.app.extensions["db"].engine
    read, release = threading.Event(), threading.Event()

    def pause(*args: Any) -> None:
        statement = args[2]
        if "FROM resources ORDER BY" in statement and not read.is_set():
            if threading.current_thread() is not threading.main_thread():
                read.set()
                release.wait(10)

    sqlalchemy.event.listen(engine, "after_cursor_execute", pause)
    answers: list[int] = []
    look = server.browser()
    request = threading.Thread(
        target=lambda: answers.append(
            verify(look, None, X_MCP_Resource=GITHUB).status_code
        )
    )
    try:
        request.start()
        assert read.wait(10)
        result = cli(server, "remove", GITHUB)
        assert result.exit_code == 0, result.output
        # Announcements arrive in order: once a later one has, so has this.
        with server.app.app_context():
            sentinel = process_cache(SENTINEL, 1)
            assert sentinel is not None
            sentinel.put("k", "v")
            evict(SENTINEL, ["k"])
            assert until(lambda: sentinel.get("k") is None, 5)
    finally:
        release.set()
        request.join(10)
        sqlalchemy.event.remove(engine, "after_cursor_execute", pause)
    assert answers == [401]  # it was registered when that request began
    assert until(
        lambda: verify(browser, None, X_MCP_Resource=GITHUB).status_code == 403, 3
    )


def test_one_resource_per_request_means_one_value(
    browser: Browser, user: dict, registered: None
) -> None:
    """Several ``resource`` values are ``invalid_target``, even two spellings
    of one resource; the same value repeated is one value (RFC 8707 §2 lets
    the parameter repeat), as tests/test_token.py holds at the token endpoint."""
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    _, challenge = pkce_pair()
    repeated = authorize_path(authorize_params(client, challenge))
    answer = browser.get(repeated + f"&resource={GITHUB}" * 2)
    assert answer.status_code == 200, answer.status_code  # the consent page
    for values in ([GITHUB, GITHUB + "/mcp"], [GITHUB, GITHUB2]):
        _, challenge = pkce_pair()
        params = authorize_params(client, challenge)
        query = authorize_path(params) + "".join(
            f"&resource={value}" for value in values
        )
        answer = browser.get(query)
        assert answer.status_code == 302, (values, answer.status_code)
        assert query_of(answer.headers["Location"])["error"] == "invalid_target"


def test_discovery_of_same_origin_resources_and_their_lifetime(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    local = server.issuer + "/github"
    result = cli(
        server, "add", local, "--name", "Local", "--scopes", "x:y", "--token-ttl", "77"
    )
    assert result.exit_code == 0, result.output
    wait_registered(server, local)
    found = browser.get("/.well-known/oauth-protected-resource/github")
    assert found.status_code == 200
    document = found.json()
    assert document["resource"] == local
    assert document["scopes_supported"] == ["x:y"]
    printed = json.loads(cli(server, "metadata", local + "/").output)
    assert printed == document
    for other in ("/github/mcp", "/github2", "/GitHub", "/github%2Fmcp"):
        path = "/.well-known/oauth-protected-resource" + other
        assert browser.get(path).status_code == 404, other
    metadata = browser.get("/.well-known/oauth-authorization-server").json()
    assert set(metadata["protected_resources"]) == {
        server.issuer + "/mcp",
        local,
        *RESOURCES,
    }
    assert {"x:y", "repo:read", "offline_access"} <= set(metadata["scopes_supported"])
    _, tokens = flow(browser, user, local)
    assert tokens["expires_in"] == 77
    claims = claims_of(tokens["access_token"])
    assert claims["exp"] - claims["iat"] == 77 and claims["aud"] == local


# --- hot paths --------------------------------------------------------------


def test_no_query_to_resolve_a_resource_on_the_hot_paths(
    server: Any, browser: Browser, user: dict, registered: None
) -> None:
    github = token_for(browser, user, GITHUB)
    builtin = token_for(browser, user, server.issuer + "/mcp")
    # Warm: the registry and the verified tokens are in the process's caches.
    assert verify(browser, github, **forwarded(GITHUB + "/mcp")).status_code == 200
    assert verify(browser, github, X_MCP_Resource=GITHUB).status_code == 200
    assert whoami(browser, builtin).status_code == 200
    with statements(server) as seen:
        for _ in range(3):
            answer = verify(browser, github, **forwarded(GITHUB + "/mcp"))
            assert answer.status_code == 200
            assert verify(browser, github, X_MCP_Resource=GITHUB).status_code == 200
            assert verify(browser, builtin).status_code == 200
            assert verify(browser, github, X_MCP_Resource=GITHUB2).status_code == 401
    assert "SELECT" not in seen, seen


# --- crafted input ----------------------------------------------------------


def deeply_nested_token() -> str:
    """A JWT-shaped string whose payload is JSON nested past Python's limit."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part(b'{"alg":"HS256","typ":"at+jwt"}')
    token = f"{header}.{part(b'[' * 2900)}.c2lnbmF0dXJl"
    assert len(token) < 4096  # under the endpoints' own length limit
    return token


def test_a_token_of_deeply_nested_json_is_no_crash_at_revoke(
    browser: Browser,
) -> None:
    """``/revoke`` answers ``200`` for any token (RFC 7009 §2.2); reading the
    ``aud`` of an unverified payload must not crash on its nesting."""
    client = register_client(browser, token_endpoint_auth_method="none")
    answer = revoke(browser, client, {"token": deeply_nested_token()})
    assert answer.status_code == 200, answer.status_code


@pytest.mark.parametrize(
    "resource",
    [
        "x" * 6000,
        "https://mcp.example.com/github?x=1",
        "https://mcp.example.com/github#x",
        "https://mcp.example.com/github/../github2",
        "https://mcp.example.com/%67ithub",
        "https://[::1",
        "https://mcp.example.com:0x1bb/github",
        "https://mcp.example.com/github\u0000",
        "https://mcp.example.com/gith\u00fcb",
        "javascript:alert(1)",
        "",
    ],
)
def test_a_crafted_resource_is_invalid_target_everywhere(
    browser: Browser, user: dict, registered: None, resource: str
) -> None:
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    _, challenge = pkce_pair()
    params = authorize_params(client, challenge, resource=resource)
    answer = browser.get(authorize_path(params))
    assert answer.status_code in (302, 400), answer.status_code
    if answer.status_code == 302:
        assert query_of(answer.headers["Location"])["error"] == "invalid_target"
    code, verifier, _ = get_code(browser, client, user, resource=GITHUB)
    answer = redeem(browser, client, code, verifier, resource=resource)
    assert answer.status_code == 400, answer.status_code
    assert answer.json()["error"] in ("invalid_target", "invalid_request")


# --- the command's one-line errors ------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["add", "https://x.example/a?b=1", "--name", "X", "--scopes", "read"],
        ["add", "http://x.example/a", "--name", "X", "--scopes", "read"],
        ["add", "ftp://x.example/a", "--name", "X", "--scopes", "read"],
        ["add", "https://u:p@x.example/a", "--name", "X", "--scopes", "read"],
        ["add", "https://x.example/a/../b", "--name", "X", "--scopes", "read"],
        ["add", "https://x.example/%41", "--name", "X", "--scopes", "read"],
        ["add", "https://[::1", "--name", "X", "--scopes", "read"],
        ["add", "https://x.example:99999/a", "--name", "X", "--scopes", "read"],
        ["add", "https://x.example/" + "a" * 3000, "--name", "X", "--scopes", "read"],
        ["add", "https://x.example/a", "--name", "X", "--scopes", "offline_access"],
        ["add", "https://x.example/a", "--name", "X", "--scopes", "a" * 33],
        ["add", "https://x.example/a", "--name", "X", "--scopes", 'a"b'],
        [
            "add",
            "https://x.example/a",
            "--name",
            "X",
            "--scopes",
            " ".join(f"s{i}" for i in range(17)),
        ],
        ["add", "https://x.example/a", "--name", " ", "--scopes", "read"],
        [
            "add",
            "https://x.example/a",
            "--name",
            "X",
            "--scopes",
            "read",
            "--token-ttl",
            "0",
        ],
        [
            "add",
            "https://x.example/a",
            "--name",
            "X",
            "--scopes",
            "read",
            "--token-ttl",
            "99999999",
        ],
        [
            "add",
            "https://x.example/a",
            "--name",
            "X",
            "--scopes",
            "read",
            "--describe",
            "b=x",
        ],
        ["add", "HTTP://127.0.0.1:8000/mcp/", "--name", "X", "--scopes", "read"],
        ["add", 'https://x"y.example/a', "--name", "X", "--scopes", "read"],
        ["add", "https://x<y>.example/a", "--name", "X", "--scopes", "read"],
        ["remove", "https://nowhere.example/a"],
        ["remove", "not a uri"],
        ["update", "https://nowhere.example/a", "--name", "Y"],
        ["metadata", "https://nowhere.example/a"],
        ["metadata", "::"],
    ],
)
def test_the_command_refuses_in_one_line(server: Any, args: list[str]) -> None:
    if "127.0.0.1:8000" in args[1]:
        args = [args[0], server.issuer.upper() + "/mcp/", *args[2:]]
    result = cli(server, *args)
    assert result.exit_code == 1, (args[:2], result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert registry_uris(server) == {server.issuer + "/mcp"}


def test_the_command_refuses_bytes_that_are_not_utf8_in_one_line(
    base_env: dict[str, str],
) -> None:
    """An operator's shell hands over a name in another encoding (Latin-1
    ``Caf\xe9``): Python keeps the byte as a lone surrogate, which Postgres
    cannot store. One line and exit code 1, as for every refusal."""
    root = Path(__file__).resolve().parent.parent
    command: list[str | bytes] = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "app",
        "resources",
        "add",
        "https://latin.example/mcp",
        "--name",
        b"Caf\xe9",
        "--scopes",
        "read",
    ]
    result = subprocess.run(
        command,
        cwd=root,
        env={**os.environ, **base_env},
        capture_output=True,
        timeout=60,
    )
    stderr = result.stderr.decode(errors="replace").strip()
    assert result.returncode == 1, (result.returncode, stderr[-500:])
    assert len(stderr.splitlines()) == 1, stderr[-500:]


def test_the_command_refuses_a_taken_uri_however_spelled(
    server: Any, registered: None
) -> None:
    result = cli(
        server,
        "add",
        "HTTPS://MCP.Example.com:443/github/",
        "--name",
        "X",
        "--scopes",
        "a",
    )
    assert result.exit_code == 1 and "registered already" in result.stderr
    result = cli(server, "remove", server.issuer + "/mcp")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    listed = json.loads(cli(server, "list", "--json").output)
    assert [entry["uri"] for entry in listed][0] == server.issuer + "/mcp"
    assert {entry["uri"] for entry in listed} == {server.issuer + "/mcp", *RESOURCES}
