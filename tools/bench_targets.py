"""The rows ``make bench`` times: each endpoint, the request sent, the goal.

A row's request is the same every time, unless its body holds ``{code}``:
then each request takes a fresh one-use credential (an authorization code,
a refresh token, a device code, an identity assertion) from its row's
``mint``. Everything a row needs (a signed-in person, an approved client, a
service client, a trusted identity issuer) is set up here, and only for the
rows ``BENCH_ONLY`` keeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import bench_flows
import bench_minters
import bench_servers

#: Saves that many fresh one-use credentials and returns them.
Mint = Callable[[int], list[str]]
ONLY = os.environ.get("BENCH_ONLY", "").split()
MCP_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    '"params":{"name":"whoami","arguments":{}}}'
)
FORM = "application/x-www-form-urlencoded"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

TOKEN_HS256, TOKEN_RS256 = "POST /token (code, HS256)", "POST /token (code, RS256)"
REFRESH = "POST /token (refresh)"
CLIENT_CREDENTIALS = "POST /token (client credentials)"
INTROSPECT = "POST /introspect"
REGISTER = "POST /register"
REVOKE = "POST /revoke"
ACCOUNT = "GET /account"
DEVICE_POLL = "POST /token (device, pending)"
ID_JAG = "POST /token (ID-JAG)"
#: Goals in requests per second, whatever hello-world does (README, "Performance").
REFRESH_GOAL = CLIENT_CREDENTIALS_GOAL = 1000.0


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: str | None
    #: The goal as a share of hello-world's requests per second.
    goal: float | None = None
    #: The goal in requests per second, whatever hello-world does.
    min_rate: float | None = None
    #: The status a working server answers.
    status: int = 200
    #: What a working server's answer holds besides (checked when counting).
    holds: bytes = b""


@dataclass(frozen=True)
class Target:
    """An endpoint of one of the app's servers, with what sending it needs."""

    endpoint: Endpoint
    port: int
    client: bench_flows.Client
    mint: Mint | None = None


def selected(name: str) -> bool:
    """Whether ``BENCH_ONLY`` (words, any of which names a row, in any case)
    keeps this row."""
    return not ONLY or any(word.lower() in name.lower() for word in ONLY)


def basic(user: str, password: str) -> str:
    """RFC 6749 §2.3.1: each part form-encoded, then HTTP Basic."""
    pair = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def form(fields: dict[str, str]) -> str:
    """A form body; a ``{code}`` value is left for wrk to fill in."""
    return urlencode(fields).replace(quote("{code}"), "{code}")


def token_endpoint(name: str, registered: dict, verifier: str) -> Endpoint:
    """The code exchange of a client that went through consent."""
    headers = {
        "Authorization": bench_flows.basic_auth(registered),
        "Content-Type": FORM,
    }
    body = form(bench_flows.token_form("{code}", verifier))
    return Endpoint(name, "POST", "/token", headers, body)


