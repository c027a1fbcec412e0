"""Many MCP servers behind one issuer (docs/reference.md, RFC 8707, RFC 9728).

The registry is driven with the real ``flask --app app resources`` command,
and everything else over HTTP as clients, people and proxies do: which
``resource`` values a token may be issued for and what its ``aud`` is, the
scopes of each resource, a consent per resource, discovery, and what removing
a resource ends, on this server and on a second instance already running.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from conftest import LiveServer
from devservices import free_port
from helpers import (
    INVALID_CREDENTIALS,
    Browser,
    add_resource,
    authorize_params,
    bearer,
    claims_of,
    create_key,
    create_on_page,
    created_key,
    exchange,
    get_code,
    key_token,
    new_key,
    pkce_pair,
    query_of,
    redeem,
    refresh,
    register_client,
    register_resource,
    remove_resource,
    resources_cli,
    revoke_from_account_page,
    select_one,
    soup,
    start_web,
    statements,
    until,
    wait_for_current_view,
    whoami,
)

#: A resource on another host: clients spell its host, port and path variously.
TOOLS = "https://tools.example.com/github"
TOOLS_OPTIONS: dict[str, Any] = {"name": "GitHub", "scopes": "repo issues"}
#: A second resource on another host.
SEARCH = "https://search.example.com/mcp"
SEARCH_OPTIONS: dict[str, Any] = {"name": "Search", "scopes": "query"}
#: What a resource server is told to present at /introspect.
GATEWAY_SECRET = "gateway-secret-of-some-length"
GATEWAY = ("gateway", GATEWAY_SECRET)
REFRESHING = ["authorization_code", "refresh_token"]

T = TypeVar("T")


@pytest.fixture
def cli_env(server: LiveServer, base_env: dict[str, str]) -> dict[str, str]:
    """The operator's environment: the live server's settings and issuer."""
    return {**base_env, "ISSUER": server.issuer}


def concurrently(call: Callable[..., T], *arguments: Any) -> list[T]:
    """Run ``call`` once per argument tuple at once (each CLI run starts Python)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: call(*args), arguments))


