"""What README.md and docs/ show, asked of a running service (tests/test_docs.py).

Each ```json block of the documents is preceded by an HTML comment that says
what it is, so that no example can be added unchecked:

- ``<!-- live: POST /register device-only -->``: the answer the request
  :data:`EXAMPLES` names so gets. The example and the answer must have the
  same keys at every level and the same values, except those the example
  marks as varying (ids, secrets, times), which need only be of the same JSON
  type. In a shown value ``<ISSUER>`` and ``https://auth.example.com`` stand
  for the issuer.
- ``<!-- not an answer: why -->``: a request body, a log line, an assertion
  some other party makes; not compared.

Tables whose first column names fields (``| field |``, ``| claim |``) are
preceded by ``<!-- live fields: NAME -->`` (the names in the first column are
exactly the keys of :data:`FIELDS`'s answer, and a JSON value shown for one
field is its value) or ``<!-- not an answer: why -->``. Error tables
(``| status | `error` | when |``, ``| `error` | when |``) are preceded by
``<!-- live errors: NAME -->``: :data:`ERRORS` provokes the errors that are
cheap to provoke, and each answer's status and ``error`` must be a row.

Everything is asked of one service, run as a default deploy is (no
``JWT_SIGNING_KEY`` and no ``JWT_SECRET``: the RS256 keys it makes itself),
with ``RESOURCE_SERVERS`` set so that ``/introspect`` exists, and
``CIMD_ALLOW_LOOPBACK`` so that a stand-in identity provider on loopback can
be trusted. :func:`ask` asks every question once and keeps the answers.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import anyio
import requests
import sqlalchemy
from conftest import LiveServer, make_user
from enterprise_idp import EnterpriseIdp
from helpers import (
    LOOPBACK_REDIRECT,
    MCP_HEADERS,
    WHOAMI,
    attribute,
    bearer,
    claims_of,
    client_post,
    device_lookup,
    obtain_tokens,
    register_client,
    select_one,
    token_request,
)

#: The resource server allowed at /introspect.
INTROSPECTOR = ("docs-reader", "docs-reader-secret-0123456789")
#: What the service is run with, beyond the tests' base settings.
SETTINGS = {
    "JWT_SECRET": "",
    "RESOURCE_SERVERS": ":".join(INTROSPECTOR),
    "CIMD_ALLOW_LOOPBACK": "on",
}
#: How the documents write the issuer in an example.
ISSUER_PLACEHOLDERS = ("<ISSUER>", "https://auth.example.com")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Members of a registration answer the service issues rather than echoes.
ISSUED = frozenset(
    {"client_id", "client_secret", "client_id_issued_at", "client_secret_expires_at"}
)
#: What the subject of the stand-in identity provider's assertions is.
IDP_SUBJECT = "00u1abcd"


class Service:
    """The running service, the person who uses it, and what they did: each
    flow is run once, when an example first needs it."""

    def __init__(self, server: LiveServer, engine: sqlalchemy.Engine) -> None:
        self.server = server
        self.engine = engine
        self.browser = server.browser()
        self.issuer = server.issuer
        self.idp: EnterpriseIdp | None = None

    def stop(self) -> None:
        if self.idp is not None:
            self.idp.stop()

    # --- plain requests ---------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.post(path, **kwargs)

    def answer(self, response: requests.Response, status: int = 200) -> Any:
        assert response.status_code == status, (response.status_code, response.text)
        return response.json()

    def cli(self, *args: str) -> str:
        result = self.server.app.test_cli_runner().invoke(args=list(args))
        assert result.exit_code == 0, (result.output, result.exception)
        return str(result.stdout)

    # --- what a person and their clients did --------------------------------

    @cached_property
    def person(self) -> dict[str, str]:
        return make_user(self.server, "alice@example.com")

    @cached_property
    def code_flow(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A client that registered the refresh grant, approved; its tokens."""
        return obtain_tokens(self.browser, self.person)

    @property
    def access_token(self) -> str:
        return str(self.code_flow[1]["access_token"])

    @cached_property
    def device_client(self) -> dict[str, Any]:
        return self.answer(self.post("/register", json=DEVICE_ONLY), 201)

    @cached_property
    def device_codes(self) -> dict[str, Any]:
        client = self.device_client
        return self.answer(
            client_post(self.browser, "/device_authorization", client, {})
        )

    def device_tokens(self) -> Any:
        """The person approves the device's code; the device's poll."""
        assert self.code_flow  # the browser is signed in
        codes = self.device_codes
        page = device_lookup(self.browser, codes["user_code"])
        assert page.status_code == 200, page.text[:500]
        form = select_one(page, "#device-consent-form").select("input[type=hidden]")
        fields = {attribute(f, "name"): attribute(f, "value", "") for f in form}
        decided = self.post("/device", data={**fields, "decision": "approve"})
        assert decided.status_code == 200, decided.text[:500]
        return self.answer(self.poll(codes["device_code"]))

    def poll(self, device_code: str, client: dict[str, Any] | None = None) -> Any:
        data = {"grant_type": DEVICE_GRANT, "device_code": device_code}
        return token_request(self.browser, client or self.device_client, data)

    @cached_property
    def api_key(self) -> dict[str, Any]:
        body = {"name": "laptop", "scopes": ["read"], "expires_in_days": 30}
        response = self.post("/api-keys", json=body, headers=bearer(self.access_token))
        return self.answer(response, 201)

    @cached_property
    def api_key_exchange(self) -> dict[str, Any]:
        return self.answer(
            self.post("/auth/token", json={"apiKey": self.api_key["key"]})
        )

    @cached_property
    def service_client(self) -> dict[str, Any]:
        """``clients create-service`` as docs/machines.md runs it."""
        resource = self.issuer + "/mcp"
        printed = self.cli(
            "clients",
            "create-service",
            "nightly CI",
            "--resource",
            resource,
            "--scopes",
            "read",
        )
        return dict(json.loads(printed))

    def client_credentials(self, **data: str) -> requests.Response:
        client = self.service_client
        form = {"grant_type": "client_credentials", **data}
        auth = (client["client_id"], client["client_secret"])
        return self.post("/token", data=form, auth=auth)

    @cached_property
    def client_credentials_token(self) -> dict[str, Any]:
        return self.answer(self.client_credentials(scope="read"))

    @cached_property
    def enterprise(self) -> tuple[EnterpriseIdp, dict[str, Any]]:
        """A trusted identity provider, the person's identity there, and a
        client that trades its assertions."""
        self.idp = EnterpriseIdp(
            audience=self.issuer, resource=self.issuer + "/mcp", issuer=None
        )
        self.cli("idps", "trust", self.idp.issuer, "--jwks-uri", self.idp.jwks_uri)
        with self.engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO identities (id, user_id, issuer, subject)"
                    " VALUES (:id, :user_id, :issuer, :subject)"
                ),
                {
                    "id": uuid.uuid4(),
                    "user_id": self.person["id"],
                    "issuer": self.idp.issuer,
                    "subject": IDP_SUBJECT,
                },
            )
        client = register_client(self.browser, client_name="Agent")
        return self.idp, client

    def id_jag(self, assertion: str | None = None, **data: str) -> requests.Response:
        idp, client = self.enterprise
        if assertion is None:
            assertion = idp.mint(client_id=client["client_id"], sub=IDP_SUBJECT)
        form = {"grant_type": JWT_BEARER, "assertion": assertion, **data}
        return token_request(self.browser, client, form)

    def registration(self, body: Any) -> requests.Response:
        return self.post("/register", json=body)