def resource_endpoints(token: str) -> list[Endpoint]:
    bearer = {"Authorization": f"Bearer {token}"}
    mcp_headers = {
        **bearer,
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    return [
        Endpoint(
            "POST /mcp whoami",
            "POST",
            "/mcp",
            mcp_headers,
            MCP_BODY,
            0.70,
            holds=b'"result"',
        ),
        Endpoint("GET /auth/verify", "GET", "/auth/verify", bearer, None, 0.80),
        Endpoint("GET /healthz", "GET", "/healthz", {}, None, 0.90),
    ]


@dataclass(frozen=True)
class Approved:
    """A person signed in at one of the app's servers, who approved a client."""

    client: bench_flows.Client
    registered: dict
    verifier: str
    access_token: str


def approved(
    served: bench_servers.Served, port: int, metadata: dict | None = None
) -> Approved:
    """Sign in at ``port``, and run one flow of a client registered with
    ``metadata`` (see :func:`bench_flows.register`)."""
    client = bench_flows.Client(port)
    bench_flows.sign_in(client, bench_servers.EMAIL, served.password)
    registered, verifier, token = bench_flows.flow(client, metadata)
    return Approved(client, registered, verifier, token)


def signed_with(token: str, algorithm: str) -> None:
    """Stop unless the access token's header names ``algorithm``."""
    header = token.split(".", 1)[0]
    named = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    if named.get("alg") != algorithm:
        raise SystemExit(f"expected {algorithm} access tokens, got {named}")


def code_minter(
    served: bench_servers.Served, env: dict[str, str], person: Approved
) -> contextlib.AbstractContextManager[Mint]:
    return bench_servers.code_minter(
        env,
        person.registered["client_id"],
        served.user_id,
        bench_flows.challenge_of(person.verifier),
    )


def targets(
    served: bench_servers.Served, stack: contextlib.ExitStack
) -> tuple[list[Target], Approved]:
    """Every row ``BENCH_ONLY`` keeps, in the order of the table; and the
    person signed in at the HS256 app (whose client's flows are counted)."""
    env, port = served.env, served.app_port
    person = approved(served, port)
    signed_with(person.access_token, "HS256")
    client = person.client
    rows = [Target(e, port, client) for e in resource_endpoints(person.access_token)]
    rows.append(
        Target(
            token_endpoint(TOKEN_HS256, person.registered, person.verifier),
            port,
            client,
            stack.enter_context(code_minter(served, env, person)),
        )
    )
    if selected(TOKEN_RS256):
        # Beside the HS256 row, so that the signature's cost reads off.
        deployed = approved(served, served.deployed_port)
        signed_with(deployed.access_token, "RS256")
        rows.append(
            Target(
                token_endpoint(TOKEN_RS256, deployed.registered, deployed.verifier),
                served.deployed_port,
                deployed.client,
                stack.enter_context(code_minter(served, served.deployed_env, deployed)),
            )
        )
    if selected(REFRESH) or selected(REVOKE):
        rows += _refresh_targets(served, stack)
    if selected(CLIENT_CREDENTIALS):
        client_id, secret = bench_minters.service_client(env)
        headers = {"Authorization": basic(client_id, secret), "Content-Type": FORM}
        body = form({"grant_type": "client_credentials"})
        endpoint = Endpoint(
            CLIENT_CREDENTIALS,
            "POST",
            "/token",
            headers,
            body,
            min_rate=CLIENT_CREDENTIALS_GOAL,
            holds=b'"access_token"',
        )
        rows.append(Target(endpoint, port, client))
    name, secret = bench_servers.RESOURCE_SERVER, served.introspection_secret
    headers = {"Authorization": basic(name, secret), "Content-Type": FORM}
    body = form({"token": person.access_token})
    endpoint = Endpoint(
        INTROSPECT, "POST", "/introspect", headers, body, 0.70, holds=b'"active": true'
    )
    rows.append(Target(endpoint, port, client))
    registration = (
        '{"redirect_uris":["' + bench_flows.REDIRECT_URI + '"],'
        '"token_endpoint_auth_method":"none"}'
    )
    headers = {"Content-Type": "application/json"}
    endpoint = Endpoint(
        REGISTER, "POST", "/register", headers, registration, status=201
    )
    rows.append(Target(endpoint, port, client))
    endpoint = Endpoint(
        ACCOUNT, "GET", "/account", {"Cookie": client.cookie}, None, holds=b"<html"
    )
    rows.append(Target(endpoint, port, client))
    if selected(DEVICE_POLL):
        rows.append(_device_target(served, stack))
    if selected(ID_JAG):
        rows.append(_id_jag_target(served, person, stack))
    order = [
        *(e.name for e in resource_endpoints("")),
        TOKEN_HS256,
        TOKEN_RS256,
        REFRESH,
        CLIENT_CREDENTIALS,
        INTROSPECT,
        REGISTER,
        REVOKE,
        ACCOUNT,
        DEVICE_POLL,
        ID_JAG,
    ]
    rows.sort(key=lambda target: order.index(target.endpoint.name))
    return [row for row in rows if selected(row.endpoint.name)], person


def _refresh_targets(
    served: bench_servers.Served, stack: contextlib.ExitStack
) -> list[Target]:
    """The refresh grant and the revocation of refresh tokens, by a client
    that registered the refresh grant (the bench's own flow client does
    not: its code exchanges begin no chain) and went through consent."""
    person = approved(
        served,
        served.app_port,
        {"grant_types": ["authorization_code", "refresh_token"]},
    )
    client_id = person.registered["client_id"]
    headers = {"Authorization": bench_flows.basic_auth(person.registered)}
    headers["Content-Type"] = FORM
    refresh = Endpoint(
        REFRESH,
        "POST",
        "/token",
        headers,
        form({"grant_type": "refresh_token", "refresh_token": "{code}"}),
        min_rate=REFRESH_GOAL,
        holds=b'"refresh_token"',
    )
    revoke = Endpoint(
        REVOKE,
        "POST",
        "/revoke",
        headers,
        form({"token": "{code}", "token_type_hint": "refresh_token"}),
    )
    env = served.env
    return [
        Target(
            refresh,
            served.app_port,
            person.client,
            stack.enter_context(
                bench_minters.refresh_minter(env, client_id, served.user_id)
            ),
        ),
        Target(
            revoke,
            served.app_port,
            person.client,
            stack.enter_context(bench_minters.revocable_minter(env, client_id)),
        ),
    ]


def _device_target(served: bench_servers.Served, stack: contextlib.ExitStack) -> Target:
    """A device's poll before anyone decided: a public client that registered
    the device grant, polling each device code once."""
    client = bench_flows.Client(served.app_port)
    registered = bench_flows.register(
        client,
        {
            "grant_types": [DEVICE_CODE],
            "token_endpoint_auth_method": "none",
            "redirect_uris": [],
        },
    )
    client_id = registered["client_id"]
    # One through the front door, to prove the client can; the rest minted.
    status, _, data = client.form("/device_authorization", {"client_id": client_id})
    bench_flows.expect(status, 200, "POST /device_authorization", data)
    body = form(
        {"grant_type": DEVICE_CODE, "device_code": "{code}", "client_id": client_id}
    )
    endpoint = Endpoint(
        DEVICE_POLL,
        "POST",
        "/token",
        {"Content-Type": FORM},
        body,
        status=400,
        holds=b"authorization_pending",
    )
    mint = stack.enter_context(bench_minters.device_code_minter(served.env, client_id))
    return Target(endpoint, served.app_port, client, mint)


def _id_jag_target(
    served: bench_servers.Served, person: Approved, stack: contextlib.ExitStack
) -> Target:
    """The identity-assertion exchange (ID-JAG) by the bench's confidential
    client, for the bench person, from an issuer the app trusts."""
    client_id = person.registered["client_id"]
    issuer = stack.enter_context(
        bench_minters.identity_issuer(served.env, client_id, served.user_id)
    )
    headers = {"Authorization": bench_flows.basic_auth(person.registered)}
    headers["Content-Type"] = FORM
    body = form({"grant_type": JWT_BEARER, "assertion": "{code}"})
    endpoint = Endpoint(
        ID_JAG, "POST", "/token", headers, body, holds=b'"access_token"'
    )
    return Target(endpoint, served.app_port, person.client, issuer.mint)
