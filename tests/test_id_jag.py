"""Enterprise-managed authorization: an ID-JAG traded at /token (RFC 7523).

An enterprise identity provider (:mod:`enterprise_idp`, a real HTTP server
with real keys) issues Identity Assertion JWT Authorization Grants; the
operator trusts it with ``flask --app app idps trust``; a registered client
presents an assertion with ``grant_type=urn:ietf:params:oauth:grant-type:
jwt-bearer`` and gets an access token for the person the assertion names
(draft-ietf-oauth-identity-assertion-authz-grant; MCP's enterprise-managed
authorization extension, SEP-990).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
import requests
import sqlalchemy
from conftest import LiveServer
from devservices import free_port
from document_server import DocumentServer
from enterprise_idp import OMIT, EnterpriseIdp, b64json, new_key
from helpers import (
    ROOT,
    Browser,
    authorize_params,
    authorize_path,
    claims_of,
    pkce_pair,
    register_client,
    register_resource,
    start_web,
    token_request,
    whoami,
    whoami_output,
)
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from mcp import ClientSession
from mcp.client.auth.extensions.identity_assertion import (
    IdentityAssertionOAuthProvider,
)
from mcp.client.streamable_http import streamable_http_client
from mcp_sdk_client import MemoryStorage, whoami_of
from test_audit import AuditLog

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
#: The person's id at the enterprise IdP (the assertions' default ``sub``).
SUBJECT = "employee-1"
#: A resource registered besides the built-in one, with a single scope.
TOOLS = "https://tools.example.com/mcp"

LOOPBACK_ON = {"CIMD_ALLOW_LOOPBACK": "on"}


# --- set-up -----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(base_env: dict[str, str]) -> Iterator[LiveServer]:
    """The service, allowed to fetch a JWKS over http from loopback; one
    for the module (every test starts from empty tables and Redis anyway)."""
    live = LiveServer(base_env, LOOPBACK_ON)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def idp(service: LiveServer) -> Iterator[EnterpriseIdp]:
    """The enterprise IdP, issuing ID-JAGs for the service's own MCP endpoint."""
    made = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    yield made
    made.stop()


@pytest.fixture
def other_idp(service: LiveServer) -> Iterator[EnterpriseIdp]:
    """A second IdP, with keys of its own (trusted or not, as the test says)."""
    made = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    yield made
    made.stop()


def cli(server: LiveServer, *args: str) -> Any:
    """The app's command, run by Flask's CLI runner on ``server``'s app."""
    return server.app.test_cli_runner().invoke(args=list(args))


def trust(server: LiveServer, idp: EnterpriseIdp, *options: str) -> None:
    result = cli(
        server, "idps", "trust", idp.issuer, "--jwks-uri", idp.jwks_uri, *options
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.strip() == idp.issuer


def distrust(server: LiveServer, idp: EnterpriseIdp) -> None:
    result = cli(server, "idps", "distrust", idp.issuer)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.strip() == f"distrusted {idp.issuer}"


def link_identity(
    engine: sqlalchemy.Engine, user_id: str, issuer: str, subject: str
) -> None:
    """Give the person the identity (issuer, subject), as a sign-in would have."""
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO identities (id, user_id, issuer, subject)"
                " VALUES (:id, :user_id, :issuer, :subject)"
            ),
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "issuer": issuer,
                "subject": subject,
            },
        )


def add_person(engine: sqlalchemy.Engine, email: str) -> dict[str, str]:
    """A person with an account and no password, as one who signs in only
    through their company's identity provider."""
    person_id = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO users (id, email, is_active) VALUES (:id, :email, true)"
            ),
            {"id": person_id, "email": email},
        )
    return {"id": person_id, "email": email}


def identities_of(engine: sqlalchemy.Engine) -> set[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT user_id, issuer, subject FROM identities")
        )
        return {(str(row.user_id), row.issuer, row.subject) for row in rows}


def emails_of(engine: sqlalchemy.Engine) -> set[str]:
    with engine.connect() as connection:
        return {
            row.email
            for row in connection.execute(sqlalchemy.text("SELECT email FROM users"))
        }


def assert_error(response: requests.Response, status: int, error: str) -> None:
    assert (response.status_code, response.headers.get("Content-Type")) == (
        status,
        "application/json",
    ), (response.status_code, response.text)
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body


