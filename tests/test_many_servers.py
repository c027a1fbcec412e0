"""Two real MCP servers behind one issuer, behind real nginx (docs: README).

nginx serves one origin, the issuer's: ``/notes/`` is the notes server (the MCP
Python SDK's MCPServer) once the issuer's ``GET /auth/verify`` has accepted the
token for it; ``/search/`` is the search server (FastMCP), which checks tokens
itself with ``JWTVerifier`` against the issuer's JWKS; everything else is the
issuer. Both servers are registered through the real ``flask --app app
resources add``; tools/demo_servers.py and tools/demo_nginx.py are the very
code ``make run DEMO=servers`` runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import demo_nginx
import devservices
import httpx2
import pytest
import requests
import sqlalchemy
from conftest import TABLES, LiveServer, make_user
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from demo_servers import (
    NOTES_NAME,
    NOTES_SCOPES,
    SEARCH_NAME,
    SEARCH_SCOPES,
    Demo,
)
from devservices import free_port, wait_for_port
from helpers import (
    MCP_HEADERS,
    Browser,
    authorize_params,
    bearer,
    claims_of,
    get_code,
    pkce_pair,
    redeem,
    register_client,
    soup,
)
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
from mcp_sdk_client import REDIRECT_URI, MemoryStorage
from pydantic import AnyUrl
from test_devservices import descendants, is_running, run_env
from test_oidc_discovery import sdk_modules  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCRIPT = ROOT / "tools" / "demo_servers.py"
TS_SCRIPT = Path(__file__).resolve().parent / "js" / "sdk_two_servers.mjs"
#: The resource servers allowed at /introspect, one bound to each server.
NOTES_RS = ("notes-server", secrets.token_urlsafe(24))
SEARCH_RS = ("search-server", secrets.token_urlsafe(24))
#: Rows that stay between this module's tests: the resources registered once.
KEPT_TABLES = {"resources"}

ARCHIVE_PATH = "/archive/mcp"

INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


def signing_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def flask_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """An operator command, run as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_demo_server(
    name: str, issuer: str, log: Path, *extra: str
) -> tuple[subprocess.Popen, str]:
    """``python tools/demo_servers.py NAME``, as ``make run DEMO=servers`` starts it."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(DEMO_SCRIPT), name, "--issuer", issuer]
            + ["--port", str(port), *extra],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, f"the {name} server")
    except SystemExit:
        pytest.fail(log.read_text())
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def alias_of(uri: str) -> str:
    """``uri`` with ``localhost`` for ``127.0.0.1``: the same socket, another name."""
    return uri.replace("//127.0.0.1:", "//localhost:", 1)


@dataclass
class Stack:
    """nginx on the issuer's origin, the issuer and both servers behind it."""

    demo: Demo
    service: LiveServer
    nginx_dir: Path

    @property
    def archive(self) -> str:
        """A third resource, with a ``search`` scope too, that no server serves."""
        return self.demo.issuer + ARCHIVE_PATH

    @property
    def url(self) -> str:
        return self.demo.issuer

    def browser(self) -> Browser:
        """A browser that reaches everything through nginx."""
        return Browser(SimpleNamespace(url=self.url))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str]) -> Iterator[Stack]:
    port = free_port()
    demo = Demo(f"http://127.0.0.1:{port}")
    pem = signing_key_pem()
    env = {**base_env, "ISSUER": demo.issuer, "JWT_SIGNING_KEY": pem}
    archive = [demo.issuer + ARCHIVE_PATH, "--name", "Archive", "--scopes", "search"]
    # The notes path under another name of this host: another server as far
    # as the registry knows, whose tokens must not open this proxy's notes.
    alias = [
        alias_of(demo.notes_resource),
        "--name",
        "Notes elsewhere",
        "--scopes",
        "notes:read notes:write",
    ]
    for arguments in [*demo.registrations(), archive, alias]:
        added = flask_cli(env, "resources", "add", *arguments)
        assert added.returncode == 0, added.stderr
        # The registered URI is the last line (the audit record may precede it).
        assert added.stdout.strip().splitlines()[-1] == arguments[0]
    resource_servers = ",".join(
        [
            f"{NOTES_RS[0]}:{NOTES_RS[1]} {demo.notes_resource}",
            f"{SEARCH_RS[0]}:{SEARCH_RS[1]} {demo.search_resource}",
        ]
    )
    with contextlib.ExitStack() as stack:
        directory = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="many-servers-"))
        )
        directory.chmod(0o755)  # nginx's workers run as nobody when we are root
        service = LiveServer(
            base_env,
            {
                "ISSUER": demo.issuer,
                "TRUSTED_PROXY_HOPS": "1",
                "JWT_SIGNING_KEY": pem,
                "RESOURCE_SERVERS": resource_servers,
            },
        )
        stack.callback(service.stop)
        notes, notes_upstream = start_demo_server(
            "notes", demo.issuer, directory / "notes.log"
        )
        stack.callback(stop, notes)
        search, search_upstream = start_demo_server(
            "search", demo.issuer, directory / "search.log", "--algorithm", "ES256"
        )
        stack.callback(stop, search)
        site = demo_nginx.site_config(
            listen=f"127.0.0.1:{port}",
            server_name="127.0.0.1",
            issuer_upstream=service.url,
            notes_upstream=notes_upstream,
            search_upstream=search_upstream,
            notes_resource=demo.notes_resource,
        )
        nginx_dir = directory / "nginx"
        stack.callback(
            demo_nginx.stop_nginx, demo_nginx.start_nginx(nginx_dir, site, port)
        )
        yield Stack(demo, service, nginx_dir)
    # Leave no resource of a port that is gone for later modules.
    for resource in (demo.notes_resource, demo.search_resource, archive[0], alias[0]):
        flask_cli(env, "resources", "remove", resource)