def as_metadata(server: Any) -> dict[str, Any]:
    response = requests.get(
        server.url + "/.well-known/oauth-authorization-server", timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def register(server: LiveServer, *resources: tuple[str, dict[str, Any]]) -> list[str]:
    """Register ``resources`` (URI, options) for set-up (the command's own
    tests start it as an operator does); wait until the live ``server`` lists
    them; return their URIs."""
    added = [register_resource(server, uri, **options) for uri, options in resources]
    assert until(
        lambda: set(added) <= set(as_metadata(server)["protected_resources"]), 5
    ), added
    return added


def added_by_the_command(
    server: LiveServer, cli_env: dict[str, str], uri: str, **options: Any
) -> str:
    """Add a resource with the command an operator runs; wait until the live
    ``server`` lists it."""
    added = add_resource(cli_env, uri, **options)
    assert until(lambda: added in as_metadata(server)["protected_resources"], 5)
    return added


def builtin(server: Any) -> str:
    return server.issuer + "/mcp"


def tokens_for(
    browser: Browser,
    user: dict[str, str],
    client: dict[str, Any],
    resource: str | None,
    **extra: str,
) -> dict[str, Any]:
    """Approve ``client`` for ``resource`` and redeem the code naming it too."""
    if resource is not None:
        extra["resource"] = resource
    code, verifier, _ = get_code(browser, client, user, **extra)
    named = {"resource": resource} if resource is not None else {}
    response = redeem(browser, client, code, verifier, **named)
    assert response.status_code == 200, response.text
    return response.json()


def authorize_error(browser: Browser, client: dict[str, Any], **params: Any) -> str:
    """The ``error`` of the redirect /authorize answers; '' for the consent
    page (the request was good).

    A list value repeats its parameter.
    """
    query = urlencode(authorize_params(client, pkce_pair()[1], **params), doseq=True)
    response = browser.get("/authorize?" + query)
    if response.status_code == 200:
        return ""
    assert response.status_code == 302, response.text[:300]
    return query_of(response.headers["Location"]).get("error", "")


def token_error(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()["error"]


def verify(browser: Browser, token: str | None, resource: str) -> requests.Response:
    """GET /auth/verify as a proxy guarding ``resource`` asks it."""
    headers = {"X-MCP-Resource": resource}
    if token is not None:
        headers.update(bearer(token))
    return browser.get("/auth/verify", headers=headers)


def introspect(browser: Browser, token: str) -> dict[str, Any]:
    response = browser.post("/introspect", data={"token": token}, auth=GATEWAY)
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Instance:
    """A gunicorn serving the app; enough of a server for :class:`Browser`."""

    url: str
    process: subprocess.Popen

    def browser(self) -> Browser:
        return Browser(self)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def second_instance(base_env: dict[str, str], log: Path, **settings: str) -> Instance:
    port = free_port()
    return Instance(
        f"http://127.0.0.1:{port}", start_web(base_env, port, log, **settings)
    )


# --- The registry, as an operator runs it -------------------------------------


def listed(cli_env: dict[str, str]) -> dict[str, list[str]]:
    """``resources list``: each line's fields by URI (URI NAME SCOPES TTL FLAGS)."""
    result = resources_cli(cli_env, "list")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
    assert all(4 <= len(row) <= 5 for row in rows), result.stdout
    return {row[0]: row[1:] for row in rows}


def listed_json(cli_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = resources_cli(cli_env, "list", "--json")
    assert result.returncode == 0, result.stderr
    return {entry["uri"]: entry for entry in json.loads(result.stdout)}


def flags(row: list[str]) -> set[str]:
    """The FLAGS field's words (``built-in``, ``default``), however separated."""
    return set(re.split(r"[\s,]+", row[3])) - {""} if len(row) > 3 else set()


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 1 with one line on stderr (and the words given in it)."""
    assert_one_line_error(result.returncode, result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr, result.stderr


def assert_one_line_error(code: int, stdout: str, stderr: str) -> None:
    assert code == 1, (stdout, stderr)
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


#: URIs registered as typed, and the canonical form the command prints.
CANONICAL = {
    "HTTPS://GitHub.Example.COM:443/tools/": "https://github.example.com/tools",
    "https://github.example.com:8443/tools": "https://github.example.com:8443/tools",
    "http://LOCALHOST:80/mcp/": "http://localhost/mcp",
    "http://[::1]:9000/a/b": "http://[::1]:9000/a/b",
}


def test_add_prints_the_canonical_uri_and_list_shows_it(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    added = concurrently(
        lambda uri: resources_cli(
            cli_env, "add", uri, "--name", "Files", "--scopes", "read"
        ),
        *[(uri,) for uri in CANONICAL],
    )

    # Its answer alone on stdout (URI=$(flask --app app resources add ...)).
    assert [result.stdout for result in added] == [
        uri + "\n" for uri in CANONICAL.values()
    ]
    assert [result.returncode for result in added] == [0] * len(CANONICAL)
    rows = listed(cli_env)
    assert set(rows) == {builtin(server), *CANONICAL.values()}
    for uri in CANONICAL.values():
        assert rows[uri][:2] == ["Files", "read"]
        assert flags(rows[uri]) == set()
    assert rows[builtin(server)][:2] == ["MCP", "read write"]
    assert flags(rows[builtin(server)]) == {"built-in", "default"}


def test_list_json_describes_every_resource(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    # At most 16 scopes of at most 32 characters, RFC 6749 scope-token characters.
    longest = "x" * 32
    many = ["repo:read", "files.write", longest] + [f"s{i}" for i in range(13)]
    add_resource(
        cli_env,
        TOOLS,
        name="GitHub tools",
        scopes=" ".join(many),
        describe=["repo:read=Read your repositories", "s0=Zero"],
        describe_zh=["repo:read=读取你的代码仓库"],
        token_ttl=120,
    )

    entries = listed_json(cli_env)

    assert set(entries) == {builtin(server), TOOLS}
    tools = entries[TOOLS]
    assert tools["name"] == "GitHub tools"
    assert [scope["name"] for scope in tools["scopes"]] == many
    described = {scope["name"]: scope for scope in tools["scopes"]}
    assert described["repo:read"]["description"] == "Read your repositories"
    assert described["repo:read"]["description_zh"] == "读取你的代码仓库"
    assert described["s0"]["description"] == "Zero"
    assert tools["access_token_ttl"] == 120
    assert tools["builtin"] is False and tools["default"] is False
    mcp = entries[builtin(server)]
    assert mcp["name"] == "MCP"
    assert [scope["name"] for scope in mcp["scopes"]] == ["read", "write"]
    assert mcp["access_token_ttl"] is None
    assert mcp["builtin"] is True and mcp["default"] is True
    assert listed(cli_env)[TOOLS][2] == "120"


def test_update_changes_what_the_live_server_accepts(
    server: LiveServer,
    cli_env: dict[str, str],
    browser: Browser,
    user: dict[str, str],
) -> None:
    uri = "https://update.example.com/mcp"
    register(server, (uri, {"name": "Old", "scopes": "a b", "token_ttl": 60}))
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    assert authorize_error(browser, client, resource=uri, scope="b") == ""

    updated = resources_cli(
        cli_env,
        "update",
        uri,
        "--name",
        "New",
        "--scopes",
        "a c",
        "--describe",
        "c=See C",
        "--describe-zh",
        "c=看见 C",
        "--token-ttl",
        "90",
    )

    assert updated.returncode == 0, updated.stderr
    entry = listed_json(cli_env)[uri]
    assert entry["name"] == "New"
    assert [scope["name"] for scope in entry["scopes"]] == ["a", "c"]
    assert entry["scopes"][1]["description"] == "See C"
    assert entry["scopes"][1]["description_zh"] == "看见 C"
    assert entry["access_token_ttl"] == 90
    # The running server learns it without a restart.
    assert until(
        lambda: (
            authorize_error(browser, client, resource=uri, scope="b") == "invalid_scope"
        ),
        5,
    )
    assert tokens_for(browser, user, client, uri, scope="c")["expires_in"] == 90

    back = resources_cli(cli_env, "update", uri, "--default-token-ttl")
    assert back.returncode == 0, back.stderr
    assert listed_json(cli_env)[uri]["access_token_ttl"] is None


def test_remove_takes_it_off_the_list(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    register_resource(server, TOOLS, **TOOLS_OPTIONS)

    remove_resource(cli_env, TOOLS)

    assert set(listed(cli_env)) == {builtin(server)}
    assert_refused(resources_cli(cli_env, "remove", TOOLS))


def test_metadata_prints_the_document_for_a_server_on_another_host(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    register_resource(server, TOOLS, **TOOLS_OPTIONS)

    printed = resources_cli(cli_env, "metadata", TOOLS)

    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == {
        "resource": TOOLS,
        "authorization_servers": [server.issuer],
        "scopes_supported": ["repo", "issues"],
        "bearer_methods_supported": ["header"],
        "resource_name": "GitHub",
    }
    assert_refused(resources_cli(cli_env, "metadata", SEARCH))


#: ``resources add`` arguments refused whatever the registry holds.
REFUSED_ADDS: dict[str, tuple[str, str]] = {
    "http on a public host": ("http://tools.example.com/mcp", "read"),
    "a query": ("https://tools.example.com/mcp?tenant=a", "read"),
    "a fragment": ("https://tools.example.com/mcp#top", "read"),
    "userinfo": ("https://ada:secret@tools.example.com/mcp", "read"),
    "a relative URI": ("/github/mcp", "read"),
    "no scheme": ("tools.example.com/mcp", "read"),
    "another scheme": ("ftp://tools.example.com/mcp", "read"),
    "offline_access": (TOOLS, "repo offline_access"),
    "a quote in a scope": (TOOLS, 'repo "issues"'),
    "a backslash in a scope": (TOOLS, "repo\\issues"),
    "a scope of 33 characters": (TOOLS, "x" * 33),
    "a scope not in ASCII": (TOOLS, "lesen-ä"),
    "seventeen scopes": (TOOLS, " ".join(f"s{i}" for i in range(17))),
}


@pytest.fixture(scope="module")
def refused_adds(server: LiveServer) -> dict[str, Any]:
    """Each refused ``add``, run once for the module (they change nothing).

    Run by Flask's CLI runner in this process: the same command, without
    starting Python once per case.
    """
    runner = server.app.test_cli_runner()
    return {
        case: runner.invoke(
            args=["resources", "add", uri, "--name", "Tools", "--scopes", scopes]
        )
        for case, (uri, scopes) in REFUSED_ADDS.items()
    }


@pytest.mark.parametrize("case", REFUSED_ADDS)
def test_a_bad_uri_or_scope_is_one_line_of_error(
    refused_adds: dict[str, Any], case: str
) -> None:
    result = refused_adds[case]

    # Refused with a message (SystemExit), not a crash.
    assert isinstance(result.exception, SystemExit), result.exception
    assert_one_line_error(result.exit_code, result.stdout, result.stderr)


def test_a_uri_registered_in_any_spelling_is_a_duplicate(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    register_resource(server, TOOLS, **TOOLS_OPTIONS)

    again, builtin_again = concurrently(
        lambda uri: resources_cli(
            cli_env, "add", uri, "--name", "Again", "--scopes", "read"
        ),
        ("HTTPS://TOOLS.Example.com:443/github/",),
        (builtin(server),),
    )

    assert_refused(again)
    assert_refused(builtin_again)
    assert listed(cli_env)[TOOLS][0] == "GitHub"


def test_the_built_in_and_the_default_resource_cannot_be_removed(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    register_resource(server, TOOLS, **TOOLS_OPTIONS)

    the_builtin, the_default = concurrently(
        lambda uri, settings: resources_cli(cli_env, "remove", uri, **settings),
        (builtin(server), {}),
        (TOOLS, {"DEFAULT_RESOURCE": TOOLS}),
    )

    assert_refused(the_builtin)
    assert_refused(the_default)
    assert set(listed(cli_env)) == {builtin(server), TOOLS}


# --- Matching the ``resource`` of a request -----------------------------------

#: How clients in the field spell a request for TOOLS (or a path below it).
SPELLINGS = {
    "as registered": TOOLS,
    "upper-case scheme and host": "HTTPS://TOOLS.Example.COM/github",
    "the default port": "https://tools.example.com:443/github",
    "a trailing slash": "https://tools.example.com/github/",
    "a path below it": "https://tools.example.com/github/mcp",
    "all of these": "HTTPS://Tools.Example.Com:443/github/mcp/",
}


def test_every_spelling_gets_the_registered_uri_as_audience(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser)

    audiences = {
        case: claims_of(tokens_for(browser, user, client, spelling)["access_token"])[
            "aud"
        ]
        for case, spelling in SPELLINGS.items()
    }

    assert audiences == dict.fromkeys(SPELLINGS, TOOLS)


def test_without_resource_the_default_resource(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser)

    tokens = tokens_for(browser, user, client, None)

    assert claims_of(tokens["access_token"])["aud"] == builtin(server)
    assert tokens["scope"] == "read write"


def test_the_longest_registered_prefix_wins(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    admin = TOOLS + "/admin"
    register(
        server,
        (TOOLS, TOOLS_OPTIONS),
        (admin, {"name": "GitHub admin", "scopes": "admin"}),
    )
    client = register_client(browser)

    below_admin = tokens_for(browser, user, client, admin + "/mcp")
    beside_admin = tokens_for(browser, user, client, TOOLS + "/administration")

    assert claims_of(below_admin["access_token"])["aud"] == admin
    assert below_admin["scope"] == "admin"
    assert claims_of(beside_admin["access_token"])["aud"] == TOOLS


def refused_targets(server: Any) -> dict[str, Any]:
    """``resource`` values no registered resource answers to (TOOLS and SEARCH are)."""
    return {
        "a sibling sharing a prefix": "https://tools.example.com/github2",
        "a parent path": "https://tools.example.com/git",
        "the host alone": "https://tools.example.com",
        "another host": "https://elsewhere.example.com/github",
        "another scheme": "http://tools.example.com/github",
        "another port": "https://tools.example.com:8443/github",
        "a query": TOOLS + "?tenant=a",
        "a fragment": TOOLS + "#top",
        "a relative path": "/github",
        "two resources": [TOOLS, SEARCH],
        "a registered one and the built-in": [TOOLS, builtin(server)],
    }


def test_unknown_and_several_resources_are_invalid_target_at_authorize(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS), (SEARCH, SEARCH_OPTIONS))
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    cases = refused_targets(server)

    errors = {
        case: authorize_error(browser, client, resource=value)
        for case, value in cases.items()
    }

    assert errors == dict.fromkeys(cases, "invalid_target")
    assert authorize_error(browser, client, resource=TOOLS) == ""


def test_a_code_is_redeemed_only_for_its_own_resource(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS), (SEARCH, SEARCH_OPTIONS))
    client = register_client(browser)
    cases = {
        "another registered resource": SEARCH,
        "the built-in resource": builtin(server),
        **refused_targets(server),
    }

    errors = {}
    for case, value in cases.items():
        code, verifier, _ = get_code(browser, client, user, resource=TOOLS)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": verifier,
            "resource": value,
        }
        response = browser.post(
            "/token",
            data=urlencode(form, doseq=True),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(client["client_id"], client["client_secret"]),
        )
        errors[case] = token_error(response)

    assert errors == dict.fromkeys(cases, "invalid_target")
    # A code issued without ``resource`` is the default resource's.
    code, verifier, _ = get_code(browser, client, user)
    assert token_error(redeem(browser, client, code, verifier, resource=TOOLS)) == (
        "invalid_target"
    )


def test_a_refresh_never_changes_audience_and_a_refused_one_spends_nothing(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS), (SEARCH, SEARCH_OPTIONS))
    client = register_client(browser, grant_types=REFRESHING)
    tokens = tokens_for(browser, user, client, TOOLS)

    for elsewhere in (SEARCH, builtin(server), TOOLS + "2"):
        moved = refresh(browser, client, tokens["refresh_token"], resource=elsewhere)
        assert token_error(moved) == "invalid_target", elsewhere
    # Nor can it take another resource's scope along.
    wider = refresh(browser, client, tokens["refresh_token"], scope="repo read")
    assert token_error(wider) == "invalid_scope"

    same = refresh(
        browser,
        client,
        tokens["refresh_token"],
        resource="HTTPS://TOOLS.example.com/github/",
    )
    assert same.status_code == 200, same.text
    assert claims_of(same.json()["access_token"])["aud"] == TOOLS
    unnamed = refresh(browser, client, same.json()["refresh_token"])
    assert unnamed.status_code == 200, unnamed.text
    assert claims_of(unnamed.json()["access_token"])["aud"] == TOOLS
    assert unnamed.json()["scope"] == "repo issues"


# --- Scopes per resource ------------------------------------------------------


def test_scopes_are_checked_against_the_resource_s_own(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser)
    browser.login(user["email"], user["password"])
    cases = {
        "the built-in's scope for TOOLS": (TOOLS, "read", "invalid_scope"),
        "one of each": (TOOLS, "repo read", "invalid_scope"),
        "TOOLS's scope for the built-in": (builtin(server), "repo", "invalid_scope"),
        "TOOLS's scope, by default for the built-in": (None, "issues", "invalid_scope"),
        "TOOLS's own": (TOOLS, "repo", ""),
        "the built-in's own": (builtin(server), "read", ""),
    }

    errors = {
        case: authorize_error(browser, client, resource=resource, scope=scope)
        for case, (resource, scope, _) in cases.items()
    }

    assert errors == {case: error for case, (_, _, error) in cases.items()}
    assert tokens_for(browser, user, client, TOOLS, scope="issues")["scope"] == "issues"


def test_without_scope_a_client_gets_all_of_the_resource_s_scopes(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS), (SEARCH, SEARCH_OPTIONS))
    client = register_client(browser)

    granted = {
        uri: tokens_for(browser, user, client, uri)
        for uri in (TOOLS, SEARCH, builtin(server))
    }

    assert {uri: set(t["scope"].split()) for uri, t in granted.items()} == {
        TOOLS: {"repo", "issues"},
        SEARCH: {"query"},
        builtin(server): {"read", "write"},
    }
    for uri, tokens in granted.items():
        assert claims_of(tokens["access_token"])["scope"] == tokens["scope"], uri


def test_a_client_registered_with_a_scope_asks_only_for_those(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser, scope="read repo")
    browser.login(user["email"], user["password"])

    assert authorize_error(browser, client, resource=TOOLS, scope="issues") == (
        "invalid_scope"
    )
    assert tokens_for(browser, user, client, TOOLS, scope="repo")["scope"] == "repo"


# --- Discovery ----------------------------------------------------------------


def document_of(resource: str, issuer: str, name: str, scopes: list[str]) -> dict:
    return {
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    }


def test_the_metadata_lists_every_resource_and_the_union_of_their_scopes(
    server: LiveServer, cli_env: dict[str, str]
) -> None:
    local = server.issuer + "/search"
    register(
        server,
        (TOOLS, TOOLS_OPTIONS),
        (local, {"name": "S", "scopes": "query"}),
    )

    for path in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ):
        document = requests.get(server.url + path, timeout=10).json()
        assert sorted(document["protected_resources"]) == sorted(
            [builtin(server), TOOLS, local]
        ), path
        assert sorted(document["scopes_supported"]) == sorted(
            ["read", "write", "repo", "issues", "query", "offline_access"]
        ), path


def test_each_resource_on_the_issuer_s_origin_has_its_document(
    server: LiveServer, cli_env: dict[str, str], browser: Browser
) -> None:
    github = server.issuer + "/github"
    nested = server.issuer + "/team/docs"
    register(
        server,
        (github, {"name": "GitHub", "scopes": "repo issues"}),
        (nested, {"name": "Docs", "scopes": "docs:read"}),
        (TOOLS, TOOLS_OPTIONS),
    )
    prm = "/.well-known/oauth-protected-resource"

    served = {path: browser.get(prm + path) for path in ("/github", "/team/docs")}
    printed = concurrently(
        lambda uri: resources_cli(cli_env, "metadata", uri), (github,), (nested,)
    )

    expected = {
        "/github": document_of(github, server.issuer, "GitHub", ["repo", "issues"]),
        "/team/docs": document_of(nested, server.issuer, "Docs", ["docs:read"]),
    }
    for (path, response), command in zip(served.items(), printed, strict=True):
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.json() == expected[path]
        # What the command prints is what this server serves.
        assert command.returncode == 0, command.stderr
        assert json.loads(command.stdout) == expected[path]
    # The built-in keeps its document at both of its addresses.
    for path in ("", "/mcp"):
        assert browser.get(prm + path).json()["resource"] == builtin(server)
    # Not on this origin, not registered, or not on a path-segment boundary.
    for path in ("/github2", "/git", "/nothing", "/team", "/search"):
        assert browser.get(prm + path).status_code == 404, path


# --- DEFAULT_RESOURCE and per-resource token lifetime --------------------------


def test_default_resource_is_what_a_request_without_resource_gets(
    server: LiveServer,
    base_env: dict[str, str],
    user: dict,
    tmp_path: Path,
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    instance = second_instance(base_env, tmp_path / "web.log", DEFAULT_RESOURCE=TOOLS)
    try:
        browser = instance.browser()
        client = register_client(browser)

        tokens = tokens_for(browser, user, client, None)
        named = tokens_for(browser, user, client, instance.url + "/mcp")
    finally:
        instance.stop()

    assert claims_of(tokens["access_token"])["aud"] == TOOLS
    assert set(tokens["scope"].split()) == {"repo", "issues"}
    assert claims_of(named["access_token"])["aud"] == instance.url + "/mcp"


def test_a_resource_s_own_token_lifetime(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    short = "https://short.example.com/mcp"
    register(server, (short, {"name": "Short", "scopes": "read", "token_ttl": 120}))
    client = register_client(browser, grant_types=REFRESHING)

    tokens = tokens_for(browser, user, client, short)
    refreshed = refresh(browser, client, tokens["refresh_token"]).json()
    builtins = tokens_for(browser, user, client, None)
    key = account_key(browser, short, "read")
    exchanged = exchange(browser, key).json()

    for issued in (tokens, refreshed):
        claims = claims_of(issued["access_token"])
        assert issued["expires_in"] == 120
        assert claims["exp"] - claims["iat"] == 120
    # A key made for it yields its tokens too.
    claims = claims_of(exchanged["token"])
    assert claims["aud"] == short
    assert exchanged["expiresIn"] == claims["exp"] - claims["iat"] == 120
    claims = claims_of(builtins["access_token"])
    assert builtins["expires_in"] == claims["exp"] - claims["iat"] == 3600


# --- A consent per person, client and resource --------------------------------


def local_pair(server: LiveServer) -> tuple[str, str]:
    """Two resources on the issuer's origin, so /auth/verify can guard them."""
    github, search = register(
        server,
        (server.issuer + "/github", {"name": "GitHub", "scopes": "repo issues"}),
        (server.issuer + "/search", {"name": "Search", "scopes": "query"}),
    )
    return github, search


def test_approving_another_resource_leaves_the_first_consent_alone(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    github, search = local_pair(server)
    client = register_client(browser, grant_types=REFRESHING)
    first = tokens_for(browser, user, client, github, scope="repo")
    page = browser.get("/account")
    assert soup(page).select(f'section.resource[data-resource="{search}"]') == []

    second = tokens_for(browser, user, client, search)

    assert verify(browser, first["access_token"], github).status_code == 200
    assert verify(browser, second["access_token"], search).status_code == 200
    renewed = refresh(browser, client, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["scope"] == "repo"
    assert claims_of(renewed.json()["access_token"])["aud"] == github
    # The account page shows the client once under each server.
    page = browser.get("/account")
    for uri, name in ((github, "GitHub"), (search, "Search")):
        section = select_one(page, f'section.resource[data-resource="{uri}"]')
        assert name in section.get_text()
        assert client["client_id"] in section.get_text()


def test_a_token_for_one_resource_is_refused_for_another(
    server: LiveServer,
    make_server: Callable[..., LiveServer],
    browser: Browser,
    user: dict,
) -> None:
    github, search = local_pair(server)
    # A resource server for `search` alone, asking an instance of this issuer.
    gateway = make_server(
        ISSUER=server.issuer,
        RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET} {search}",
    ).browser()
    client = register_client(browser)
    token = tokens_for(browser, user, client, github)["access_token"]
    its_own = tokens_for(browser, user, client, search)["access_token"]

    refused = verify(browser, token, search)

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", resource_metadata="'
        f'{server.issuer}/.well-known/oauth-protected-resource/search"'
    )
    assert introspect(gateway, token) == {"active": False}
    # Nor is it good for the built-in /mcp, or for managing API keys there.
    assert whoami(browser, token).status_code == 401
    assert create_key(browser, token).status_code == 401
    assert verify(browser, token, github).status_code == 200
    assert verify(browser, its_own, search).status_code == 200
    assert introspect(gateway, its_own)["aud"] == search


def account_key(browser: Browser, resource: str, scopes: str) -> str:
    """A key the signed-in person makes on the account page for ``resource``."""
    return created_key(create_on_page(browser, resource=resource, scopes=scopes))


def test_revoking_one_server_on_the_account_page_leaves_the_other(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    github, _ = local_pair(server)
    client = register_client(browser, grant_types=REFRESHING)
    mine = tokens_for(browser, user, client, None)
    theirs = tokens_for(browser, user, client, github)
    # A key the application made under its built-in consent, and one the
    # person made for GitHub.
    app_key = new_key(browser, mine["access_token"], scopes=["read"])["key"]
    github_key = account_key(browser, github, "repo")
    assert claims_of(key_token(browser, app_key))["aud"] == builtin(server)
    assert claims_of(key_token(browser, github_key))["aud"] == github

    revoke_from_account_page(browser, client["client_id"], resource=github)

    assert verify(browser, theirs["access_token"], github).status_code == 401
    assert token_error(refresh(browser, client, theirs["refresh_token"])) == (
        "invalid_grant"
    )
    assert whoami(browser, mine["access_token"]).status_code == 200
    renewed = refresh(browser, client, mine["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert whoami(browser, renewed.json()["access_token"]).status_code == 200
    assert whoami(browser, key_token(browser, app_key)).status_code == 200
    assert verify(browser, key_token(browser, github_key), github).status_code == 200

    revoke_from_account_page(browser, client["client_id"], resource=builtin(server))

    assert exchange(browser, app_key).json() == INVALID_CREDENTIALS
    assert whoami(browser, renewed.json()["access_token"]).status_code == 401
    assert verify(browser, key_token(browser, github_key), github).status_code == 200


def forwarded(server: LiveServer, uri: str, **more: str) -> dict[str, str]:
    """The headers a proxy on the issuer's host sends for a request to ``uri``."""
    return {
        "X-Forwarded-Host": urlsplit(server.url).netloc,
        "X-Forwarded-Uri": uri,
        **more,
    }


def test_verify_learns_the_guarded_resource_from_the_proxy(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    github, search = local_pair(server)
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser)
    token = tokens_for(browser, user, client, github)["access_token"]
    builtin_token = tokens_for(browser, user, client, None)["access_token"]

    def status(token: str, **headers: str) -> int:
        return browser.get(
            "/auth/verify", headers={**bearer(token), **headers}
        ).status_code

    # The request's own address, below the resource, with a query.
    assert status(token, **forwarded(server, "/github/mcp?x=1")) == 200
    assert status(token, **forwarded(server, "/search/mcp")) == 401
    assert (
        status(token, **forwarded(server, "/github/mcp", **{"X-MCP-Resource": github}))
        == 200
    )
    # Nothing said: the built-in resource.
    assert status(builtin_token) == 200
    assert status(token) == 401
    # A proxy set-up error: nothing registered there, or two answers.
    for headers in (
        forwarded(server, "/github2/mcp"),
        forwarded(server, "/nothing"),
        {"X-MCP-Resource": "https://elsewhere.example.com/mcp"},
        forwarded(server, "/github/mcp", **{"X-MCP-Resource": search}),
    ):
        refused = browser.get("/auth/verify", headers={**bearer(token), **headers})
        assert refused.status_code == 403, headers
        assert refused.json()["error"] == "invalid_target", headers
    # A resource elsewhere is named by its own origin's metadata address.
    challenge = verify(browser, None, TOOLS)
    assert challenge.status_code == 401
    assert (
        'resource_metadata="https://tools.example.com/.well-known/'
        'oauth-protected-resource/github"'
    ) in challenge.headers["WWW-Authenticate"]


# --- Removing a resource ------------------------------------------------------


def test_removal_ends_the_resource_s_tokens_on_every_instance(
    server: LiveServer,
    cli_env: dict[str, str],
    base_env: dict[str, str],
    browser: Browser,
    user: dict,
    tmp_path: Path,
) -> None:
    github, search = local_pair(server)
    other = second_instance(
        base_env,
        tmp_path / "web.log",
        ISSUER=server.issuer,
        RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET} {github} {search}",
    )
    try:
        removed_resource_ends_everything(
            server, cli_env, browser, other.browser(), user, github, search
        )
    finally:
        other.stop()


def removed_resource_ends_everything(
    server: LiveServer,
    cli_env: dict[str, str],
    browser: Browser,
    other: Browser,
    user: dict,
    github: str,
    search: str,
) -> None:
    client = register_client(browser, grant_types=REFRESHING)
    doomed = tokens_for(browser, user, client, github)
    kept = tokens_for(browser, user, client, search)
    key = account_key(browser, github, "repo")
    doomed_tokens = (doomed["access_token"], key_token(browser, key))
    both = (browser, other)
    for token in doomed_tokens:
        for instance in both:  # checked, so cached, on both instances
            assert verify(instance, token, github).status_code == 200
        assert introspect(other, token)["active"] is True

    remove_resource(cli_env, github)

    # The instance already running learns it without a restart.
    assert until(
        lambda: verify(other, doomed["access_token"], github).status_code != 200, 5
    )

    def nothing_left_for(resource_answer: int) -> None:
        for token in doomed_tokens:
            for instance in both:
                answer = verify(instance, token, github)
                assert answer.status_code == resource_answer, answer.text
            assert introspect(other, token) == {"active": False}
        assert refresh(browser, client, doomed["refresh_token"]).status_code == 400
        assert exchange(browser, key).json() == INVALID_CREDENTIALS

    # No resource is there any more: a proxy set-up error (RFC 8707 §2).
    nothing_left_for(403)
    # Registered again, it starts afresh: nothing from before comes back.
    added_by_the_command(server, cli_env, github, name="GitHub", scopes="repo issues")
    assert until(lambda: verify(other, None, github).status_code == 401, 5)
    nothing_left_for(401)
    assert token_error(refresh(browser, client, doomed["refresh_token"])) == (
        "invalid_grant"
    )

    # The other resource's consent and chain are untouched.
    for instance in both:
        assert verify(instance, kept["access_token"], search).status_code == 200
    assert introspect(other, kept["access_token"])["active"] is True
    renewed = refresh(browser, client, kept["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert verify(other, renewed.json()["access_token"], search).status_code == 200


# --- What checking a token for a registered resource costs --------------------


def test_checking_a_token_for_a_registered_resource_reads_no_postgres(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    github, _ = local_pair(server)
    client = register_client(browser)
    token = tokens_for(browser, user, client, github)["access_token"]
    builtin_token = tokens_for(browser, user, client, None)["access_token"]
    through_proxy = {**bearer(token), **forwarded(server, "/github/mcp?session=1")}
    # Warm: the first checks may fill the process's caches.
    wait_for_current_view(server)
    assert verify(browser, token, github).status_code == 200
    assert browser.get("/auth/verify", headers=through_proxy).status_code == 200
    assert whoami(browser, builtin_token).status_code == 200

    with statements(server) as cost:
        for _ in range(3):
            assert verify(browser, token, github).status_code == 200
            assert browser.get("/auth/verify", headers=through_proxy).status_code == 200
            assert whoami(browser, builtin_token).status_code == 200

    assert cost == []


def test_a_code_exchange_for_a_registered_resource_costs_what_the_built_in_does(
    server: LiveServer, browser: Browser, user: dict
) -> None:
    register(server, (TOOLS, TOOLS_OPTIONS))
    client = register_client(browser)
    tokens_for(browser, user, client, TOOLS)
    wait_for_current_view(server)
    tokens_for(browser, user, client, TOOLS)
    for_tools = get_code(browser, client, user, resource=TOOLS)
    for_builtin = get_code(browser, client, user)

    with statements(server) as tools_cost:
        redeemed = redeem(browser, client, *for_tools[:2], resource=TOOLS)
        assert redeemed.status_code == 200, redeemed.text
    with statements(server) as builtin_cost:
        assert redeem(browser, client, *for_builtin[:2]).status_code == 200

    assert tools_cost == builtin_cost