#: docs/reference.md's device-only registration.
DEVICE_ONLY = {
    "grant_types": [DEVICE_GRANT, "refresh_token"],
    "token_endpoint_auth_method": "none",
}
#: docs/machines.md's registration with private_key_jwt.
KEYED_REGISTRATION = {
    "client_name": "Build agent",
    "redirect_uris": ["http://127.0.0.1:33418/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "token_endpoint_auth_method": "private_key_jwt",
    "jwks_uri": "https://agent.example.com/jwks.json",
}


def _whoami(service: Service) -> Any:
    response = service.post(
        "/mcp", json=WHOAMI, headers={**MCP_HEADERS, **bearer(service.access_token)}
    )
    return json.loads(service.answer(response)["result"]["content"][0]["text"])


def _header(token: str) -> Any:
    """A JWT's header, unverified."""
    return claims_of("." + token.split(".", 1)[0])


@dataclass(frozen=True)
class Example:
    """How the answer an example shows is produced, and which of its members
    vary from one answer to the next (compared by JSON type only)."""

    produce: Callable[[Service], Any]
    varies: frozenset[str] = field(default_factory=frozenset)


def example(produce: Callable[[Service], Any], *varies: str) -> Example:
    return Example(produce, frozenset(varies))


#: What each ``<!-- live: NAME -->`` example shows, in the order they are asked.
EXAMPLES: dict[str, Example] = {
    "GET /.well-known/oauth-protected-resource": example(
        lambda s: s.answer(s.get("/.well-known/oauth-protected-resource"))
    ),
    "GET /.well-known/jwks.json": example(
        lambda s: s.answer(s.get("/.well-known/jwks.json")), "n", "kid"
    ),
    "POST /register": example(
        lambda s: s.answer(
            s.registration({"redirect_uris": ["http://127.0.0.1:33418/callback"]}), 201
        ),
        "client_id",
        "client_secret",
        "client_id_issued_at",
    ),
    "POST /register device-only": example(
        lambda s: s.device_client, "client_id", "client_id_issued_at"
    ),
    "POST /register private_key_jwt": example(
        lambda s: s.answer(s.registration(KEYED_REGISTRATION), 201),
        "client_id",
        "client_id_issued_at",
    ),
    "POST /token authorization_code": example(
        lambda s: s.code_flow[1], "access_token", "refresh_token"
    ),
    "access token header": example(lambda s: _header(s.access_token), "kid"),
    "access token claims": example(
        lambda s: claims_of(s.access_token),
        "sub",
        "iat",
        "exp",
        "jti",
        "client_id",
        "consent_id",
    ),
    "POST /mcp whoami": example(_whoami, "sub", "client_id"),
    "POST /device_authorization": example(
        lambda s: s.device_codes,
        "device_code",
        "user_code",
        "verification_uri_complete",
    ),
    "POST /introspect": example(
        lambda s: s.answer(
            s.post("/introspect", data={"token": s.access_token}, auth=INTROSPECTOR)
        ),
        "client_id",
        "sub",
        "exp",
        "iat",
    ),
    "POST /introspect refresh token": example(
        lambda s: s.answer(
            s.post(
                "/introspect",
                data={"token": s.code_flow[1]["refresh_token"]},
                auth=INTROSPECTOR,
            )
        )
    ),
    "POST /api-keys": example(
        lambda s: s.api_key, "id", "key", "prefix", "created_at", "expires_at"
    ),
    # Before the key is used: its last_used_at is still null.
    "GET /api-keys": example(
        lambda s: s.answer(s.get("/api-keys", headers=bearer(s.access_token))),
        "id",
        "prefix",
        "created_at",
        "expires_at",
    ),
    "POST /auth/token": example(lambda s: s.api_key_exchange, "token"),
    "POST /auth/token unknown key": example(
        lambda s: s.answer(s.post("/auth/token", json={"apiKey": "lsk_x"}), 401)
    ),
    "flask clients create-service": example(
        lambda s: s.service_client, "client_id", "sub", "client_secret"
    ),
    "POST /token client_credentials": example(
        lambda s: s.client_credentials_token, "access_token"
    ),
    "POST /token jwt-bearer": example(
        lambda s: s.answer(s.id_jag(scope="read")), "access_token"
    ),
    "GET /healthz": example(lambda s: s.answer(s.get("/healthz"))),
    "GET /readyz": example(lambda s: s.answer(s.get("/readyz"))),
}


def _metadata(service: Service) -> dict[str, Any]:
    return dict(service.answer(service.get("/.well-known/oauth-authorization-server")))


def _openid_only(service: Service) -> dict[str, Any]:
    metadata = _metadata(service)
    openid = service.answer(service.get("/.well-known/openid-configuration"))
    return {key: value for key, value in openid.items() if key not in metadata}


def _claims(service: Service) -> dict[str, Any]:
    """Every claim of the service's tokens: a person's, an API key's, a
    service client's, one traded for an identity assertion."""
    claims: dict[str, Any] = {}
    tokens = [
        service.access_token,
        service.api_key_exchange["token"],
        service.client_credentials_token["access_token"],
        service.answer(service.id_jag())["access_token"],
    ]
    for token in tokens:
        claims.update(claims_of(token))
    return claims


def _registered_fields(service: Service) -> dict[str, Any]:
    """Every member a registration answer echoes: of a client with a scope of
    its own, one with keys inline, one with a key set URL, a device's."""
    keyed = {**KEYED_REGISTRATION, "jwks_uri": None, "jwks": {"keys": [_PUBLIC_JWK]}}
    answers = [
        service.answer(service.registration(body), 201)
        for body in (
            {"redirect_uris": [LOOPBACK_REDIRECT], "scope": "read write"},
            {k: v for k, v in keyed.items() if v is not None},
            KEYED_REGISTRATION,
            DEVICE_ONLY,
        )
    ]
    return {k: v for answer in answers for k, v in answer.items() if k not in ISSUED}


#: A public EC P-256 key (RFC 7515 A.3's), for a client registered with ``jwks``.
_PUBLIC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}