@pytest.fixture(autouse=True)
def clean_state(engine: sqlalchemy.Engine, redis_client: Any) -> None:
    """As conftest's, keeping the resources this module registered once."""
    tables = [table for table in TABLES if table not in KEPT_TABLES]
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"TRUNCATE {', '.join(tables)} CASCADE"))
    redis_client.flushdb()


@pytest.fixture
def person(stack: Stack) -> dict[str, str]:
    return make_user(stack.service, f"{secrets.token_hex(4)}@example.com")


def token_for(
    stack: Stack, person: dict[str, str], resource: str | None, **extra: str
) -> str:
    """The authorization code flow through nginx for one resource (None: default)."""
    browser = stack.browser()
    client = register_client(browser)
    params = {"resource": resource} if resource else {}
    code, verifier, _ = get_code(browser, client, person, **params, **extra)
    response = redeem(browser, client, code, verifier, **params)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def initialize(stack: Stack, url: str, token: str) -> requests.Response:
    """An MCP ``initialize`` POST through nginx."""
    return requests.post(
        url,
        json=INITIALIZE,
        headers={**MCP_HEADERS, **bearer(token)},
        timeout=30,
    )


def challenge(response: requests.Response) -> str:
    return response.headers.get("WWW-Authenticate", "")


def test_each_servers_token_is_refused_at_the_other(
    stack: Stack, person: dict[str, str]
) -> None:
    demo = stack.demo
    notes = token_for(stack, person, demo.notes_resource)
    search = token_for(stack, person, demo.search_resource)
    assert claims_of(notes)["aud"] == demo.notes_resource
    assert claims_of(search)["aud"] == demo.search_resource
    # Asking for the notes endpoint itself, under the registered /notes.
    by_endpoint = token_for(stack, person, demo.notes_url)
    assert claims_of(by_endpoint)["aud"] == demo.notes_resource

    # Each token opens its own server: notes through /auth/verify, search
    # through its own JWTVerifier.
    assert initialize(stack, demo.notes_url, notes).status_code == 200
    assert initialize(stack, demo.search_url, search).status_code == 200

    # The search token at the notes server: /auth/verify refuses it, naming
    # the notes server's metadata (nginx passes the challenge on).
    at_notes = initialize(stack, demo.notes_url, search)
    assert at_notes.status_code == 401
    assert 'error="invalid_token"' in challenge(at_notes)
    notes_metadata = demo.metadata_url(demo.notes_resource)
    assert f'resource_metadata="{notes_metadata}"' in challenge(at_notes)

    # nginx clears a client's X-MCP-Resource: naming the search server in it
    # does not get a search token checked as one (the issuer would answer 403
    # invalid_target, the two forms disagreeing, if it reached it).
    claimed = requests.post(
        demo.notes_url,
        json=INITIALIZE,
        headers={
            **MCP_HEADERS,
            **bearer(search),
            "X-MCP-Resource": demo.search_resource,
        },
        timeout=30,
    )
    assert claimed.status_code == 401
    assert 'error="invalid_token"' in challenge(claimed)

    # The notes token at the search server: its JWTVerifier checks aud itself.
    at_search = initialize(stack, demo.search_url, notes)
    assert at_search.status_code == 401
    assert 'error="invalid_token"' in challenge(at_search)
    search_metadata = demo.metadata_url(demo.search_resource)
    assert f'resource_metadata="{search_metadata}"' in challenge(at_search)
    # So does a token with the very scope it wants, for another resource:
    # only its audience is wrong.
    archive = token_for(stack, person, stack.archive, scope="search")
    assert claims_of(archive)["scope"] == "search"
    wrong_audience = initialize(stack, demo.search_url, archive)
    assert wrong_audience.status_code == 401
    assert 'error="invalid_token"' in challenge(wrong_audience)


