"""The inventory of Redis keys (app/redis_keys.py) is what the code writes.

Three ways to drift, three checks: a key literal in app/ that no family
names; a family whose owner no longer spells it; and, after the main flows
run over HTTP against the real Redis, a key (or channel) there that no
family matches. docs/reference.md's table is the declaration, row for row.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveServer, make_user
from document_server import DocumentServer
from helpers import (
    LOOPBACK_REDIRECT,
    Browser,
    bearer,
    client_post,
    device_lookup,
    get_code,
    key_token,
    new_key,
    obtain_tokens,
    refresh,
    register_client,
    revoke,
    revoke_from_account_page,
    until,
    whoami,
)
from joserfc import jwt
from joserfc.jwk import ECKey
from oidc_upstream import OidcProvider, provider_sign_in, start_at_provider

from app import redis_keys
from app.redis_keys import FAMILIES, KeyFamily

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
#: A literal shaped like a Redis key name: ``word:`` segments.
KEYISH = re.compile(r"^[A-Za-z][\w-]*:(?:[\w-]+:?)*$")
#: Literals shaped like key names that name no key, and why.
NOT_KEYS = {
    "http:": "a URL scheme (client metadata fetch)",
    "https:": "a URL scheme (client metadata fetch)",
    "evict:": "a message on the denylist channel, not a key",
    "denylist-view:": "the denylist thread's ping payload, not a key",
    "read:user": "a GitHub scope",
    "user:email": "a GitHub scope",
    "urn:ietf:params:oauth:grant-type:jwt-bearer": "a grant type (RFC 7523)",
    "urn:ietf:params:oauth:grant-type:device_code": "a grant type (RFC 8628)",
    "urn:ietf:params:oauth:grant-profile:id-jag": "a grant profile (ID-JAG)",
}
#: What the limits library puts before every key flask-limiter names: a
#: moving window's, and a pair of counters' (in a hash tag).
LIMITER_PREFIXES = ("LIMITS:LIMITER/", "LIMITS:{LIMITER/")
#: Families that live only while an instance holds them (a rebuild, a fetch):
#: the flows below cannot leave them behind for the SCAN to see.
MOMENTARY = {
    redis_keys.DENYLIST_REBUILDING,
    redis_keys.CIMD_LOCK,
    redis_keys.KEY_SET_LOCK,
}
LOW_LOGIN_LIMIT = "3 per minute"


def _literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant in ``path``, f-strings' fixed parts included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def _source_of(module: str) -> str:
    path = ROOT.joinpath(*module.split("."))
    package = path / "__init__.py"
    return (package if package.exists() else path.with_suffix(".py")).read_text()


def _spelling(family: KeyFamily) -> str:
    """What the owner writes: the prefix, or its own part of a limiter key."""
    for limiter in LIMITER_PREFIXES:
        if family.prefix.startswith(limiter):
            # ``rl/login-account:`` -> ``login-account:``; ``rl/`` -> ``rl``.
            return family.prefix.removeprefix(limiter).rstrip("/").rsplit("/")[-1]
    return family.prefix


def _family_of(name: str, kind: str = "key") -> KeyFamily | None:
    """The most specific family whose pattern ``name`` matches."""
    matches = [
        family
        for family in FAMILIES
        if family.kind == kind and fnmatch.fnmatchcase(name, family.glob)
    ]
    return max(matches, key=lambda family: len(family.prefix), default=None)


# --- The declaration against the source -------------------------------------------


def test_every_key_literal_in_the_code_is_declared() -> None:
    declared = [family.name for family in FAMILIES]
    undeclared = [
        f"{path.relative_to(ROOT)}:{line} {text!r}"
        for path in sorted(APP.rglob("*.py"))
        if path.name != "redis_keys.py"
        for line, text in _literals(path)
        if KEYISH.match(text)
        and text not in NOT_KEYS
        and not any(text in name for name in declared)
    ]
    assert not undeclared, f"declare these in app/redis_keys.py: {undeclared}"


def test_every_family_is_spelled_by_its_owner() -> None:
    # A family the code no longer writes, or whose writer moved, fails here.
    constants = {id(value): name for name, value in vars(redis_keys).items()}
    stale = [
        f"{family.name} ({family.owner})"
        for family in FAMILIES
        if f'"{_spelling(family)}' not in _source_of(family.owner)
        and not re.search(rf"\b{constants[id(family)]}\b", _source_of(family.owner))
    ]
    assert not stale, f"owners that no longer write these: {stale}"


def test_every_declared_family_is_in_the_list() -> None:
    defined = [v for v in vars(redis_keys).values() if isinstance(v, KeyFamily)]
    assert sorted(f.name for f in defined) == sorted(f.name for f in FAMILIES)
    assert len({family.name for family in FAMILIES}) == len(FAMILIES)


def reference_table() -> str:
    """The table docs/reference.md carries, rendered from the declaration."""
    rows = [
        "| name | owner | lifetime | lost when Redis is emptied |",
        "|---|---|---|---|",
    ]
    for family in FAMILIES:
        name = f"`{family.name}`" + (
            " (pub/sub channel)" if family.kind != "key" else ""
        )
        rows.append(
            f"| {name} | `{family.owner}` | {family.lifetime} | {family.lost} |"
        )
    return "\n".join(rows) + "\n"


def test_the_reference_lists_every_family() -> None:
    table = reference_table()
    reference = (ROOT / "docs" / "reference.md").read_text()
    assert table in reference, f"put this table in docs/reference.md:\n{table}"


# --- The declaration against a real Redis ------------------------------------------


def _sign_out(browser: Browser) -> None:
    page = browser.get("/account")
    assert browser.post("/logout", data=browser.form(page)).status_code == 302


def _spend_the_device_budget(browser: Browser, email: str) -> None:
    """Wrong passwords from a known browser until its device cookie is locked."""
    for _ in range(int(LOW_LOGIN_LIMIT.split()[0]) + 1):
        page = browser.get("/login")
        form = {**browser.form(page), "email": email, "password": "wrong"}
        last = browser.post("/login", data=form)
    assert last.status_code == 429, last.text


def _serve_a_service_client(live: LiveServer, documents: DocumentServer) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "one"})
    documents.respond("/jwks.json", json.dumps({"keys": [key.as_dict(private=False)]}))
    runner = live.app.test_cli_runner()
    made = runner.invoke(
        args=[
            "clients",
            "create-service",
            "ci",
            "--resource",
            live.issuer + "/mcp",
            "--jwks-uri",
            documents.url("/jwks.json"),
        ]
    )
    assert made.exit_code == 0, made.output
    client_id = json.loads(made.stdout)["client_id"]
    browser = live.browser()
    for kid in ("one", "rotated"):
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": live.issuer,
            "exp": int(time.time()) + 60,
            "jti": secrets.token_urlsafe(16),
        }
        assertion = jwt.encode({"alg": "ES256", "kid": kid}, claims, key)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        answer = browser.post("/token", data=form)
        assert answer.status_code == (200 if kid == "one" else 401), answer.text
    revoked = runner.invoke(args=["clients", "revoke", client_id])
    assert revoked.exit_code == 0, revoked.output


def _run_the_flows(
    live: LiveServer, documents: DocumentServer, user: dict[str, str]
) -> None:
    browser = live.browser()
    # Register, sign in, consent, code, token; refresh; revoke at /revoke.
    client, tokens = obtain_tokens(browser, user)
    renewed = refresh(browser, client, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    access = renewed.json()["access_token"]
    assert revoke(browser, client, {"token": tokens["access_token"]}).ok
    assert whoami(browser, access).status_code == 200
    # An API key: made, exchanged, revoked.
    key = new_key(browser, access)
    key_token(browser, key["key"])
    deleted = browser.delete(f"/api-keys/{key['id']}", headers=bearer(access))
    assert deleted.status_code == 204, deleted.text
    # The account page withdraws the consent.
    revoke_from_account_page(browser, client["client_id"])
    # A client metadata document's client.
    url = documents.document("/client.json")
    metadata_client = {"client_id": url, "token_endpoint_auth_method": "none"}
    get_code(browser, {**metadata_client, "redirect_uris": [LOOPBACK_REDIRECT]}, user)
    # A device asks for codes and leaves them pending; the signed-in person
    # types a wrong code once, which both budgets of wrong codes count.
    device = register_client(
        browser,
        grant_types=["urn:ietf:params:oauth:grant-type:device_code"],
        redirect_uris=[],
        token_endpoint_auth_method="none",
    )
    asked = client_post(browser, "/device_authorization", device, {"scope": "read"})
    assert asked.status_code == 200, asked.text
    wrong = device_lookup(browser, "BBBB-BBBB")
    assert wrong.status_code == 400, wrong.text
    # A service client signing with a key at its URL: the set is kept, an
    # unknown key id fetches it again, each assertion's jti is spent; then
    # the client is revoked.
    _serve_a_service_client(live, documents)
    # The operator disables an account.
    other = make_user(live, "mallory@example.com")
    disabled = live.app.test_cli_runner().invoke(
        args=["users", "disable", other["email"]]
    )
    assert disabled.exit_code == 0, disabled.output
    # Through the identity provider: a sign-in left in flight, and one whose
    # email is the user's, which waits for proof to be linked.
    start_at_provider(live.browser())
    assert provider_sign_in(live.browser(), "alice").status_code == 200
    # Sign out; then the browser spends its device cookie's own budget.
    _sign_out(browser)
    _spend_the_device_budget(browser, user["email"])


@pytest.fixture
def live(
    make_server: Callable[..., LiveServer], oidc_provider: OidcProvider
) -> LiveServer:
    return make_server(
        CIMD_ALLOW_LOOPBACK="on",
        LOGIN_RATE_LIMIT=LOW_LOGIN_LIMIT,
        **oidc_provider.settings(),
    )


def test_every_key_the_flows_leave_in_redis_is_declared(
    live: LiveServer,
    documents: DocumentServer,
    user: dict[str, str],
    redis_client: Any,
) -> None:
    _run_the_flows(live, documents, user)
    # The API key's use is recorded once its answer has gone out; a key of
    # another name is reported below.
    gate = redis_keys.API_KEY_LAST_USED.glob
    until(lambda: any(redis_client.scan_iter(match=gate)), 5)

    keys = sorted(str(key) for key in redis_client.scan_iter(count=1000))
    channels = [str(name) for name in redis_client.pubsub_channels()]
    undeclared = [key for key in keys if _family_of(key) is None]
    undeclared += [name for name in channels if _family_of(name, "channel") is None]
    assert not undeclared, f"declare these in app/redis_keys.py: {undeclared}"
    # And the flows reached every family that outlives a request, so the
    # check above covered them all.
    seen = {_family_of(key) for key in keys} | {
        _family_of(name, "channel") for name in channels
    }
    missed = [f.name for f in FAMILIES if f not in seen and f not in MOMENTARY]
    assert not missed, f"the flows left no key of {missed}"