#: What each ``<!-- live fields: NAME -->`` table lists.
FIELDS: dict[str, Callable[[Service], dict[str, Any]]] = {
    "GET /.well-known/oauth-authorization-server": _metadata,
    "GET /.well-known/openid-configuration beyond it": _openid_only,
    "POST /register": _registered_fields,
    "access token claims": _claims,
}


@dataclass(frozen=True)
class Provoked:
    """An error provoked on purpose: the ``error`` meant, and what came."""

    meant: str
    status: int
    error: str | None


def provoked(meant: str, response: requests.Response) -> Provoked:
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return Provoked(meant, response.status_code, error)


def _everywhere(s: Service) -> list[Provoked]:
    return [
        provoked("not_found", s.get("/no-such-route")),
        provoked("method_not_allowed", s.browser.put("/token")),
        provoked(
            "request_entity_too_large",
            s.post(
                "/register",
                data=b"x" * (65 * 1024),
                headers={"Content-Type": "application/json"},
            ),
        ),
    ]


def _register(s: Service) -> list[Provoked]:
    return [
        provoked("invalid_redirect_uri", s.registration({"redirect_uris": []})),
        provoked("invalid_client_metadata", s.registration(["not", "an", "object"])),
    ]


def _token(s: Service) -> list[Provoked]:
    client = s.code_flow[0]
    code = {
        "grant_type": "authorization_code",
        "code": "no-such-code",
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": "v" * 43,
    }
    return [
        provoked("invalid_request", token_request(s.browser, client, {})),
        provoked(
            "unsupported_grant_type",
            token_request(s.browser, client, {"grant_type": "password"}),
        ),
        provoked(
            "unauthorized_client",
            token_request(s.browser, client, {"grant_type": "client_credentials"}),
        ),
        provoked("invalid_grant", token_request(s.browser, client, code)),
        provoked("invalid_scope", s.client_credentials(scope="write")),
        provoked(
            "invalid_target", s.client_credentials(resource="https://nowhere.example/x")
        ),
        provoked(
            "invalid_client",
            s.post("/token", data=code, auth=(client["client_id"], "wrong")),
        ),
    ]