@dataclass
class Enterprise:
    """One test's world: the service trusting the IdP, a confidential client
    registered by DCR, and a person holding the identity (IdP, ``SUBJECT``)."""

    service: LiveServer
    idp: EnterpriseIdp
    engine: sqlalchemy.Engine
    browser: Browser
    client: dict[str, Any]
    person: dict[str, str]

    def assertion(self, idp: EnterpriseIdp | None = None, **claims: Any) -> str:
        """A good ID-JAG for the client and the person, ``claims`` overridden."""
        claims.setdefault("client_id", self.client["client_id"])
        claims.setdefault("sub", SUBJECT)
        return (idp or self.idp).mint(**claims)

    def exchange(
        self, assertion: str, client: dict[str, Any] | None = None, **params: str
    ) -> requests.Response:
        return self.post(assertion, params, client)

    def post(
        self,
        assertion: str,
        params: dict[str, str],
        client: dict[str, Any] | None = None,
    ) -> requests.Response:
        """POST /token with the grant, the assertion and ``params``."""
        data = {"grant_type": JWT_BEARER, "assertion": assertion, **params}
        return token_request(self.browser, client or self.client, data)

    def token(self, assertion: str | None = None, **params: str) -> dict[str, Any]:
        """The 200 answer to an exchange (of a good assertion, by default)."""
        response = self.post(assertion or self.assertion(), params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def enterprise(
    service: LiveServer, idp: EnterpriseIdp, engine: sqlalchemy.Engine
) -> Enterprise:
    trust(service, idp)
    browser = service.browser()
    client = register_client(
        browser, client_name="Agent", token_endpoint_auth_method="client_secret_basic"
    )
    person = add_person(engine, "ada@example.com")
    link_identity(engine, person["id"], idp.issuer, SUBJECT)
    return Enterprise(service, idp, engine, browser, client, person)


@pytest.fixture
def audit_log(service: LiveServer) -> Iterator[AuditLog]:
    handler = AuditLog()
    logger = logging.getLogger("app.audit")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# --- the operator's commands --------------------------------------------------


def test_trust_list_and_distrust_an_issuer(
    service: LiveServer, idp: EnterpriseIdp, other_idp: EnterpriseIdp
) -> None:
    trust(service, idp)
    trust(
        service,
        other_idp,
        "--allow-public-clients",
        *("--email-domain", "example.com", "--email-domain", "Corp.Example"),
    )

    listed = cli(service, "idps", "list")
    assert listed.exit_code == 0, listed.output
    assert idp.issuer in listed.stdout and other_idp.issuer in listed.stdout
    as_json = cli(service, "idps", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert {i["issuer"]: i for i in json.loads(as_json.stdout)} == {
        idp.issuer: {
            "issuer": idp.issuer,
            "jwks_uri": idp.jwks_uri,
            "allow_public_clients": False,
            "email_domains": [],
        },
        other_idp.issuer: {
            "issuer": other_idp.issuer,
            "jwks_uri": other_idp.jwks_uri,
            "allow_public_clients": True,
            "email_domains": ["example.com", "corp.example"],
        },
    }

    distrust(service, other_idp)
    listed = cli(service, "idps", "list", "--json")
    assert [i["issuer"] for i in json.loads(listed.stdout)] == [idp.issuer]


def test_trusting_again_replaces_the_jwks_uri(enterprise: Enterprise) -> None:
    service, idp = enterprise.service, enterprise.idp
    nowhere = idp.url + "/keys/v2"  # answers 404
    moved = cli(service, "idps", "trust", idp.issuer, "--jwks-uri", nowhere)
    assert moved.exit_code == 0, moved.output
    assert moved.stdout.strip() == idp.issuer

    listed = cli(service, "idps", "list", "--json").stdout
    assert json.dumps(nowhere) in listed
    assert json.dumps(idp.jwks_uri) not in listed
    assert listed.count(json.dumps(idp.issuer)) == 1
    # The keys are looked for where the operator said last.
    assert_error(enterprise.exchange(enterprise.assertion()), 400, "invalid_grant")
    trust(service, idp)
    enterprise.token()


def assert_one_line_error(result: Any) -> None:
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_distrusting_an_issuer_not_trusted_is_an_error(
    service: LiveServer, idp: EnterpriseIdp
) -> None:
    assert_one_line_error(cli(service, "idps", "distrust", idp.issuer))


@pytest.mark.parametrize(
    "domain", ["@example.com", "exa mple.com", "bo@example.com", ""]
)
def test_a_bad_email_domain_is_refused_in_one_line(
    service: LiveServer, idp: EnterpriseIdp, domain: str
) -> None:
    refused = cli(
        service,
        "idps",
        "trust",
        idp.issuer,
        "--jwks-uri",
        idp.jwks_uri,
        "--email-domain",
        domain,
    )

    assert_one_line_error(refused)
    assert json.loads(cli(service, "idps", "list", "--json").stdout) == []


def test_loopback_http_is_refused_without_the_setting(
    server: LiveServer, idp: EnterpriseIdp
) -> None:
    # ``server`` runs without CIMD_ALLOW_LOOPBACK: only https is trusted.
    issuer_refused = cli(
        server,
        "idps",
        "trust",
        idp.issuer,
        "--jwks-uri",
        "https://idp.example.com/jwks",
    )
    jwks_refused = cli(
        server, "idps", "trust", "https://idp.example.com", "--jwks-uri", idp.jwks_uri
    )

    assert_one_line_error(issuer_refused)
    assert_one_line_error(jwks_refused)
    listed = cli(server, "idps", "list", "--json")
    assert listed.exit_code == 0
    assert "idp.example.com" not in listed.stdout and idp.url not in listed.stdout


@pytest.mark.parametrize(
    "issuer, jwks_uri",
    [
        ("http://idp.example.com", "https://idp.example.com/jwks"),
        ("https://idp.example.com", "http://idp.example.com/jwks"),
        ("idp.example.com", "https://idp.example.com/jwks"),
    ],
)
def test_plain_http_off_loopback_is_refused_even_with_the_setting(
    service: LiveServer, issuer: str, jwks_uri: str
) -> None:
    refused = cli(service, "idps", "trust", issuer, "--jwks-uri", jwks_uri)

    assert_one_line_error(refused)
    assert "idp.example.com" not in cli(service, "idps", "list", "--json").stdout


def test_the_command_run_by_an_operator_refuses_http_in_one_line(
    base_env: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "idps", "trust"]
        + ["http://127.0.0.1:9/", "--jwks-uri", "http://127.0.0.1:9/jwks"],
        cwd=ROOT,
        env={**os.environ, **base_env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- metadata -------------------------------------------------------------------


def test_metadata_advertises_the_grant_and_the_id_jag_profile(
    service: LiveServer,
) -> None:
    metadata = requests.get(
        service.url + "/.well-known/oauth-authorization-server", timeout=10
    ).json()

    assert JWT_BEARER in metadata["grant_types_supported"]
    assert "authorization_code" in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]


# --- the grant --------------------------------------------------------------------


def test_an_assertion_for_a_known_identity_gets_a_token_that_works(
    enterprise: Enterprise,
) -> None:
    service, client = enterprise.service, enterprise.client
    before = time.time()

    answer = enterprise.token()

    assert answer["token_type"].lower() == "bearer"
    assert "refresh_token" not in answer
    assert set(answer["scope"].split()) == {"read", "write"}
    assert 0 < answer["expires_in"] <= 3600
    claims = claims_of(answer["access_token"])
    assert claims["iss"] == service.issuer
    assert claims["sub"] == enterprise.person["id"]
    assert claims["aud"] == service.issuer + "/mcp"
    assert claims["client_id"] == client["client_id"]
    assert set(claims["scope"].split()) == {"read", "write"}
    assert claims["exp"] - claims["iat"] == answer["expires_in"]
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert whoami_output(enterprise.browser, answer["access_token"]) == {
        "sub": enterprise.person["id"],
        "email": enterprise.person["email"],
        "client_id": client["client_id"],
        "scope": answer["scope"],
    }


@pytest.mark.parametrize(
    "typ",
    [
        "application/oauth-id-jag+jwt",
        "OAuth-ID-JAG+JWT",
        "Application/OAUTH-ID-JAG+JWT",
    ],
)
def test_the_typ_may_be_spelled_as_a_full_media_type_in_any_case(
    enterprise: Enterprise, typ: str
) -> None:
    # RFC 7515 §4.1.9: "application/" may be left out of ``typ``, or written;
    # media types are compared without regard to case (RFC 2045 §5.1).
    enterprise.token(enterprise.assertion(header={"typ": typ}))


def test_an_audience_list_holding_the_issuer_is_accepted(
    enterprise: Enterprise,
) -> None:
    issuer = enterprise.service.issuer

    enterprise.token(enterprise.assertion(aud=[issuer]))
    enterprise.token(enterprise.assertion(aud=["https://other.example.com", issuer]))


def test_a_request_without_an_assertion_is_invalid_request(
    enterprise: Enterprise,
) -> None:
    response = token_request(
        enterprise.browser, enterprise.client, {"grant_type": JWT_BEARER}
    )

    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "times",
    [
        {"iat": 30, "exp": 330},  # the IdP's clock a little ahead of ours
        {"iat": 0, "exp": 3500},  # nearly an hour to live
        {"iat": -3000, "exp": 30},  # old, and about to expire
    ],
    ids=["iat within the skew", "exp within the hour", "old but live"],
)
def test_lifetimes_within_the_limits_are_accepted(
    enterprise: Enterprise, times: dict[str, int]
) -> None:
    now = int(time.time())

    enterprise.token(
        enterprise.assertion(iat=now + times["iat"], exp=now + times["exp"])
    )


def test_an_es256_identity_provider_is_as_good(
    enterprise: Enterprise, service: LiveServer
) -> None:
    es_idp = EnterpriseIdp(
        "ES256", audience=service.issuer, resource=service.issuer + "/mcp"
    )
    try:
        trust(service, es_idp)
        link_identity(enterprise.engine, enterprise.person["id"], es_idp.issuer, "e-7")

        answer = enterprise.token(enterprise.assertion(es_idp, sub="e-7"))

        assert claims_of(answer["access_token"])["sub"] == enterprise.person["id"]
    finally:
        es_idp.stop()


def test_a_client_secret_post_client_may_use_the_grant(
    enterprise: Enterprise,
) -> None:
    client = register_client(
        enterprise.browser, token_endpoint_auth_method="client_secret_post"
    )

    response = enterprise.exchange(
        enterprise.assertion(client_id=client["client_id"]), client=client
    )

    assert response.status_code == 200, response.text
    assert (
        claims_of(response.json()["access_token"])["client_id"] == client["client_id"]
    )


SecretMethod = Literal["client_secret_basic", "client_secret_post"]


@pytest.mark.parametrize(
    "grant_types",
    [[JWT_BEARER], ["authorization_code", "refresh_token"]],
    ids=["registered for the grant alone", "registered for others"],
)
def test_any_registered_client_may_use_the_grant(
    enterprise: Enterprise, grant_types: list[str]
) -> None:
    client = register_client(
        enterprise.browser,
        grant_types=grant_types,
        token_endpoint_auth_method="client_secret_basic",
    )

    response = enterprise.exchange(
        enterprise.assertion(client_id=client["client_id"]), client=client
    )

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()


async def sdk_session(
    enterprise: Enterprise, auth_method: SecretMethod, calls: list[tuple[str, str]]
) -> dict[str, Any]:
    client = register_client(
        enterprise.browser, client_name="SDK", token_endpoint_auth_method=auth_method
    )
    service = enterprise.service

    async def assertion_provider(audience: str, resource: str) -> str:
        # Plays the IdP's leg 1: the ID-JAG for this audience and resource.
        calls.append((audience, resource))
        return enterprise.idp.mint(
            aud=audience, resource=resource, client_id=client["client_id"], sub=SUBJECT
        )

    provider = IdentityAssertionOAuthProvider(
        server_url=service.url + "/mcp",
        storage=MemoryStorage(),
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        issuer=service.issuer,
        assertion_provider=assertion_provider,
        token_endpoint_auth_method=auth_method,
    )
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30) as http,
        streamable_http_client(service.url + "/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        called = await session.call_tool("whoami", {})
    return {"tools": tools, "whoami": whoami_of(called), "client": client}


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_the_mcp_sdk_identity_assertion_provider_calls_a_tool(
    enterprise: Enterprise, auth_method: SecretMethod
) -> None:
    calls: list[tuple[str, str]] = []

    outcome = anyio.run(sdk_session, enterprise, auth_method, calls)

    service = enterprise.service
    assert calls == [(service.issuer, service.issuer + "/mcp")]
    assert outcome["whoami"] == {
        "sub": enterprise.person["id"],
        "email": enterprise.person["email"],
        "client_id": outcome["client"]["client_id"],
        "scope": "read write",
    }
    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]