def test_a_token_for_the_issuers_own_mcp_opens_neither_server(
    stack: Stack, person: dict[str, str]
) -> None:
    demo = stack.demo
    builtin = token_for(stack, person, None)  # no resource: the default, /mcp
    assert claims_of(builtin)["aud"] == demo.issuer + "/mcp"

    at_notes = initialize(stack, demo.notes_url, builtin)
    at_search = initialize(stack, demo.search_url, builtin)

    assert at_notes.status_code == 401
    assert 'error="invalid_token"' in challenge(at_notes)
    assert at_search.status_code == 401
    assert 'error="invalid_token"' in challenge(at_search)


def test_without_a_token_each_server_names_its_own_metadata(stack: Stack) -> None:
    demo = stack.demo
    browser = stack.browser()
    notes_metadata = demo.metadata_url(demo.notes_resource)
    search_metadata = demo.metadata_url(demo.search_resource)
    expected = {
        # From /auth/verify, passed on by nginx.
        demo.notes_url: f'Bearer resource_metadata="{notes_metadata}", '
        'scope="notes:read notes:write"',
        # From FastMCP's RemoteAuthProvider.
        demo.search_url: 'Bearer scope="search", '
        f'resource_metadata="{search_metadata}"',
    }
    for url, resource, name, scopes in (
        (demo.notes_url, demo.notes_resource, NOTES_NAME, NOTES_SCOPES),
        (demo.search_url, demo.search_resource, SEARCH_NAME, SEARCH_SCOPES),
    ):
        response = requests.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30)
        assert response.status_code == 401
        assert challenge(response) == expected[url]
        metadata_url = demo.metadata_url(resource)

        # The issuer serves the document at that URL (through nginx).
        document = browser.get(metadata_url).json()
        assert document["resource"] == resource
        assert document["authorization_servers"] == [demo.issuer]
        assert document["scopes_supported"] == list(scopes)
        assert document["resource_name"] == name

    listed = browser.get("/.well-known/oauth-authorization-server").json()
    assert {demo.notes_resource, demo.search_resource} <= set(
        listed["protected_resources"]
    )


def test_a_proxy_guarding_an_unregistered_path_is_a_set_up_error(
    stack: Stack, person: dict[str, str]
) -> None:
    # What /auth/verify tells a proxy whose forwarded host and path fall under
    # no registered resource: not a challenge a client could follow.
    token = token_for(stack, person, stack.demo.notes_resource)
    response = stack.browser().get(
        "/auth/verify",
        headers={
            **bearer(token),
            "X-Forwarded-Host": urlsplit(stack.url).netloc,
            "X-Forwarded-Uri": "/nothing/mcp",
            "X-Forwarded-Proto": "http",
        },
    )

    assert response.status_code == 403
    assert response.json()["error"] == "invalid_target"