def _device_authorization(s: Service) -> list[Provoked]:
    device, other = s.device_client, s.code_flow[0]
    return [
        provoked(
            "invalid_request",
            s.post(
                "/device_authorization?scope=read",
                data={"client_id": device["client_id"]},
            ),
        ),
        provoked(
            "unauthorized_client",
            client_post(s.browser, "/device_authorization", other, {}),
        ),
        provoked(
            "invalid_scope",
            client_post(s.browser, "/device_authorization", device, {"scope": "x"}),
        ),
        provoked(
            "invalid_target",
            client_post(
                s.browser,
                "/device_authorization",
                device,
                {"resource": "https://nowhere.example/x"},
            ),
        ),
        provoked(
            "invalid_client",
            s.post("/device_authorization", data={"client_id": "lessie-nobody"}),
        ),
    ]


def _polling(s: Service) -> list[Provoked]:
    no_code = {"grant_type": DEVICE_GRANT}
    return [
        # Polled at once again: too early.
        provoked("authorization_pending", s.poll(s.device_codes["device_code"])),
        provoked("slow_down", s.poll(s.device_codes["device_code"])),
        provoked("invalid_grant", s.poll("no-such-device-code")),
        provoked("invalid_request", token_request(s.browser, s.device_client, no_code)),
        provoked("unauthorized_client", s.poll("x", client=s.code_flow[0])),
    ]


def _api_keys(s: Service) -> list[Provoked]:
    token = bearer(s.access_token)
    read_only = bearer(s.api_key_exchange["token"])
    body = {"name": "writer", "scopes": ["read", "write"]}
    writer = s.answer(s.post("/api-keys", json=body, headers=token), 201)
    exchanged = s.answer(s.post("/auth/token", json={"apiKey": writer["key"]}))
    from_key = bearer(exchanged["token"])
    return [
        provoked("unauthorized", s.get("/api-keys")),
        provoked("invalid_token", s.get("/api-keys", headers=bearer("not-a-token"))),
        provoked("invalid_request", s.post("/api-keys", json=[1], headers=token)),
        provoked(
            "insufficient_scope", s.post("/api-keys", json=body, headers=read_only)
        ),
        provoked("forbidden", s.post("/api-keys", json=body, headers=from_key)),
        provoked("not_found", s.browser.delete("/api-keys/no-such-key", headers=token)),
    ]