# --- scope ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "asserted, requested, granted",
    [
        ("read write", "read", {"read"}),
        ("read", "read write", {"read"}),
        ("read write", None, {"read", "write"}),
        ("write", None, {"write"}),
        # Asserted scopes the resource does not have are never granted.
        ("read write admin", None, {"read", "write"}),
        ("read admin", "read admin", {"read"}),
    ],
)
def test_the_scope_granted_is_requested_and_asserted(
    enterprise: Enterprise, asserted: str, requested: str | None, granted: set[str]
) -> None:
    params = {"scope": requested} if requested is not None else {}

    answer = enterprise.token(enterprise.assertion(scope=asserted), **params)

    assert set(answer["scope"].split()) == granted
    assert set(claims_of(answer["access_token"])["scope"].split()) == granted


def test_the_scope_stays_within_the_asserted_resources(
    enterprise: Enterprise,
) -> None:
    register_resource(enterprise.service, TOOLS, scopes="read", token_ttl=120)

    answer = enterprise.token(enterprise.assertion(resource=TOOLS, scope="read write"))

    assert answer["scope"] == "read"
    assert answer["expires_in"] == 120  # the resource's token lifetime
    claims = claims_of(answer["access_token"])
    assert claims["aud"] == TOOLS and claims["scope"] == "read"


@pytest.mark.parametrize(
    "asserted, requested",
    [("read", "write"), ("admin", None), ("read", "admin"), ("", "read"), (OMIT, None)],
)
def test_no_scope_in_common_is_invalid_scope(
    enterprise: Enterprise, asserted: Any, requested: str | None
) -> None:
    params = {"scope": requested} if requested is not None else {}

    response = enterprise.post(enterprise.assertion(scope=asserted), params)

    assert_error(response, 400, "invalid_scope")


# --- refused assertions -----------------------------------------------------------