def test_a_host_the_client_chose_does_not_pick_the_resource(
    stack: Stack, person: dict[str, str]
) -> None:
    # nginx answers any Host here, and forwards the one the client sent. A
    # token for the resource registered under the host's other name must not
    # open the notes server: the location names its resource outright, and
    # the issuer refuses a check whose two forms disagree.
    elsewhere = token_for(stack, person, alias_of(stack.demo.notes_resource))
    port = urlsplit(stack.url).port
    response = requests.post(
        stack.demo.notes_url,
        json=INITIALIZE,
        headers={**MCP_HEADERS, **bearer(elsewhere), "Host": f"localhost:{port}"},
        timeout=30,
    )

    assert response.status_code in (401, 403), response.text
    # And its own token through the same door still opens it.
    own = token_for(stack, person, stack.demo.notes_resource)
    assert initialize(stack, stack.demo.notes_url, own).status_code == 200


def test_the_demo_registers_only_what_is_missing(
    stack: Stack, base_env: dict[str, str]
) -> None:
    # `make run DEMO=servers` runs again and again on the same database.
    env = {**os.environ, **base_env, "ISSUER": stack.url}
    devservices.register_demo_resources(env, stack.demo.registrations())

    listed = flask_cli(env, "resources", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = {stack.demo.notes_resource, stack.demo.search_resource}
    found = [entry for entry in json.loads(listed.stdout) if entry["uri"] in mine]
    assert len(found) == 2


def introspect(stack: Stack, credentials: tuple[str, str], token: str) -> Any:
    response = stack.browser().post(
        "/introspect", data={"token": token}, auth=credentials
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_introspection_answers_only_for_the_callers_own_server(
    stack: Stack, person: dict[str, str]
) -> None:
    demo = stack.demo
    notes = token_for(stack, person, demo.notes_resource)
    search = token_for(stack, person, demo.search_resource)
    builtin = token_for(stack, person, None)

    own_notes = introspect(stack, NOTES_RS, notes)
    own_search = introspect(stack, SEARCH_RS, search)

    assert own_notes["active"] is True
    assert own_notes["aud"] == demo.notes_resource
    assert own_notes["sub"] == person["id"]
    assert own_search["active"] is True
    assert own_search["aud"] == demo.search_resource
    assert introspect(stack, NOTES_RS, search) == {"active": False}
    assert introspect(stack, SEARCH_RS, notes) == {"active": False}
    assert introspect(stack, NOTES_RS, builtin) == {"active": False}
    assert introspect(stack, SEARCH_RS, builtin) == {"active": False}


def mcp_session(url: str, token: str) -> dict[str, str]:
    """Initialize an MCP session over plain HTTP; return the headers that use it."""
    headers = {**MCP_HEADERS, **bearer(token)}
    opened = requests.post(url, json=INITIALIZE, headers=headers, timeout=30)
    assert opened.status_code == 200, opened.text
    headers["Mcp-Session-Id"] = opened.headers["Mcp-Session-Id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    done = requests.post(url, json=initialized, headers=headers, timeout=30)
    assert done.status_code == 202, done.text
    return headers


def call_tool(
    url: str, headers: dict[str, str], tool: str, arguments: dict[str, Any]
) -> requests.Response:
    message: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return requests.post(url, json=message, headers=headers, timeout=30)


def tool_result(response: requests.Response) -> Any:
    """The structured result of a tools/call answered as a server-sent event."""
    assert response.status_code == 200, response.text
    [data] = [
        line[len("data: ") :]
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    result = json.loads(data)["result"]
    assert result.get("isError") is not True, result
    return result["structuredContent"]


def test_a_write_needs_a_step_up_that_asks_only_for_write(
    stack: Stack, person: dict[str, str]
) -> None:
    # The notes server's own 403 (MCP's scope challenge) after a read-only grant.
    demo = stack.demo
    browser = stack.browser()
    client = register_client(browser)
    resource = {"resource": demo.notes_resource}
    code, verifier, _ = get_code(
        browser, client, person, scope="notes:read", **resource
    )
    read_only = redeem(browser, client, code, verifier, **resource).json()
    assert read_only["scope"] == "notes:read"
    session = mcp_session(demo.notes_url, read_only["access_token"])
    listed = tool_result(call_tool(demo.notes_url, session, "list_notes", {}))
    assert listed["scope"] == "notes:read"

    refused = call_tool(demo.notes_url, session, "add_note", {"text": "hello"})

    assert refused.status_code == 403
    assert challenge(refused) == (
        'Bearer error="insufficient_scope", scope="notes:write", '
        f'resource_metadata="{demo.metadata_url(demo.notes_resource)}"'
    )
    # The client asks again for the union; the page lists only write as new.
    _, challenge_value = pkce_pair()
    union = "notes:read notes:write"
    again = authorize_params(client, challenge_value, scope=union, **resource)
    page = browser.get("/authorize", params=again)
    assert page.status_code == 200, page.text
    new = [li.get_text(" ", strip=True) for li in soup(page).select("li.scope-new")]
    granted = [
        li.get_text(" ", strip=True) for li in soup(page).select("li.scope-granted")
    ]
    assert len(new) == 1 and "notes:write" in new[0], new
    assert len(granted) == 1 and "notes:read" in granted[0], granted
    code, verifier, _ = get_code(browser, client, person, scope=union, **resource)
    both = redeem(browser, client, code, verifier, **resource).json()
    assert set(both["scope"].split()) == {"notes:read", "notes:write"}

    session = mcp_session(demo.notes_url, both["access_token"])
    added = tool_result(call_tool(demo.notes_url, session, "add_note", {"text": "hi"}))
    assert added["notes"] == ["hi"]
    assert added["subject"] == person["id"]


class Person:
    """Plays the user in one browser, through nginx: signs in once, then approves
    each authorization request on the real consent page."""

    def __init__(self, browser: Browser, user: dict[str, str]) -> None:
        self.browser = browser
        self.user = user
        self.authorization_urls: list[str] = []
        self.consent_pages: list[str] = []
        self.result: AuthorizationCodeResult | None = None

    def approve(self, authorization_url: str) -> str:
        """Approve; return where the browser was sent back (the redirect URI)."""
        self.authorization_urls.append(authorization_url)
        consent_url = authorization_url
        page = self.browser.get(authorization_url)
        if page.status_code == 302:  # not signed in yet
            login_url = page.headers["Location"]
            login_page = self.browser.get(login_url)
            assert login_page.status_code == 200, login_page.text
            signed_in = self.browser.post(
                login_url,
                data={
                    **self.browser.form(login_page),
                    "email": self.user["email"],
                    "password": self.user["password"],
                },
            )
            assert signed_in.status_code == 302, signed_in.text
            consent_url = signed_in.headers["Location"]
            page = self.browser.get(consent_url)
        assert page.status_code == 200, page.text
        self.consent_pages.append(page.text)
        answer = self.browser.post(
            consent_url, data={**self.browser.form(page), "decision": "approve"}
        )
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]

    def approve_for_sdk(self, authorization_url: str) -> None:
        location = self.approve(authorization_url)
        assert location.startswith(REDIRECT_URI + "?"), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.result = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    async def redirect_handler(self, authorization_url: str) -> None:
        # The issuer runs in this process's threads; keep the event loop free.
        await anyio.to_thread.run_sync(self.approve_for_sdk, authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


class SharedRegistration(MemoryStorage):
    """Tokens of one server, the client registration of every server.

    The SDK binds stored credentials to the issuer that registered them, not
    to a server, so a client may keep one registration with an issuer for
    all the servers behind it.
    """

    def __init__(self, shared: MemoryStorage) -> None:
        super().__init__()
        self.shared = shared

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.shared.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.shared.client_info = client_info


def sdk_provider(
    url: str, person: Person, storage: MemoryStorage
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="MCP SDK test client",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )


async def sdk_call(
    url: str, provider: OAuthClientProvider, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Connect with the SDK's ClientSession, list the tools, call one."""
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        called = await session.call_tool(tool, arguments)
    assert called.is_error is False, called
    assert isinstance(called.structured_content, dict), called
    return {
        "tools": sorted(tool.name for tool in tools.tools),
        "result": called.structured_content,
    }


def resource_sections(browser: Browser) -> dict[str, str]:
    """The account page's connected applications: resource URI -> its text."""
    page = browser.get("/account")
    assert page.status_code == 200, page.text
    return {
        str(section["data-resource"]): section.get_text(" ", strip=True)
        for section in soup(page).select("section.resource")
    }


def consents_of(engine: sqlalchemy.Engine, person: dict[str, str]) -> set[Any]:
    """(client, resource) of each live consent the person gave."""
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT client_id, resource FROM consents"
                " WHERE user_id = :user AND revoked_at IS NULL"
            ),
            {"user": person["id"]},
        )
        return {(row.client_id, row.resource) for row in rows}


def test_the_python_sdk_uses_both_servers_with_two_consents_for_one_client(
    stack: Stack, person: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    demo = stack.demo
    user = Person(stack.browser(), person)
    # One client, registered once with the issuer, for both servers.
    registration = MemoryStorage()
    notes_client = sdk_provider(demo.notes_url, user, SharedRegistration(registration))
    search_client = sdk_provider(
        demo.search_url, user, SharedRegistration(registration)
    )

    added = anyio.run(
        sdk_call, demo.notes_url, notes_client, "add_note", {"text": "from python"}
    )
    found = anyio.run(
        sdk_call, demo.search_url, search_client, "search", {"query": "release"}
    )

    # Everything was discovered from each server's 401: its metadata, the
    # issuer, registration; each authorization request named its resource.
    assert len(user.authorization_urls) == 2
    asked = [parse_qs(urlsplit(url).query) for url in user.authorization_urls]
    assert asked[0]["resource"] == [demo.notes_resource]
    assert asked[1]["resource"] == [demo.search_resource]
    assert set(asked[0]["scope"][0].split()) - {"offline_access"} == set(NOTES_SCOPES)
    assert set(asked[1]["scope"][0].split()) - {"offline_access"} == set(SEARCH_SCOPES)
    # Each consent page named the server it was for.
    assert NOTES_NAME in user.consent_pages[0]
    assert demo.notes_resource in user.consent_pages[0]
    assert SEARCH_NAME in user.consent_pages[1]
    assert demo.search_resource in user.consent_pages[1]

    assert registration.client_info is not None
    client_id = registration.client_info.client_id
    assert added["tools"] == ["add_note", "list_notes"]
    assert added["result"]["subject"] == person["id"]
    assert added["result"]["client"] == client_id
    assert added["result"]["notes"] == ["from python"]
    assert found["tools"] == ["search"]
    assert found["result"]["subject"] == person["id"]
    assert found["result"]["client"] == client_id
    assert found["result"]["results"] == ["Release checklist"]
    # Each server's tokens are for it alone.
    for provider, resource in (
        (notes_client, demo.notes_resource),
        (search_client, demo.search_resource),
    ):
        tokens = provider.context.current_tokens
        assert tokens is not None
        assert claims_of(tokens.access_token)["aud"] == resource

    # Two consents of one client, each for its own server, grouped so on the
    # account page.
    assert consents_of(engine, person) == {
        (client_id, demo.notes_resource),
        (client_id, demo.search_resource),
    }
    sections = resource_sections(user.browser)
    assert set(sections) == {demo.notes_resource, demo.search_resource}
    assert NOTES_NAME in sections[demo.notes_resource]
    assert client_id in sections[demo.notes_resource]
    assert SEARCH_NAME in sections[demo.search_resource]
    assert client_id in sections[demo.search_resource]


def run_ts_client(
    modules: Path, user: Person, calls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run tests/js/sdk_two_servers.mjs, approving each authorization it asks for."""
    outcomes: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            ["node", str(TS_SCRIPT), str(modules), json.dumps(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        try:
            for line in process.stdout:
                message = json.loads(line)
                assert "error" not in message, message["error"]
                if "authorize" in message:
                    landed = user.approve(message["authorize"])
                    process.stdin.write(landed + "\n")
                    process.stdin.flush()
                else:
                    outcomes.append(message)
            status = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        errors.seek(0)
        assert status == 0, errors.read()
    return outcomes


def test_the_typescript_sdk_uses_both_servers_with_a_client_each(
    stack: Stack,
    person: dict[str, str],
    engine: sqlalchemy.Engine,
    sdk_modules: Path,  # noqa: F811
) -> None:
    demo = stack.demo
    user = Person(stack.browser(), person)
    calls = [
        {"url": demo.notes_url, "tool": "list_notes", "arguments": {}},
        {"url": demo.search_url, "tool": "search", "arguments": {"query": "style"}},
    ]

    notes, search = run_ts_client(sdk_modules, user, calls)

    assert len(user.authorization_urls) == 2
    asked = [parse_qs(urlsplit(url).query) for url in user.authorization_urls]
    assert asked[0]["resource"] == [demo.notes_resource]
    assert asked[1]["resource"] == [demo.search_resource]
    assert notes["tools"] == ["list_notes", "add_note"]
    assert notes["result"]["subject"] == person["id"]
    assert notes["result"]["client"] == notes["client_id"]
    assert claims_of(notes["access_token"])["aud"] == demo.notes_resource
    assert search["tools"] == ["search"]
    assert search["result"]["subject"] == person["id"]
    assert search["result"]["results"] == ["Style guide"]
    assert claims_of(search["access_token"])["aud"] == demo.search_resource

    assert consents_of(engine, person) == {
        (notes["client_id"], demo.notes_resource),
        (search["client_id"], demo.search_resource),
    }
    sections = resource_sections(user.browser)
    assert notes["client_id"] in sections[demo.notes_resource]
    assert search["client_id"] in sections[demo.search_resource]


def test_make_run_demo_servers_serves_both_servers_behind_nginx() -> None:
    # `make run DEMO=servers`, as a newcomer runs it; stopping it stops it all.
    port = free_port()
    demo = Demo(f"http://127.0.0.1:{port}")
    with tempfile.TemporaryDirectory(prefix="mcp-auth-demo-") as tmp:
        Path(tmp).chmod(0o755)  # the postgres account reaches it: no fallback
        output = Path(tmp) / "run.log"
        with output.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "tools/devservices.py", "run"]
                + ["--data-dir", str(Path(tmp) / "devdata"), "--demo", "servers"],
                env=run_env(port),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            check_demo_run(demo, process, output)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # it stops what it started
                process.wait(timeout=120)


def check_demo_run(demo: Demo, process: subprocess.Popen, output: Path) -> None:
    deadline = time.monotonic() + 180
    while "give an MCP client either URL" not in output.read_text():
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.3)
    printed = output.read_text().split("give an MCP client either URL", 1)[1]
    assert demo.notes_url in printed and demo.search_url in printed

    for url, resource in (
        (demo.notes_url, demo.notes_resource),
        (demo.search_url, demo.search_resource),
    ):
        response = requests.post(url, json=INITIALIZE, headers=MCP_HEADERS, timeout=30)
        assert response.status_code == 401, response.text
        metadata_url = demo.metadata_url(resource)
        assert f'resource_metadata="{metadata_url}"' in challenge(response)
        document = requests.get(metadata_url, timeout=30).json()
        assert document["resource"] == resource
    keys = requests.get(demo.jwks_uri, timeout=30).json()["keys"]
    # `make run` signs as a default deploy does: a key the service made (RS256).
    assert [(key["kty"], key["alg"]) for key in keys] == [("RSA", "RS256")]

    children = descendants(process.pid)
    commands = " ".join(children.values())
    for name in ("postgres", "redis-server", "gunicorn", "nginx"):
        assert name in commands, commands
    assert "demo_servers.py notes" in commands
    assert "demo_servers.py search" in commands
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, output.read_text()
    time.sleep(0.5)
    left = {pid: cmd for pid, cmd in children.items() if is_running(pid)}
    assert not left, left


def test_the_readme_shows_the_site_the_tests_run() -> None:
    # The README's nginx block is site_config's output, filled with its
    # example values: what the tests run is what operators copy.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Several MCP servers behind one issuer", 1)[1]
    shown = section.split("```nginx\n", 1)[1].split("```", 1)[0]
    assert shown == demo_nginx.site_config(
        listen="443 ssl",
        server_name="mcp.example.com",
        issuer_upstream="http://127.0.0.1:8000",
        notes_upstream="http://127.0.0.1:9001",
        search_upstream="http://127.0.0.1:9002",
        notes_resource="https://mcp.example.com/notes",
    )