def _client_credentials(s: Service) -> list[Provoked]:
    other = s.code_flow[0]
    return [
        provoked(
            "unauthorized_client",
            token_request(s.browser, other, {"grant_type": "client_credentials"}),
        ),
        provoked("invalid_scope", s.client_credentials(scope="write")),
        provoked(
            "invalid_target", s.client_credentials(resource="https://nowhere.example/x")
        ),
        provoked(
            "invalid_client",
            s.post(
                "/token",
                data={"grant_type": "client_credentials"},
                auth=(s.service_client["client_id"], "wrong"),
            ),
        ),
    ]


def _jwt_bearer(s: Service) -> list[Provoked]:
    idp, client = s.enterprise
    read_only = idp.mint(client_id=client["client_id"], sub=IDP_SUBJECT, scope="read")
    service_client = s.service_client
    return [
        provoked(
            "invalid_request",
            token_request(s.browser, client, {"grant_type": JWT_BEARER}),
        ),
        provoked(
            "unauthorized_client",
            s.post(
                "/token",
                data={"grant_type": JWT_BEARER, "assertion": read_only},
                auth=(service_client["client_id"], service_client["client_secret"]),
            ),
        ),
        provoked("invalid_grant", s.id_jag("not.a.jwt")),
        provoked("invalid_scope", s.id_jag(read_only, scope="write")),
        provoked("invalid_target", s.id_jag(resource="https://nowhere.example/x")),
        provoked(
            "invalid_client",
            s.post(
                "/token",
                data={"grant_type": JWT_BEARER, "assertion": read_only},
                auth=(client["client_id"], "wrong"),
            ),
        ),
    ]


#: What each ``<!-- live errors: NAME -->`` table is checked with.
ERRORS: dict[str, Callable[[Service], list[Provoked]]] = {
    "any route": _everywhere,
    "POST /register": _register,
    "POST /token": _token,
    "POST /device_authorization": _device_authorization,
    "POST /token device_code": _polling,
    "/api-keys": _api_keys,
    "POST /token client_credentials": _client_credentials,
    "POST /token jwt-bearer": _jwt_bearer,
}


#: The guide whose Python verifiers are run, and what names each block.
VERIFIERS_GUIDE = (
    Path(__file__).resolve().parent.parent / "docs" / "resource-servers.md"
)
VERIFIERS = {"PyJWT": "PyJWKClient(", "FastMCP": "JWTVerifier("}


def verifier_snippets() -> dict[str, str]:
    """The guide's Python blocks that verify a token, by library."""
    blocks = re.findall(r"```python\n(.*?)```", VERIFIERS_GUIDE.read_text(), re.S)
    found = {
        name: [block for block in blocks if needle in block]
        for name, needle in VERIFIERS.items()
    }
    for name, matching in found.items():
        assert len(matching) == 1, f"docs/resource-servers.md: one {name} block"
    return {name: matching[0] for name, matching in found.items()}


def _verified(service: Service) -> dict[str, Any]:
    """What the guide's verifiers make of a person's token (its claims)."""
    token = service.access_token
    names = {"ISSUER": service.issuer, "RESOURCE": service.issuer + "/mcp"}
    snippets = verifier_snippets()
    pyjwt: dict[str, Any] = dict(names)
    exec(snippets["PyJWT"], pyjwt)
    fastmcp: dict[str, Any] = dict(names)
    exec(snippets["FastMCP"], fastmcp)
    accepted = anyio.run(fastmcp["auth"].verify_token, token)
    return {
        "PyJWT": pyjwt["verify"](token, "read"),
        "FastMCP": accepted.claims if accepted is not None else None,
    }


@dataclass
class Answers:
    """Everything asked, by the name the documents use."""

    issuer: str
    examples: dict[str, Any]
    fields: dict[str, dict[str, Any]]
    errors: dict[str, list[Provoked]]
    #: Keys of the device grant's answer, and of the code grant's.
    device_token: dict[str, Any]
    code_token: dict[str, Any]
    #: A person's token, and what docs/resource-servers.md's verifiers made of it.
    access_token: str
    verified: dict[str, Any]


def ask(server: LiveServer, engine: sqlalchemy.Engine) -> Answers:
    """Ask the service every question the documents need answered."""
    service = Service(server, engine)
    try:
        examples = {name: shown.produce(service) for name, shown in EXAMPLES.items()}
        fields = {name: produce(service) for name, produce in FIELDS.items()}
        errors = {name: provoke(service) for name, provoke in ERRORS.items()}
        return Answers(
            issuer=service.issuer,
            examples=examples,
            fields=fields,
            errors=errors,
            device_token=service.device_tokens(),
            code_token=service.code_flow[1],
            access_token=service.access_token,
            verified=_verified(service),
        )
    finally:
        service.stop()