#: Each way an assertion goes wrong, as a function of the test's world.
BAD_ASSERTIONS: dict[str, Callable[[Enterprise], str]] = {
    "alg none": lambda e: e.idp.unsigned(client_id=e.client["client_id"], sub=SUBJECT),
    "HS256 keyed with the public key": lambda e: e.idp.hs256_with_public_key(
        client_id=e.client["client_id"], sub=SUBJECT
    ),
    "a foreign key under the right kid": lambda e: e.idp.foreign(
        client_id=e.client["client_id"], sub=SUBJECT
    ),
    "a kid the IdP never published": lambda e: e.assertion(header={"kid": "not-a-kid"}),
    "a tampered payload": lambda e: tamper(e.assertion()),
    "aud another server": lambda e: e.assertion(aud="https://as.example.com"),
    "aud the resource": lambda e: e.assertion(aud=e.service.issuer + "/mcp"),
    "aud missing": lambda e: e.assertion(aud=OMIT),
    "aud the token endpoint": lambda e: e.assertion(aud=e.service.issuer + "/token"),
    "aud a list without the issuer": lambda e: e.assertion(
        aud=["https://as.example.com", e.service.issuer + "/token"]
    ),
    "expired": lambda e: e.assertion(
        iat=int(time.time()) - 900, exp=int(time.time()) - 120
    ),
    "exp more than an hour ahead": lambda e: e.assertion(
        exp=int(time.time()) + 3600 + 300
    ),
    "exp missing": lambda e: e.assertion(exp=OMIT),
    "iat in the future": lambda e: e.assertion(
        iat=int(time.time()) + 300, exp=int(time.time()) + 600
    ),
    "iat missing": lambda e: e.assertion(iat=OMIT),
    "jti missing": lambda e: e.assertion(jti=OMIT),
    "sub missing": lambda e: e.assertion(sub=OMIT),
    "typ JWT": lambda e: e.assertion(header={"typ": "JWT"}),
    "typ missing": lambda e: e.assertion(header={"typ": OMIT}),
    "typ of an access token": lambda e: e.assertion(header={"typ": "at+jwt"}),
    "client_id another client's": lambda e: e.assertion(
        client_id=register_client(e.browser)["client_id"]
    ),
    "client_id missing": lambda e: e.assertion(client_id=OMIT),
    "iss not the signer's": lambda e: e.assertion(iss="https://idp.example.com"),
    "iss with a trailing slash": lambda e: e.assertion(iss=e.idp.issuer + "/"),
    "alg NONE": lambda e: e.idp.unsigned(
        "NONE", client_id=e.client["client_id"], sub=SUBJECT
    ),
    "a foreign key and no kid": lambda e: e.idp.mint(
        header={"kid": OMIT},
        key=new_key(),
        client_id=e.client["client_id"],
        sub=SUBJECT,
    ),
    "an unknown critical header": lambda e: e.idp.signed_as_given(
        {"crit": ["urn:example:policy"], "urn:example:policy": "strict"},
        client_id=e.client["client_id"],
        sub=SUBJECT,
    ),
    "a payload nested too deep": lambda e: e.idp.signed_as_given(
        {},
        payload=b'{"sub": "employee-1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ),
    "a payload that is not JSON": lambda e: e.idp.signed_as_given(
        {}, payload=b"\xff\xfenot json"
    ),
    "a NUL in sub": lambda e: e.assertion(sub="employee-1\x00"),
    "exp a string": lambda e: e.assertion(exp=str(int(time.time()) + 300)),
    "sub not a string": lambda e: e.assertion(sub=12345),
}


def tamper(token: str) -> str:
    """The token with its payload's ``sub`` changed and the signature kept."""
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "employee-2"
    return f"{header}.{b64json(claims)}.{signature}"


@pytest.mark.parametrize("case", BAD_ASSERTIONS)
def test_a_bad_assertion_is_invalid_grant(
    enterprise: Enterprise, engine: sqlalchemy.Engine, case: str
) -> None:
    # The employee-2 of a tampered payload exists, so that only the signature
    # can refuse it.
    other = add_person(engine, "bo@example.com")
    link_identity(engine, other["id"], enterprise.idp.issuer, "employee-2")

    response = enterprise.exchange(BAD_ASSERTIONS[case](enterprise))

    assert_error(response, 400, "invalid_grant")
    # The same world takes a good assertion: the defect alone was refused.
    enterprise.token()


def test_an_untrusted_issuer_is_invalid_grant(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    link_identity(enterprise.engine, enterprise.person["id"], other_idp.issuer, SUBJECT)

    response = enterprise.exchange(enterprise.assertion(other_idp))

    assert_error(response, 400, "invalid_grant")


@pytest.mark.parametrize("pointer", ["jku", "jwk", "x5u"])
def test_keys_named_in_the_header_are_not_believed(
    enterprise: Enterprise, other_idp: EnterpriseIdp, pointer: str
) -> None:
    # The attacker's own key, its JWKS served, pointed at from the header
    # (RFC 8725 §3.10): only the jwks_uri the operator gave counts.
    where = {
        "jku": other_idp.jwks_uri,
        "jwk": other_idp.key.as_dict(private=False),
        "x5u": other_idp.url + "/cert.pem",
    }[pointer]
    forged = enterprise.assertion(
        other_idp, iss=enterprise.idp.issuer, header={pointer: where}
    )

    response = enterprise.exchange(forged)

    assert_error(response, 400, "invalid_grant")
    assert sum(other_idp.requests.values()) == 0  # nothing fetched from there
    enterprise.token()


def test_a_symmetric_key_in_the_issuers_key_set_signs_nothing(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    # A secret published by mistake is a secret everyone has: HS256 is never
    # an assertion's algorithm, whatever key set offers a key for it.
    trust(enterprise.service, other_idp)
    link_identity(enterprise.engine, enterprise.person["id"], other_idp.issuer, "o-1")
    secret = OctKey.generate_key(256, parameters={"kid": "shared-secret"})
    other_idp.extra_jwks.append(secret.as_dict(private=True))

    forged = other_idp.mint(
        header={"alg": "HS256"},
        key=secret,
        client_id=enterprise.client["client_id"],
        sub="o-1",
    )

    assert_error(enterprise.exchange(forged), 400, "invalid_grant")


def test_an_issuers_other_keys_are_left_out_of_its_set(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    # Published sets hold keys for other uses (Keycloak's has an encryption
    # key beside its signing key); those are left out, and the signing key
    # still verifies.
    trust(enterprise.service, other_idp)
    link_identity(enterprise.engine, enterprise.person["id"], other_idp.issuer, "o-2")
    encryption = RSAKey.generate_key(2048, parameters={"kid": "enc"})
    published = encryption.as_dict(private=False)
    other_idp.extra_jwks.append({**published, "use": "enc", "alg": "RSA-OAEP"})
    weak = {**RSAKey.generate_key(2048).as_dict(private=False), "kid": "weak"}
    weak["e"] = "Aw"  # exponent 3: never believed
    other_idp.extra_jwks.append(weak)

    good = other_idp.mint(client_id=enterprise.client["client_id"], sub="o-2")
    forged = other_idp.mint(
        header={"kid": "enc"},
        key=encryption,
        client_id=enterprise.client["client_id"],
        sub="o-2",
    )

    assert enterprise.exchange(good).status_code == 200
    assert_error(enterprise.exchange(forged), 400, "invalid_grant")


def test_a_trusted_issuer_cannot_speak_for_another(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    # Both trusted: the other IdP's key signs a claim to be the first one.
    trust(enterprise.service, other_idp)

    forged = enterprise.assertion(other_idp, iss=enterprise.idp.issuer)

    assert_error(enterprise.exchange(forged), 400, "invalid_grant")


def test_a_distrusted_issuer_is_invalid_grant(enterprise: Enterprise) -> None:
    enterprise.token()

    distrust(enterprise.service, enterprise.idp)

    assert_error(enterprise.exchange(enterprise.assertion()), 400, "invalid_grant")


def test_a_replayed_assertion_is_invalid_grant_and_audited(
    enterprise: Enterprise, audit_log: AuditLog
) -> None:
    assertion = enterprise.assertion()
    enterprise.token(assertion)
    assert audit_log.events("assertion_replayed") == []

    replayed = enterprise.exchange(assertion)

    assert_error(replayed, 400, "invalid_grant")
    event = audit_log.one("assertion_replayed")
    assert event["issuer"] == enterprise.idp.issuer
    assert event["client_id"] == enterprise.client["client_id"]
    assert assertion.split(".")[2] not in json.dumps(event)


def test_racing_copies_of_one_assertion_get_one_token(
    enterprise: Enterprise, audit_log: AuditLog
) -> None:
    assertion = enterprise.assertion()
    client = enterprise.client
    data = {"grant_type": JWT_BEARER, "assertion": assertion}

    def present(_: int) -> requests.Response:
        return requests.post(
            enterprise.service.url + "/token",
            data=data,
            auth=(client["client_id"], client["client_secret"]),
            timeout=30,
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(present, range(8)))

    assert sorted(a.status_code for a in answers) == [200] + [400] * 7
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json()["error"] == "invalid_grant"
    assert len(audit_log.events("assertion_replayed")) == 7


def test_a_jti_is_one_issuers_own(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    # Two issuers may pick the same jti: neither is a replay of the other.
    trust(enterprise.service, other_idp)
    link_identity(enterprise.engine, enterprise.person["id"], other_idp.issuer, "o-1")

    enterprise.token(enterprise.assertion(jti="shared"))
    enterprise.token(enterprise.assertion(other_idp, sub="o-1", jti="shared"))


def test_only_a_replay_is_audited_as_one(
    enterprise: Enterprise, audit_log: AuditLog
) -> None:
    # First uses, good or refused for other reasons, are no replays.
    enterprise.token(enterprise.assertion(jti="j" * 200))
    refused = [
        enterprise.exchange(enterprise.assertion(sub="stranger")),
        enterprise.exchange(enterprise.assertion(aud="https://as.example.com")),
        enterprise.exchange(enterprise.assertion(exp=int(time.time()) - 120)),
    ]

    assert [r.status_code for r in refused] == [400, 400, 400]
    assert audit_log.events("assertion_replayed") == []


def test_a_long_jti_used_once_is_no_replay(
    enterprise: Enterprise, audit_log: AuditLog
) -> None:
    # Refusing a jti as too long to keep may be fair; recording the first use
    # of one as a replay is not (an operator would look for an attacker).
    response = enterprise.exchange(enterprise.assertion(jti="k" * 1000))

    assert response.status_code in (200, 400), response.text
    assert audit_log.events("assertion_replayed") == []


def test_a_new_assertion_reusing_a_jti_is_a_replay(
    enterprise: Enterprise, audit_log: AuditLog
) -> None:
    enterprise.token(enterprise.assertion(jti="once", scope="read"))

    replayed = enterprise.exchange(enterprise.assertion(jti="once", scope="write"))

    assert_error(replayed, 400, "invalid_grant")
    assert audit_log.one("assertion_replayed")["issuer"] == enterprise.idp.issuer


def test_a_replay_is_refused_after_redis_lost_its_memory(
    enterprise: Enterprise, redis_client: Any
) -> None:
    assertion = enterprise.assertion()
    enterprise.token(assertion)

    redis_client.flushdb()  # as a Redis restarted empty
    replayed = enterprise.exchange(assertion)

    assert_error(replayed, 400, "invalid_grant")


@pytest.fixture
def two_instances(
    base_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[list[str], list[Path]]]:
    """Two gunicorn instances of one issuer on the same Postgres and Redis."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []
    urls, logs = [], []
    try:
        for name, at in (("a", port), ("b", free_port())):
            log = tmp_path / f"{name}.log"
            processes.append(start_web(base_env, at, log, ISSUER=issuer, **LOOPBACK_ON))
            urls.append(f"http://127.0.0.1:{at}")
            logs.append(log)
        yield urls, logs
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def test_a_replay_at_another_instance_is_refused(
    two_instances: tuple[list[str], list[Path]],
    idp: EnterpriseIdp,
    service: LiveServer,
    engine: sqlalchemy.Engine,
) -> None:
    (first, second), (_, second_log) = two_instances
    issuer = first  # both instances' ISSUER
    trust(service, idp)
    person = add_person(engine, "ada@example.com")
    link_identity(engine, person["id"], idp.issuer, SUBJECT)
    at_first = requests.Session()
    registered = at_first.post(
        first + "/register",
        json={
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    assertion = idp.mint(
        aud=issuer,
        resource=issuer + "/mcp",
        client_id=client["client_id"],
        sub=SUBJECT,
    )
    data = {"grant_type": JWT_BEARER, "assertion": assertion}
    auth = (client["client_id"], client["client_secret"])

    used = requests.post(first + "/token", data=data, auth=auth, timeout=30)
    replayed = requests.post(second + "/token", data=data, auth=auth, timeout=30)

    assert used.status_code == 200, used.text
    assert claims_of(used.json()["access_token"])["sub"] == person["id"]
    assert_error(replayed, 400, "invalid_grant")
    logged = [
        json.loads(line)
        for line in second_log.read_text().splitlines()
        if line.startswith("{")
    ]
    [event] = [e for e in logged if e.get("event") == "assertion_replayed"]
    assert event["issuer"] == idp.issuer
    assert event["client_id"] == client["client_id"]


# --- the target -------------------------------------------------------------------


def test_an_unregistered_resource_is_invalid_target(enterprise: Enterprise) -> None:
    response = enterprise.exchange(
        enterprise.assertion(resource="https://unknown.example.com/mcp")
    )

    assert_error(response, 400, "invalid_target")


def test_a_request_resource_must_name_the_asserted_one(
    enterprise: Enterprise,
) -> None:
    register_resource(enterprise.service, TOOLS, scopes="read")
    mcp = enterprise.service.issuer + "/mcp"

    differing = enterprise.exchange(enterprise.assertion(), resource=TOOLS)
    unknown = enterprise.exchange(
        enterprise.assertion(), resource="https://unknown.example.com/mcp"
    )
    same = enterprise.exchange(enterprise.assertion(resource=TOOLS), resource=TOOLS)
    also_same = enterprise.exchange(enterprise.assertion(), resource=mcp)

    assert_error(differing, 400, "invalid_target")
    assert_error(unknown, 400, "invalid_target")
    assert same.status_code == 200, same.text
    assert claims_of(same.json()["access_token"])["aud"] == TOOLS
    assert also_same.status_code == 200, also_same.text
    assert claims_of(also_same.json()["access_token"])["aud"] == mcp


# --- the client -------------------------------------------------------------------


def test_a_public_client_needs_the_issuer_to_allow_it(
    enterprise: Enterprise,
) -> None:
    public = register_client(enterprise.browser, token_endpoint_auth_method="none")
    assert "client_secret" not in public

    refused = enterprise.exchange(
        enterprise.assertion(client_id=public["client_id"]), client=public
    )
    trust(enterprise.service, enterprise.idp, "--allow-public-clients")
    allowed = enterprise.exchange(
        enterprise.assertion(client_id=public["client_id"]), client=public
    )

    assert_error(refused, 400, "unauthorized_client")
    assert allowed.status_code == 200, allowed.text
    assert claims_of(allowed.json()["access_token"])["client_id"] == public["client_id"]
    assert "refresh_token" not in allowed.json()


def test_public_clients_are_allowed_per_issuer_and_until_trusted_again(
    enterprise: Enterprise, other_idp: EnterpriseIdp
) -> None:
    public = register_client(enterprise.browser, token_endpoint_auth_method="none")
    trust(enterprise.service, enterprise.idp, "--allow-public-clients")
    trust(enterprise.service, other_idp)
    link_identity(enterprise.engine, enterprise.person["id"], other_idp.issuer, "o-1")

    def present(idp: EnterpriseIdp, sub: str) -> requests.Response:
        return enterprise.exchange(
            enterprise.assertion(idp, client_id=public["client_id"], sub=sub),
            client=public,
        )

    assert present(enterprise.idp, SUBJECT).status_code == 200
    # Another issuer's assertions: that issuer did not allow public clients.
    assert_error(present(other_idp, "o-1"), 400, "unauthorized_client")
    # Trusted again without the option: the allowance is gone.
    trust(enterprise.service, enterprise.idp)
    assert_error(present(enterprise.idp, SUBJECT), 400, "unauthorized_client")


def test_a_private_key_jwt_client_presents_an_assertion_with_its_own(
    enterprise: Enterprise,
) -> None:
    key = new_key()
    client = register_client(
        enterprise.browser,
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    assert "client_secret" not in client
    now = int(time.time())
    client_assertion = jwt.encode(
        {"alg": "RS256", "kid": key.kid},
        {
            "iss": client["client_id"],
            "sub": client["client_id"],
            "aud": enterprise.service.issuer + "/token",
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
        },
        key,
    )
    data = {
        "grant_type": JWT_BEARER,
        "assertion": enterprise.assertion(client_id=client["client_id"]),
        "client_assertion_type": (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ),
        "client_assertion": client_assertion,
    }

    response = enterprise.browser.post("/token", data=data)
    without_its_assertion = enterprise.exchange(
        enterprise.assertion(client_id=client["client_id"]), client=client
    )

    assert response.status_code == 200, response.text
    assert (
        claims_of(response.json()["access_token"])["client_id"] == (client["client_id"])
    )
    assert_error(without_its_assertion, 401, "invalid_client")


def test_a_metadata_document_client_is_public_for_the_grant(
    enterprise: Enterprise, documents: DocumentServer
) -> None:
    url = documents.document("/agent.json", token_endpoint_auth_method="none")
    client = {
        "client_id": url,
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
    }
    # /token uses a document /authorize looked up (docs/reference.md).
    _, challenge = pkce_pair()
    looked_up = enterprise.browser.get(
        authorize_path(authorize_params(client, challenge))
    )
    assert looked_up.status_code == 302, looked_up.text
    assert documents.requests["/agent.json"] == 1

    def present() -> requests.Response:
        return enterprise.exchange(enterprise.assertion(client_id=url), client=client)

    refused = present()
    trust(enterprise.service, enterprise.idp, "--allow-public-clients")
    allowed = present()

    assert_error(refused, 400, "unauthorized_client")
    assert allowed.status_code == 200, allowed.text
    assert claims_of(allowed.json()["access_token"])["client_id"] == url


#: How a confidential (client_secret_basic) client may fail to authenticate.
BAD_AUTHENTICATION: dict[str, dict[str, str]] = {
    "a wrong secret": {"client_secret": "not-the-secret"},
    "an unknown client": {"client_id": "no-such-client"},
    # The assertion names the client: it must not stand in for the secret.
    "no secret at all": {"token_endpoint_auth_method": "none"},
    "another method than registered": {
        "token_endpoint_auth_method": "client_secret_post"
    },
}


@pytest.mark.parametrize("wrong", BAD_AUTHENTICATION)
def test_bad_client_authentication_is_invalid_client(
    enterprise: Enterprise, wrong: str
) -> None:
    client = {**enterprise.client, **BAD_AUTHENTICATION[wrong]}

    response = enterprise.exchange(enterprise.assertion(), client=client)

    assert_error(response, 401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_a_service_client_cannot_use_the_grant(enterprise: Enterprise) -> None:
    service = enterprise.service
    created = cli(
        service,
        "clients",
        "create-service",
        "robot",
        "--resource",
        service.issuer + "/mcp",
        "--scopes",
        "read write",
    )
    assert created.exit_code == 0, (created.output, created.exception)
    robot = json.loads(created.stdout)
    robot["token_endpoint_auth_method"] = "client_secret_basic"

    response = enterprise.exchange(
        enterprise.assertion(client_id=robot["client_id"]), client=robot
    )

    assert_error(response, 400, "unauthorized_client")


# --- the person -------------------------------------------------------------------


def test_a_disabled_person_gets_nothing(enterprise: Enterprise) -> None:
    earlier = enterprise.token()["access_token"]
    assert whoami(enterprise.browser, earlier).status_code == 200
    disabled = cli(enterprise.service, "users", "disable", enterprise.person["email"])
    assert disabled.exit_code == 0, disabled.output

    response = enterprise.exchange(enterprise.assertion())

    assert_error(response, 400, "invalid_grant")
    # And the token the grant gave before is cut off with the account.
    assert whoami(enterprise.browser, earlier).status_code == 401


def test_an_unknown_subject_without_an_email_is_invalid_grant(
    enterprise: Enterprise,
) -> None:
    response = enterprise.exchange(enterprise.assertion(sub="stranger"))

    assert_error(response, 400, "invalid_grant")


#: ``idps trust`` options letting verified emails of example.com name accounts.
EXAMPLE_COM = ("--email-domain", "example.com")


def by_email(
    enterprise: Enterprise,
    email: str = "bo@example.com",
    verified: Any = True,
    idp: EnterpriseIdp | None = None,
    **claims: Any,
) -> str:
    """An assertion for a subject nobody has, naming a person by email."""
    claims.setdefault("sub", "employee-2")
    return enterprise.assertion(idp, email=email, email_verified=verified, **claims)


@pytest.mark.parametrize("email", ["bo@example.com", "Bo@Example.COM"])
def test_a_verified_email_of_a_listed_domain_names_an_existing_account(
    enterprise: Enterprise,
    engine: sqlalchemy.Engine,
    audit_log: AuditLog,
    email: str,
) -> None:
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    bo = add_person(engine, "bo@example.com")
    before = identities_of(engine)

    answer = enterprise.token(by_email(enterprise, email))
    again = enterprise.token(by_email(enterprise, email))
    without_email = enterprise.exchange(enterprise.assertion(sub="employee-2"))

    for token in (answer, again):
        assert claims_of(token["access_token"])["sub"] == bo["id"]
    assert whoami_output(enterprise.browser, again["access_token"])["email"] == (
        "bo@example.com"
    )
    # Looked up afresh each time, never kept as an identity.
    assert identities_of(engine) == before
    assert audit_log.events("identity_linked") == []
    assert_error(without_email, 400, "invalid_grant")


@pytest.mark.parametrize(
    "account, domains",
    [
        ("bo@example.com", []),
        ("bo@example.com", ["other.example"]),
        ("bo@evilexample.com", ["example.com"]),
        ("bo@mail.example.com", ["example.com"]),
        ("bo@example.com.evil.test", ["example.com"]),
    ],
    ids=[
        "no domain listed",
        "another domain listed",
        "a longer name ending alike",
        "a subdomain",
        "the domain as a prefix",
    ],
)
def test_a_verified_email_names_no_one_unless_its_domain_is_listed(
    enterprise: Enterprise, engine: sqlalchemy.Engine, account: str, domains: list
) -> None:
    trust(
        enterprise.service,
        enterprise.idp,
        *[option for domain in domains for option in ("--email-domain", domain)],
    )
    add_person(engine, account)

    response = enterprise.exchange(by_email(enterprise, account))

    assert_error(response, 400, "invalid_grant")


@pytest.mark.parametrize("verified", [False, OMIT, "false", 1])
def test_an_unverified_email_names_no_one(
    enterprise: Enterprise, engine: sqlalchemy.Engine, verified: Any
) -> None:
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    add_person(engine, "bo@example.com")
    before = identities_of(engine)

    response = enterprise.exchange(by_email(enterprise, verified=verified))

    assert_error(response, 400, "invalid_grant")
    assert identities_of(engine) == before
    # The same email verified is enough: only the verification was missing.
    enterprise.token(by_email(enterprise))


def test_a_disabled_account_is_not_reached_by_its_email(
    enterprise: Enterprise, engine: sqlalchemy.Engine
) -> None:
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    add_person(engine, "bo@example.com")
    disabled = cli(enterprise.service, "users", "disable", "bo@example.com")
    assert disabled.exit_code == 0, disabled.output

    response = enterprise.exchange(by_email(enterprise))

    assert_error(response, 400, "invalid_grant")


def test_a_nul_in_a_verified_email_reaches_no_one(
    enterprise: Enterprise, engine: sqlalchemy.Engine
) -> None:
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    add_person(engine, "bo@example.com")

    response = enterprise.exchange(by_email(enterprise, "bo@example.com\x00"))

    assert_error(response, 400, "invalid_grant")


def test_no_account_is_created_for_an_unknown_email(
    enterprise: Enterprise, engine: sqlalchemy.Engine
) -> None:
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    before = emails_of(engine), identities_of(engine)

    response = enterprise.exchange(
        by_email(enterprise, "newcomer@example.com", sub="newcomer")
    )

    assert_error(response, 400, "invalid_grant")
    assert (emails_of(engine), identities_of(engine)) == before


def test_an_entra_email_never_names_anyone(
    enterprise: Enterprise, engine: sqlalchemy.Engine, service: LiveServer
) -> None:
    # Entra's email claim is not verified by anyone: an issuer of Entra's
    # (its keys served here) never reaches an account by it, listed or not.
    tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
    entra = EnterpriseIdp(
        audience=service.issuer,
        resource=service.issuer + "/mcp",
        issuer=f"https://login.microsoftonline.com/{tenant}/v2.0",
    )
    try:
        trust(service, entra, *EXAMPLE_COM)
        bo = add_person(engine, "bo@example.com")

        response = enterprise.exchange(by_email(enterprise, idp=entra, sub="bo-oid"))
        assert_error(response, 400, "invalid_grant")
        # The same issuer's identity, once someone's, is believed.
        link_identity(engine, bo["id"], entra.issuer, "bo-oid")
        answer = enterprise.token(enterprise.assertion(entra, sub="bo-oid"))
        assert claims_of(answer["access_token"])["sub"] == bo["id"]
    finally:
        entra.stop()


def test_an_assertion_with_a_tenant_claim_names_no_one_by_email(
    enterprise: Enterprise, engine: sqlalchemy.Engine
) -> None:
    # Entra behind another host still says ``tid``: its email is not believed.
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    add_person(engine, "bo@example.com")
    tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"

    response = enterprise.exchange(by_email(enterprise, tid=tenant))

    assert_error(response, 400, "invalid_grant")
    enterprise.token(by_email(enterprise))  # the same without a tenant


def test_an_issuer_people_sign_in_with_never_names_anyone_by_email(
    make_server: Callable[..., LiveServer],
    idp: EnterpriseIdp,
    engine: sqlalchemy.Engine,
) -> None:
    # The IdP is also a sign-in provider here: people link their identity
    # by signing in, never through an assertion's email.
    live = make_server(
        **LOOPBACK_ON,
        SIGN_IN_PROVIDERS="corp",
        CORP_ISSUER=idp.issuer,
        CORP_CLIENT_ID="mcp-auth",
        CORP_CLIENT_SECRET="corp-secret",
    )
    trust(live, idp, *EXAMPLE_COM)
    browser = live.browser()
    client = register_client(browser, token_endpoint_auth_method="client_secret_basic")
    bo = add_person(engine, "bo@example.com")
    good = {
        "aud": live.issuer,
        "resource": live.issuer + "/mcp",
        "client_id": client["client_id"],
    }

    def present(**claims: Any) -> requests.Response:
        data = {"grant_type": JWT_BEARER, "assertion": idp.mint(**good, **claims)}
        return token_request(browser, client, data)

    refused = present(sub="bo-1", email="bo@example.com", email_verified=True)
    link_identity(engine, bo["id"], idp.issuer, "bo-1")
    by_identity = present(sub="bo-1")

    assert_error(refused, 400, "invalid_grant")
    assert by_identity.status_code == 200, by_identity.text
    assert claims_of(by_identity.json()["access_token"])["sub"] == bo["id"]


def test_an_identity_wins_over_an_email(
    enterprise: Enterprise, engine: sqlalchemy.Engine
) -> None:
    # SUBJECT is Ada's; an email naming Bo's account changes nothing.
    trust(enterprise.service, enterprise.idp, *EXAMPLE_COM)
    add_person(engine, "bo@example.com")

    answer = enterprise.token(
        enterprise.assertion(email="bo@example.com", email_verified=True)
    )

    assert claims_of(answer["access_token"])["sub"] == enterprise.person["id"]


# --- keys -------------------------------------------------------------------------


def test_a_rotated_key_is_picked_up_from_the_jwks(
    enterprise: Enterprise, service: LiveServer
) -> None:
    rotating = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    try:
        trust(service, rotating)
        link_identity(
            enterprise.engine, enterprise.person["id"], rotating.issuer, "r-1"
        )
        enterprise.token(enterprise.assertion(rotating, sub="r-1"))
        old_key = rotating.key

        rotating.rotate()
        answer = enterprise.token(enterprise.assertion(rotating, sub="r-1"))
        retired = enterprise.exchange(
            enterprise.assertion(rotating, sub="r-1", key=old_key)
        )

        assert claims_of(answer["access_token"])["sub"] == enterprise.person["id"]
        assert rotating.requests["/jwks"] >= 2
        assert_error(retired, 400, "invalid_grant")
    finally:
        rotating.stop()


def test_the_key_set_is_fetched_once_and_unknown_kids_cannot_force_fetches(
    enterprise: Enterprise, service: LiveServer
) -> None:
    idp = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    try:
        trust(service, idp)
        link_identity(enterprise.engine, enterprise.person["id"], idp.issuer, "k-1")
        for _ in range(3):
            enterprise.token(enterprise.assertion(idp, sub="k-1"))
        assert idp.requests["/jwks"] == 1  # cached

        # A flood of made-up kids: at most one refetch (once per 30 s a URL).
        for number in range(5):
            made_up = enterprise.assertion(idp, sub="k-1", header={"kid": f"x{number}"})
            assert_error(enterprise.exchange(made_up), 400, "invalid_grant")

        assert idp.requests["/jwks"] <= 2
        enterprise.token(enterprise.assertion(idp, sub="k-1"))
    finally:
        idp.stop()


@pytest.mark.parametrize(
    "bits, exponent", [(1024, 65537), (2048, 3)], ids=["1024 bits", "exponent 3"]
)
def test_an_issuer_signing_with_a_weak_rsa_key_is_not_believed(
    enterprise: Enterprise, service: LiveServer, bits: int, exponent: int
) -> None:
    weak = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    try:
        weak.use(new_key(bits=bits, exponent=exponent))
        trust(service, weak)
        link_identity(enterprise.engine, enterprise.person["id"], weak.issuer, "w-1")

        refused = enterprise.exchange(enterprise.assertion(weak, sub="w-1"))

        assert_error(refused, 400, "invalid_grant")
        enterprise.token()  # the sound IdP's, in the same world
    finally:
        weak.stop()


def test_first_uses_at_once_fetch_the_key_set_once(
    enterprise: Enterprise, service: LiveServer
) -> None:
    slow = EnterpriseIdp(audience=service.issuer, resource=service.issuer + "/mcp")
    slow.delay = 0.5
    try:
        trust(service, slow)
        link_identity(enterprise.engine, enterprise.person["id"], slow.issuer, "s-1")
        client = enterprise.client
        assertions = [enterprise.assertion(slow, sub="s-1") for _ in range(6)]

        def present(assertion: str) -> requests.Response:
            return requests.post(
                service.url + "/token",
                data={"grant_type": JWT_BEARER, "assertion": assertion},
                auth=(client["client_id"], client["client_secret"]),
                timeout=30,
            )

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(present, assertions))

        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert slow.requests["/jwks"] == 1
    finally:
        slow.stop()


def test_a_token_from_the_grant_is_a_bearer_at_mcp_only_for_its_resource(
    enterprise: Enterprise,
) -> None:
    register_resource(enterprise.service, TOOLS, scopes="read")

    answer = enterprise.token(enterprise.assertion(resource=TOOLS))

    # Its audience is the other resource: the service's own /mcp refuses it.
    assert whoami(enterprise.browser, answer["access_token"]).status_code == 401
