"""An attacker's look at machines and enterprises (docs/machines.md).

Service clients (client credentials), ``private_key_jwt`` at every client
endpoint and the ID-JAG jwt-bearer grant, driven over HTTP against real
servers as an attacker would: forged and replayed assertions, algorithm
and key confusion, claims of every odd shape, key sets served from a local
thread (``CIMD_ALLOW_LOOPBACK=on``), two instances on one Redis, a Redis
that forgets. A test here either shows a hole (it fails until the app is
fixed) or pins down a refusal that matters.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import LiveServer, make_user
from document_server import DocumentServer
from helpers import (
    Browser,
    bearer,
    claims_of,
    csrf_token,
    obtain_tokens,
    register_client,
    register_resource,
    select_one,
    whoami,
)
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "oauth-id-jag+jwt"
GATEWAY_SECRET = "gateway-secret-of-some-length"
GATEWAY = ("gateway", GATEWAY_SECRET)
_SIGNING = JWSRegistry(
    algorithms=["ES256", "RS256", "EdDSA", "PS256"], strict_check_header=False
)


# --- keys, tokens and requests --------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_key(kid: str = "k1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def public_set(*keys: Any) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def sign(key: Any, claims: dict[str, Any], **header: Any) -> str:
    alg = {"EC": "ES256", "RSA": "RS256", "OKP": "EdDSA"}[key.key_type]
    with warnings.catch_warnings():
        # joserfc warns about EdDSA (RFC 9864); the signer is not under test.
        warnings.simplefilter("ignore")
        return jwt.encode(
            {"alg": alg, "kid": key.kid, **header}, claims, key, registry=_SIGNING
        )


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str) -> str:
    """A compact JWT put together by hand, with any header and signature."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{signature}"


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    import hashlib
    import hmac

    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def client_claims(server: LiveServer, client_id: str, **changes: Any) -> dict:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": server.issuer + "/token",
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(12),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def assertion_form(client_assertion: str, **form: str) -> dict[str, str]:
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **form,
    }


def post_token(server: LiveServer, data: dict[str, Any], **kwargs: Any) -> Any:
    return requests.post(server.url + "/token", data=data, timeout=30, **kwargs)


def credentials_grant(
    server: LiveServer, assertion: str, **form: str
) -> requests.Response:
    return post_token(
        server, assertion_form(assertion, grant_type="client_credentials", **form)
    )


def assert_oauth_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), (
        response.headers,
        response.text,
    )
    assert response.json()["error"] == error, response.text


def assert_invalid_client(response: Any) -> None:
    assert_oauth_error(response, 401, "invalid_client")


# --- operator commands, in process ----------------------------------------------------


def cli(server: LiveServer, *args: str) -> Any:
    result = server.app.test_cli_runner().invoke(args=list(args))
    return result


def create_service(
    server: LiveServer,
    *options: str,
    resource: str | None = None,
    keys: dict | None = None,
    tmp_path: Any = None,
) -> dict[str, Any]:
    args = [
        "clients",
        "create-service",
        "svc-" + secrets.token_hex(3),
        "--resource",
        resource or server.issuer + "/mcp",
        *options,
    ]
    if keys is not None:
        assert tmp_path is not None
        path = tmp_path / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(keys))
        args += ["--jwks-file", str(path)]
    result = cli(server, *args)
    assert result.exit_code == 0, result.output
    return printed_json(result.output)


def printed_json(output: str) -> Any:
    """The pretty-printed JSON a command printed last (log lines come before it)."""
    lines = output.splitlines()
    if lines and lines[-1] in ("[]", "{}"):
        return json.loads(lines[-1])
    start = max(i for i, line in enumerate(lines) if line in ("{", "["))
    return json.loads("\n".join(lines[start:]))


def trust(server: LiveServer, issuer: str, jwks_uri: str, *options: str) -> None:
    result = cli(server, "idps", "trust", issuer, "--jwks-uri", jwks_uri, *options)
    assert result.exit_code == 0, result.output


def secret_token(server: LiveServer, service: dict, **form: str) -> Any:
    return post_token(
        server,
        {"grant_type": "client_credentials", **form},
        auth=(service["client_id"], service["client_secret"]),
    )


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(
        CIMD_ALLOW_LOOPBACK="on", RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET}"
    )


@pytest.fixture
def keyed(live: LiveServer, tmp_path: Any) -> tuple[dict, ECKey]:
    """A service client for itself, with an inline key set of one EC key."""
    key = ec_key()
    service = create_service(live, keys=public_set(key), tmp_path=tmp_path)
    return service, key


class Idp:
    """A trusted enterprise identity provider, its keys served from a thread."""

    def __init__(self, server: LiveServer, documents: DocumentServer) -> None:
        self.server = server
        self.key = ec_key("idp-1")
        self.issuer = documents.url("/idp")
        self.jwks_uri = documents.url("/idp/jwks")
        documents.respond("/idp/jwks", json.dumps(public_set(self.key)))
        self.documents = documents

    def claims(self, client_id: str, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "idp-user-" + secrets.token_hex(4),
            "aud": self.server.issuer,
            "client_id": client_id,
            "resource": self.server.issuer + "/mcp",
            "scope": "read write",
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(12),
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def assertion(
        self, client_id: str, header: dict | None = None, **changes: Any
    ) -> str:
        return sign(
            self.key, self.claims(client_id, **changes), typ=ID_JAG, **header or {}
        )


@pytest.fixture
def idp(live: LiveServer, documents: DocumentServer) -> Idp:
    provider = Idp(live, documents)
    trust(live, provider.issuer, provider.jwks_uri)
    return provider


def id_jag_grant(
    server: LiveServer, client: dict, assertion: str, **form: str
) -> requests.Response:
    data = {"grant_type": JWT_BEARER, "assertion": assertion, **form}
    method = client.get("token_endpoint_auth_method", "client_secret_basic")
    if method == "none":
        return post_token(server, {**data, "client_id": client["client_id"]})
    return post_token(server, data, auth=(client["client_id"], client["client_secret"]))


def introspect(server: LiveServer, token: str) -> dict[str, Any]:
    response = requests.post(
        server.url + "/introspect", data={"token": token}, auth=GATEWAY, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def verify(server: LiveServer, token: str) -> int:
    return requests.get(
        server.url + "/auth/verify", headers=bearer(token), timeout=30
    ).status_code


def mcp_status(server: LiveServer, token: str) -> int:
    return whoami(server.browser(), token).status_code


# --- private_key_jwt: algorithm and key confusion -------------------------------------


def test_a_signed_assertion_gets_a_token_and_no_refresh_token(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    response = credentials_grant(
        live, sign(key, client_claims(live, service["client_id"]))
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["sub"] == service["client_id"] == claims["client_id"]
    assert claims["aud"] == live.issuer + "/mcp"
    assert "consent_id" not in claims


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey], alg: str
) -> None:
    service, key = keyed
    claims = client_claims(live, service["client_id"])
    for signature in ("", "AA"):
        token = unsigned({"alg": alg, "kid": key.kid}, claims, signature)
        assert_invalid_client(credentials_grant(live, token))


def test_hs256_keyed_with_the_public_key_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    """The classic confusion: HMAC keyed with bytes the attacker can read."""
    service, key = keyed
    claims = client_claims(live, service["client_id"])
    public = key.as_dict(private=False)
    candidates = [
        json.dumps(public).encode(),
        json.dumps(public_set(key)).encode(),
        key.as_pem(private=False),
        str(public["x"]).encode(),
        b"",
    ]
    for secret in candidates:
        for alg_header in ({"alg": "HS256"}, {"alg": "HS256", "kid": key.kid}):
            claims = client_claims(live, service["client_id"])
            assert_invalid_client(
                credentials_grant(live, hs256(secret, alg_header, claims))
            )


def test_an_embedded_jwk_jku_or_x5u_header_does_not_choose_the_key(
    live: LiveServer, keyed: tuple[dict, ECKey], documents: DocumentServer
) -> None:
    service, _ = keyed
    attacker = ec_key("k1")  # even the same kid as the client's
    documents.respond("/evil.json", json.dumps(public_set(attacker)))
    headers: list[dict[str, Any]] = [
        {"jwk": attacker.as_dict(private=False)},
        {"jku": documents.url("/evil.json")},
        {"x5u": documents.url("/evil.json")},
        {"jwk": attacker.as_dict(private=False), "kid": None},
    ]
    for extra in headers:
        claims = client_claims(live, service["client_id"])
        header = {"alg": "ES256", "kid": "k1", **extra}
        header = {k: v for k, v in header.items() if v is not None}
        token = jwt.encode(header, claims, attacker)
        assert_invalid_client(credentials_grant(live, token))
    assert documents.requests["/evil.json"] == 0


def test_a_symmetric_key_in_a_key_set_is_refused_everywhere(
    live: LiveServer, tmp_path: Any
) -> None:
    oct_set = {"keys": [{"kty": "oct", "k": b64(b"0" * 32), "kid": "s"}]}
    # At registration...
    response = live.browser().post(
        "/register",
        json={
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": oct_set,
        },
    )
    assert_oauth_error(response, 400, "invalid_client_metadata")
    # ...and by the operator.
    path = tmp_path / "oct.json"
    path.write_text(json.dumps(oct_set))
    result = cli(
        live,
        "clients",
        "create-service",
        "x",
        "--resource",
        live.issuer + "/mcp",
        "--jwks-file",
        str(path),
    )
    assert result.exit_code == 1


def test_private_keys_are_refused_at_registration(live: LiveServer) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r"})
    for key in (ec_key(), rsa, OKPKey.generate_key("Ed25519")):
        response = live.browser().post(
            "/register",
            json={
                "redirect_uris": ["http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [key.as_dict(private=True)]},
            },
        )
        assert_oauth_error(response, 400, "invalid_client_metadata")


def test_a_key_of_the_wrong_curve_or_alg_in_the_header_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    for alg in ("ES384", "ES512", "RS256", "PS256", "ES256K", "HS512", "RSA-OAEP"):
        token = unsigned(
            {"alg": alg, "kid": key.kid},
            client_claims(live, service["client_id"]),
            sign(key, client_claims(live, service["client_id"])).split(".")[2],
        )
        assert_invalid_client(credentials_grant(live, token))


# --- private_key_jwt: claims ----------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "https://elsewhere.example/token"},
        {"aud": ["https://elsewhere.example"]},
        {"aud": []},
        {"aud": None},
        {"aud": "AUTH_SERVER/introspect"},
        {"aud": "AUTH_SERVER/mcp"},
        {"aud": "AUTH_SERVER/"},
        {"aud": {"a": "AUTH_SERVER"}},
        {"iss": "someone-else"},
        {"iss": None},
        {"exp": None},
        {"exp": "NOW+60"},
        {"exp": True},
        {"exp": 10**40},
        {"exp": 1e308},
        {"exp": -1},
        {"exp": 0},
        {"exp": "in a minute"},
        {"jti": None},
        {"jti": ""},
        {"jti": 12345},
        {"jti": ["a"]},
        {"jti": "j" * 300},
        {"nbf": 4102444800},
        {"iat": 4102444800},
        {"sub": ["x"]},
    ],
    ids=repr,
)
def test_bad_assertion_claims_are_invalid_client(
    live: LiveServer, keyed: tuple[dict, ECKey], changes: dict[str, Any]
) -> None:
    service, key = keyed
    now = int(time.time())
    fixed: dict[str, Any] = {}
    for name, value in changes.items():
        if isinstance(value, str):
            value = value.replace("AUTH_SERVER", live.issuer)
            if value == "NOW+60":
                value = str(now + 60)
        fixed[name] = value
    claims = client_claims(live, service["client_id"], **fixed)
    for name, value in fixed.items():
        if value is None:
            claims.pop(name, None)
    response = credentials_grant(live, sign(key, claims))
    assert_invalid_client(response)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_time_claims_are_invalid_client(
    live: LiveServer, keyed: tuple[dict, ECKey], literal: str
) -> None:
    """JSON has no NaN; Python's parser takes it. A signed NaN ``exp`` must
    neither live forever nor crash the jti bookkeeping."""
    service, key = keyed
    for claim in ("exp", "iat", "nbf"):
        claims = client_claims(live, service["client_id"])
        payload = json.dumps(claims)[:-1] + f', "{claim}x": 0}}'
        payload = payload.replace(f'"{claim}x": 0', f'"{claim}": {literal}')
        payload = payload.replace(f'"{claim}": {claims.get(claim)},', "", 1)
        head = b64(json.dumps({"alg": "ES256", "kid": key.kid}).encode())
        body = b64(payload.encode())
        signing_input = f"{head}.{body}".encode()
        from joserfc.jws import JWSRegistry  # noqa: F401 (signing by hand below)

        signature = _es256(key, signing_input)
        response = credentials_grant(live, f"{head}.{body}.{signature}")
        assert_invalid_client(response)


def signed_by_hand(key: ECKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """ES256 over any header at all (joserfc refuses to write odd ones)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_es256(key, f'{head}.{body}'.encode())}"


def _es256(key: ECKey, data: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    private = key.private_key
    assert private is not None
    der = private.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_an_assertion_living_longer_than_five_minutes_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    claims = client_claims(live, service["client_id"], exp=int(time.time()) + 3600)
    assert_invalid_client(credentials_grant(live, sign(key, claims)))


def test_an_assertion_is_spent_once_even_by_two_instances_at_once(
    make_server: Callable[..., LiveServer], tmp_path: Any
) -> None:
    one = make_server(CIMD_ALLOW_LOOPBACK="on")
    two = make_server(CIMD_ALLOW_LOOPBACK="on")
    key = ec_key()
    service = create_service(one, keys=public_set(key), tmp_path=tmp_path)
    # The audience both accept: the first instance's issuer is not the second's,
    # so each instance gets its own copy naming itself, with one jti.
    jti = secrets.token_urlsafe(12)
    tokens = [
        (server, sign(key, client_claims(server, service["client_id"], jti=jti)))
        for server in (one, two, one, two, one, two)
    ]
    barrier = threading.Barrier(len(tokens))

    def attempt(pair: tuple[LiveServer, str]) -> int:
        barrier.wait()
        return credentials_grant(*pair).status_code

    with ThreadPoolExecutor(len(tokens)) as pool:
        statuses = list(pool.map(attempt, tokens))
    # Each instance has its own issuer here, so the audiences differ; a jti
    # is still one client's one assertion, so only one may succeed.
    assert sorted(statuses) == [200] + [401] * 5, statuses


def test_the_form_client_id_must_be_the_assertion_subject(
    live: LiveServer, keyed: tuple[dict, ECKey], tmp_path: Any
) -> None:
    service, key = keyed
    other = create_service(live, keys=public_set(ec_key()), tmp_path=tmp_path)
    claims = client_claims(live, service["client_id"])
    response = credentials_grant(live, sign(key, claims), client_id=other["client_id"])
    assert_invalid_client(response)
    # The assertion was never accepted, but it is not usable either way.


def test_two_authentication_methods_at_once_are_refused(
    live: LiveServer, keyed: tuple[dict, ECKey], tmp_path: Any
) -> None:
    service, key = keyed
    secret_client = create_service(live)
    claims = client_claims(live, service["client_id"])
    data = assertion_form(sign(key, claims), grant_type="client_credentials")
    both = post_token(
        live, data, auth=(secret_client["client_id"], secret_client["client_secret"])
    )
    assert both.status_code in (400, 401), both.text
    assert both.json()["error"] in ("invalid_request", "invalid_client")
    claims = client_claims(live, service["client_id"])
    data = assertion_form(
        sign(key, claims),
        grant_type="client_credentials",
        client_secret=secret_client["client_secret"],
    )
    posted = post_token(live, data)
    assert posted.status_code in (400, 401), posted.text
    assert posted.json()["error"] in ("invalid_request", "invalid_client")


def test_an_ed25519_client_signs_with_eddsa(live: LiveServer, tmp_path: Any) -> None:
    """EdDSA is on the advertised list, but joserfc warns (SecurityWarning,
    RFC 9864 deprecates the name) each time it looks the algorithm up. The
    test suite runs with warnings as errors, as a deployment with -W error
    would: there the warning is a 500, for a good assertion and for any
    attacker naming EdDSA. Without -W error it is a log line per process."""
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    service = create_service(live, keys=public_set(key), tmp_path=tmp_path)
    response = credentials_grant(
        live, sign(key, client_claims(live, service["client_id"]))
    )
    assert response.status_code == 200, response.text


def test_eddsa_named_by_an_attacker_with_another_key_type_is_401_not_500(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    claims = client_claims(live, service["client_id"])
    token = unsigned({"alg": "EdDSA", "kid": key.kid}, claims, b64(b"x" * 64))
    assert_invalid_client(credentials_grant(live, token))


# --- service clients: what they may and may not get -----------------------------------


def test_a_service_client_gets_no_code_refresh_or_identity_assertion_grant(
    live: LiveServer, idp: Idp
) -> None:
    service = create_service(live)
    auth = (service["client_id"], service["client_secret"])
    for grant in (
        {
            "grant_type": "authorization_code",
            "code": "x",
            "code_verifier": "v" * 43,
            "redirect_uri": "http://127.0.0.1/callback",
        },
        {"grant_type": "refresh_token", "refresh_token": "x"},
        {"grant_type": JWT_BEARER, "assertion": idp.assertion(service["client_id"])},
    ):
        response = post_token(live, grant, auth=auth)
        assert_oauth_error(response, 400, "unauthorized_client")
    # Nor can it start a code flow: nothing redirects anywhere.
    page = requests.get(
        live.url + "/authorize",
        params={
            "response_type": "code",
            "client_id": service["client_id"],
            "redirect_uri": "http://127.0.0.1/callback",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert page.status_code == 400, (page.status_code, page.headers)
    assert "Location" not in page.headers


def test_a_service_client_stays_within_its_resource_and_ceiling(
    live: LiveServer, tmp_path: Any
) -> None:
    other = register_resource(live, "https://other.example/mcp", scopes="read admin")
    service = create_service(live, "--scopes", "read")
    assert_oauth_error(secret_token(live, service, scope="write"), 400, "invalid_scope")
    assert_oauth_error(
        secret_token(live, service, scope="read offline_access write"),
        400,
        "invalid_scope",
    )
    assert_oauth_error(
        secret_token(live, service, resource=other), 400, "invalid_target"
    )
    assert_oauth_error(
        secret_token(live, service, resource=live.issuer + "/mcp/../other"),
        400,
        "invalid_target",
    )
    granted = secret_token(live, service, scope="read offline_access")
    assert granted.status_code in (200, 400), granted.text
    if granted.status_code == 200:
        assert granted.json()["scope"] == "read"
        assert "refresh_token" not in granted.json()


def test_a_service_client_secret_is_checked_in_full(live: LiveServer) -> None:
    service = create_service(live)
    secret = service["client_secret"]
    for wrong in (secret[:-1], secret + "x", secret.upper(), "", secret[:10]):
        response = post_token(
            live,
            {"grant_type": "client_credentials"},
            auth=(service["client_id"], wrong),
        )
        assert_invalid_client(response)
    # And only by Basic, the method it was made with.
    posted = post_token(
        live,
        {
            "grant_type": "client_credentials",
            "client_id": service["client_id"],
            "client_secret": secret,
        },
    )
    assert_invalid_client(posted)


# --- revoked service clients: every door shut, everywhere, after a Redis loss ---------


def _live_token(server: LiveServer, service: dict) -> str:
    response = secret_token(server, service)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _shut_everywhere(server: LiveServer, token: str, service: dict) -> None:
    assert mcp_status(server, token) == 401
    assert verify(server, token) == 401
    assert introspect(server, token) == {"active": False}
    assert_invalid_client(secret_token(server, service))


@pytest.mark.parametrize("acts_for_person", [False, True])
def test_a_revoked_service_client_is_shut_out_even_after_redis_forgets(
    live: LiveServer, redis_client: Any, acts_for_person: bool
) -> None:
    person = make_user(live, "owner@example.com")
    options = ("--for", person["email"]) if acts_for_person else ()
    service = create_service(live, *options)
    token = _live_token(live, service)
    assert mcp_status(live, token) == 200
    assert verify(live, token) == 200
    assert introspect(live, token)["active"] is True

    result = cli(live, "clients", "revoke", service["client_id"])
    assert result.exit_code == 0, result.output
    _shut_everywhere(live, token, service)

    redis_client.flushdb()  # the denylist is rebuilt from Postgres
    _shut_everywhere(live, token, service)


def test_a_revoked_service_client_is_shut_out_on_another_instance(
    make_server: Callable[..., LiveServer],
) -> None:
    one = make_server(RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET}")
    two = make_server(RESOURCE_SERVERS=f"gateway:{GATEWAY_SECRET}", ISSUER=one.url)
    service = create_service(one)
    token = _live_token(one, service)
    # The second instance has seen the client and its token (cached both).
    assert secret_token(two, service).status_code == 200
    assert mcp_status(two, token) == 200
    assert cli(one, "clients", "revoke", service["client_id"]).exit_code == 0
    assert_invalid_client(secret_token(two, service))
    assert mcp_status(two, token) == 401


@pytest.mark.parametrize("acts_for", ["me", "self"])
def test_disabling_a_person_ends_every_service_client_they_made(
    live: LiveServer, redis_client: Any, acts_for: str
) -> None:
    person = make_user(live, "maker@example.com")
    browser = live.browser()
    assert browser.login(person["email"], person["password"]).status_code == 302
    made = _create_on_page(browser, acts_for=acts_for)
    service = {"client_id": made["client_id"], "client_secret": made["client_secret"]}
    token = _live_token(live, service)
    expected_sub = person["id"] if acts_for == "me" else service["client_id"]
    assert claims_of(token)["sub"] == expected_sub

    result = cli(live, "users", "disable", person["email"])
    assert result.exit_code == 0, result.output
    _shut_everywhere(live, token, service)
    redis_client.flushdb()
    _shut_everywhere(live, token, service)


# --- the account page: one person's clients are theirs alone --------------------------


def _create_on_page(browser: Browser, **fields: str) -> dict[str, str]:
    data = {
        "csrf_token": csrf_token(browser),
        "name": "ci",
        "resource": browser.server.issuer + "/mcp",
        "scopes": "",
        "acts_for": "self",
        **fields,
    }
    response = browser.post("/account/service-clients", data=data)
    assert response.status_code == 201, (response.status_code, response.text[:2000])
    client_id = select_one(response, "#service-client-id").get_text(strip=True)
    secret = select_one(response, "#service-client-secret").get_text(strip=True)
    return {"client_id": client_id, "client_secret": secret}


def test_a_person_cannot_revoke_or_see_another_persons_service_client(
    live: LiveServer,
) -> None:
    alice = make_user(live, "alice@example.com")
    mallory = make_user(live, "mallory@example.com")
    a = live.browser()
    a.login(alice["email"], alice["password"])
    made = _create_on_page(a, acts_for="me")
    operator_made = create_service(live)

    m = live.browser()
    m.login(mallory["email"], mallory["password"])
    page = m.get("/account")
    assert made["client_id"] not in page.text
    assert operator_made["client_id"] not in page.text
    token = csrf_token(m)
    for client_id in (made["client_id"], operator_made["client_id"]):
        response = m.post(
            f"/account/service-clients/{client_id}/revoke", data={"csrf_token": token}
        )
        assert response.status_code == 404, response.status_code
    assert secret_token(live, made).status_code == 200
    assert secret_token(live, operator_made).status_code == 200


def test_the_service_client_forms_need_the_csrf_token(live: LiveServer) -> None:
    alice = make_user(live, "alice@example.com")
    a = live.browser()
    a.login(alice["email"], alice["password"])
    made = _create_on_page(a)
    form = {"name": "x", "resource": live.issuer + "/mcp", "acts_for": "me"}
    for data in (form, {**form, "csrf_token": "forged"}):
        created = a.post("/account/service-clients", data=data)
        assert created.status_code in (400, 403), created.status_code
    for data in ({}, {"csrf_token": "forged"}):
        revoked = a.post(
            f"/account/service-clients/{made['client_id']}/revoke", data=data
        )
        assert revoked.status_code in (400, 403), revoked.status_code
    assert secret_token(live, made).status_code == 200
    listed = cli(live, "clients", "list-services", "--json")
    assert len(printed_json(listed.output)) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "x\x00y"},
        {"name": "n" * 100_000},
        {"resource": "\x00"},
        {"resource": "https://unknown.example/mcp"},
        {"scopes": "read\x00"},
        {"scopes": "s " * 20_000},
        {"scopes": "offline_access"},
        {"jwks_uri": "http://169.254.169.254/latest/meta-data/"},
        {"jwks_uri": "file:///etc/passwd"},
        {"jwks_uri": "http://127.0.0.1:1/\x00"},
        {"jwks_uri": "https://" + "a" * 5000 + ".example/"},
        {"jwks": "{"},
        {"jwks": "[" * 100_000 + "]" * 100_000},
        {"jwks": '{"keys": [{"kty": "oct", "k": "AAAA"}]}'},
        {"jwks": '{"keys": "x"}'},
        {"jwks": "null"},
        {"jwks": '{"keys": [], "x": NaN}'},
        {"jwks": "PUBLIC_WITH_NUL"},
        {"jwks": "PUBLIC_WITH_SURROGATE"},
        {"jwks": "PUBLIC_WITH_NAN"},
        {"jwks": "PUBLIC_AND_URI"},
    ],
    ids=lambda f: repr(f)[:60],
)
def test_crafted_service_client_forms_are_refused_never_500(
    live: LiveServer, fields: dict[str, str]
) -> None:
    alice = make_user(live, "alice@example.com")
    a = live.browser()
    a.login(alice["email"], alice["password"])
    public = ec_key().as_dict(private=False)
    jwks = fields.get("jwks")
    if jwks == "PUBLIC_WITH_NUL":
        fields = {"jwks": json.dumps({"keys": [{**public, "kid": "a\x00b"}]})}
    elif jwks == "PUBLIC_WITH_SURROGATE":
        fields = {"jwks": json.dumps({"keys": [{**public, "note": "\ud800"}]})}
    elif jwks == "PUBLIC_WITH_NAN":
        fields = {"jwks": json.dumps({"keys": [public]})[:-1] + ', "note": NaN}'}
    elif jwks == "PUBLIC_AND_URI":
        fields = {
            "jwks": json.dumps({"keys": [public]}),
            "jwks_uri": "http://127.0.0.1:1/jwks",
        }
    data = {
        "csrf_token": csrf_token(a),
        "name": "ci",
        "resource": live.issuer + "/mcp",
        "scopes": "",
        "acts_for": "me",
        **fields,
    }
    response = a.post("/account/service-clients", data=data)
    assert response.status_code in (400, 413), (
        response.status_code,
        response.text[:300],
    )
    listed = cli(live, "clients", "list-services", "--json")
    assert printed_json(listed.output) == []


# --- keys at a URL: fetches an attacker can provoke -----------------------------------


def _dcr_keyed(server: LiveServer, jwks_uri: str) -> dict[str, Any]:
    """Anyone can register a private_key_jwt client naming any key set URL."""
    return register_client(
        server.browser(),
        token_endpoint_auth_method="private_key_jwt",
        jwks_uri=jwks_uri,
    )


def _revoke_with(server: LiveServer, assertion: str) -> requests.Response:
    return requests.post(
        server.url + "/revoke",
        data=assertion_form(assertion, token="not-a-token"),
        timeout=30,
    )


def test_a_key_set_url_that_redirects_is_not_followed(
    live: LiveServer, documents: DocumentServer
) -> None:
    key = ec_key()
    documents.respond("/real.json", json.dumps(public_set(key)))
    documents.respond(
        "/jwks.json", status=302, headers={"Location": documents.url("/real.json")}
    )
    client = _dcr_keyed(live, documents.url("/jwks.json"))
    claims = client_claims(live, client["client_id"])
    assert_invalid_client(_revoke_with(live, sign(key, claims)))
    assert documents.requests["/real.json"] == 0


def test_an_oversized_key_set_is_refused_and_not_read_to_the_end(
    live: LiveServer, documents: DocumentServer
) -> None:
    key = ec_key()
    big = public_set(key)
    big["padding"] = "x" * (64 * 1024)
    documents.respond("/big.json", json.dumps(big))
    client = _dcr_keyed(live, documents.url("/big.json"))
    claims = client_claims(live, client["client_id"])
    assert_invalid_client(_revoke_with(live, sign(key, claims)))


def test_a_key_set_that_never_ends_costs_one_deadline(
    live: LiveServer, documents: DocumentServer
) -> None:
    key = ec_key()
    documents.dribble("/slow.json", every=0.5)
    client = _dcr_keyed(live, documents.url("/slow.json"))
    started = time.monotonic()
    assert_invalid_client(
        _revoke_with(live, sign(key, client_claims(live, client["client_id"])))
    )
    assert time.monotonic() - started < 10
    # The failure is remembered: a second try does not wait again.
    started = time.monotonic()
    assert_invalid_client(
        _revoke_with(live, sign(key, client_claims(live, client["client_id"])))
    )
    assert time.monotonic() - started < 2


def test_an_unknown_kid_flood_refetches_at_most_once(
    live: LiveServer, documents: DocumentServer
) -> None:
    key = ec_key()
    documents.respond("/jwks.json", json.dumps(public_set(key)))
    client = _dcr_keyed(live, documents.url("/jwks.json"))
    good = sign(key, client_claims(live, client["client_id"]))
    assert _revoke_with(live, good).status_code == 200
    assert documents.requests["/jwks.json"] == 1

    def unknown_kid(n: int) -> int:
        forged = ec_key(f"kid-{n}")
        claims = client_claims(live, client["client_id"])
        return _revoke_with(live, sign(forged, claims)).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(unknown_kid, range(40)))
    assert set(statuses) == {401}, statuses
    assert documents.requests["/jwks.json"] <= 2


def test_a_cold_key_set_is_fetched_once_by_a_burst_of_requests(
    live: LiveServer, documents: DocumentServer, tmp_path: Any
) -> None:
    """A CI fleet of ten jobs starts at once with a freshly made service client
    whose keys are at a URL. The set should be fetched once, and no job should
    be turned away for the others' fetches (metadata documents take a lock per
    URL for this; key sets take none, and two fetch slots per process)."""
    key = ec_key()
    documents.respond("/fleet.json", json.dumps(public_set(key)), delay=1.0)
    service = create_service(live, "--jwks-uri", documents.url("/fleet.json"))
    barrier = threading.Barrier(10)

    def job(_: int) -> int:
        assertion = sign(key, client_claims(live, service["client_id"]))
        barrier.wait()
        return credentials_grant(live, assertion).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(job, range(10)))
    assert statuses == [200] * 10, statuses
    assert documents.requests["/fleet.json"] == 1


def test_one_clients_slow_key_set_does_not_shut_out_other_clients(
    live: LiveServer, documents: DocumentServer, tmp_path: Any
) -> None:
    """An attacker registers (open registration) clients whose key set URLs
    answer slowly, and sends assertions naming them: while those fetches
    hold the process's fetch slots, a legitimate client whose cached keys
    expired must still be served."""
    key = ec_key()
    documents.respond("/victim.json", json.dumps(public_set(key)))
    victim = create_service(live, "--jwks-uri", documents.url("/victim.json"))
    for n in range(4):
        documents.respond(f"/slow-{n}.json", json.dumps(public_set(ec_key())), delay=4)
    attackers = [_dcr_keyed(live, documents.url(f"/slow-{n}.json")) for n in range(4)]

    def attack(client: dict) -> int:
        claims = client_claims(live, client["client_id"])
        return _revoke_with(live, sign(ec_key(), claims)).status_code

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(attack, client) for client in attackers]
        time.sleep(0.5)
        response = credentials_grant(
            live, sign(key, client_claims(live, victim["client_id"]))
        )
        [p.result() for p in pending]
    assert response.status_code == 200, (response.status_code, response.text)


# --- ID-JAG: the enterprise grant -----------------------------------------------------


def _link(server: LiveServer, user: dict, issuer: str, subject: str) -> None:
    """``user`` already has the identity (issuer, subject)."""
    from app.db import db
    from app.identities import link
    from app.upstream_identity import UpstreamIdentity

    identity = UpstreamIdentity(
        provider="enterprise",
        issuer=issuer,
        subject=subject,
        email=None,
        domains=frozenset(),
    )
    with server.app.app_context(), db.transaction():
        link(uuid.UUID(user["id"]), identity)


@pytest.fixture
def employee(live: LiveServer, idp: Idp) -> dict[str, str]:
    person = make_user(live, "employee@example.com")
    person["subject"] = "00u-employee"
    _link(live, person, idp.issuer, person["subject"])
    return person


@pytest.fixture
def app_client(live: LiveServer) -> dict[str, Any]:
    return register_client(live.browser())


def test_an_id_jag_gets_a_token_for_the_person_and_no_refresh_token(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    response = id_jag_grant(live, app_client, assertion)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["sub"] == employee["id"]
    assert claims["client_id"] == app_client["client_id"]
    # Replayed, on the same instance: refused, and recorded.
    again = id_jag_grant(live, app_client, assertion)
    assert_oauth_error(again, 400, "invalid_grant")


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"typ": None},
        {"typ": "id-jag+jwt"},
        {"typ": "oauth-id-jag+jwt; x"},
        {"typ": ["oauth-id-jag+jwt"]},
        {"typ": "application/oauth-id-jag+jwt+x"},
    ],
    ids=repr,
)
def test_an_id_jag_of_another_type_is_refused(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict, header: dict
) -> None:
    claims = idp.claims(app_client["client_id"], sub=employee["subject"])
    alg_header = {"alg": "ES256", "kid": idp.key.kid, **header}
    alg_header = {k: v for k, v in alg_header.items() if v is not None}
    token = signed_by_hand(idp.key, alg_header, claims)
    assert_oauth_error(id_jag_grant(live, app_client, token), 400, "invalid_grant")


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "AUTH_SERVER/token"},
        {"aud": "AUTH_SERVER/"},
        {"aud": "AUTH_SERVER/mcp"},
        {"aud": ["https://other-as.example"]},
        {"aud": None},
        {"client_id": "someone-else"},
        {"client_id": None},
        {"client_id": ["CLIENT"]},
        {"iss": "https://not-trusted.example"},
        {"exp": "LATER"},
        {"exp": 10**20},
        {"exp": 1},
        {"iat": None},
        {"iat": 4102444800},
        {"jti": None},
        {"jti": 7},
        {"sub": None},
        {"sub": ""},
        {"sub": "s" * 5000},
        {"sub": "a\x00b"},
        {"resource": None},
        {"resource": ["RESOURCE"]},
        {"resource": 5},
    ],
    ids=lambda c: repr(c)[:40],
)
def test_bad_id_jag_claims_are_invalid_grant_never_500(
    live: LiveServer,
    idp: Idp,
    employee: dict,
    app_client: dict,
    changes: dict[str, Any],
) -> None:
    fixed = {}
    for name, value in changes.items():
        if value == "LATER":
            value = str(int(time.time()) + 100)
        if isinstance(value, str):
            value = value.replace("AUTH_SERVER", live.issuer)
        if isinstance(value, list):
            value = [
                live.issuer + "/mcp"
                if v == "RESOURCE"
                else app_client["client_id"]
                if v == "CLIENT"
                else v
                for v in value
            ]
        fixed[name] = value
    claims = {**idp.claims(app_client["client_id"], sub=employee["subject"]), **fixed}
    for name, value in fixed.items():
        if value is None:
            claims.pop(name, None)
    response = id_jag_grant(live, app_client, sign(idp.key, claims, typ=ID_JAG))
    assert_oauth_error(response, 400, "invalid_grant")


def test_an_id_jag_for_an_unregistered_resource_is_invalid_target(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    for resource in ("https://other.example/mcp", "http://127.0.0.1:1/mcp"):
        assertion = idp.assertion(
            app_client["client_id"], sub=employee["subject"], resource=resource
        )
        response = id_jag_grant(live, app_client, assertion)
        assert_oauth_error(response, 400, "invalid_target")
    # A request naming another resource than the assertion's.
    other = register_resource(live, "https://tools.example/mcp", scopes="read")
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    response = id_jag_grant(live, app_client, assertion, resource=other)
    assert_oauth_error(response, 400, "invalid_target")


def test_an_id_jag_grants_no_scope_beyond_the_asserted_ones(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    assertion = idp.assertion(
        app_client["client_id"], sub=employee["subject"], scope="read"
    )
    response = id_jag_grant(live, app_client, assertion, scope="read write")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read"
    assertion = idp.assertion(
        app_client["client_id"], sub=employee["subject"], scope="read"
    )
    response = id_jag_grant(live, app_client, assertion, scope="write")
    assert_oauth_error(response, 400, "invalid_scope")
    assertion = idp.assertion(
        app_client["client_id"], sub=employee["subject"], scope=["read", "write"]
    )
    response = id_jag_grant(live, app_client, assertion)
    assert_oauth_error(response, 400, "invalid_scope")


def test_a_public_client_needs_the_issuer_to_allow_public_clients(
    live: LiveServer, idp: Idp, employee: dict
) -> None:
    public = register_client(live.browser(), token_endpoint_auth_method="none")
    assertion = idp.assertion(public["client_id"], sub=employee["subject"])
    response = id_jag_grant(live, public, assertion)
    assert_oauth_error(response, 400, "unauthorized_client")
    # A confidential client naming itself without its secret is no public client.
    confidential = register_client(live.browser())
    assertion = idp.assertion(confidential["client_id"], sub=employee["subject"])
    response = post_token(
        live,
        {
            "grant_type": JWT_BEARER,
            "assertion": assertion,
            "client_id": confidential["client_id"],
        },
    )
    assert_invalid_client(response)


def test_a_distrusted_issuer_is_refused_at_once(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    assert id_jag_grant(live, app_client, assertion).status_code == 200
    assert cli(live, "idps", "distrust", idp.issuer).exit_code == 0
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    assert_oauth_error(id_jag_grant(live, app_client, assertion), 400, "invalid_grant")


def test_one_issuers_identity_is_not_anothers(
    live: LiveServer,
    idp: Idp,
    employee: dict,
    app_client: dict,
    documents: DocumentServer,
) -> None:
    """A second trusted issuer (another company) asserting the same subject
    string gets nothing: identities are (issuer, subject)."""
    other_key = ec_key("other")
    documents.respond("/other/jwks", json.dumps(public_set(other_key)))
    other_issuer = documents.url("/other")
    trust(live, other_issuer, documents.url("/other/jwks"))
    claims = idp.claims(
        app_client["client_id"], sub=employee["subject"], iss=other_issuer
    )
    response = id_jag_grant(live, app_client, sign(other_key, claims, typ=ID_JAG))
    assert_oauth_error(response, 400, "invalid_grant")
    # Nor does the first issuer's key sign for the second issuer, or vice versa.
    claims = idp.claims(
        app_client["client_id"], sub=employee["subject"], iss=other_issuer
    )
    response = id_jag_grant(live, app_client, sign(idp.key, claims, typ=ID_JAG))
    assert_oauth_error(response, 400, "invalid_grant")
    claims = idp.claims(app_client["client_id"], sub=employee["subject"])
    forged = sign(other_key, claims, typ=ID_JAG, kid=idp.key.kid)
    assert_oauth_error(id_jag_grant(live, app_client, forged), 400, "invalid_grant")


@pytest.mark.parametrize(
    "email_claims",
    [
        {"email_verified": False},
        {"email_verified": None},
        {"email_verified": "false"},
        {"email_verified": 1},
        {"tid": "9188040d-6c67-4c5b-b112-36a304b66dad", "email_verified": True},
        {"email": "VICTIM@EXAMPLE.COM\u212a", "email_verified": True},
        {"email": "victim@example.com\x00", "email_verified": True},
    ],
    ids=repr,
)
def test_an_unverified_or_entra_email_links_no_account(
    live: LiveServer, idp: Idp, app_client: dict, email_claims: dict
) -> None:
    victim = make_user(live, "victim@example.com")
    claims = {"email": victim["email"], **email_claims}
    assertion = idp.assertion(app_client["client_id"], sub="attacker-sub", **claims)
    response = id_jag_grant(live, app_client, assertion)
    assert_oauth_error(response, 400, "invalid_grant")


def test_an_entra_issuer_never_links_by_email(
    live: LiveServer, app_client: dict, documents: DocumentServer
) -> None:
    """Entra's ``email`` is whatever a tenant admin typed. Trusted in tests
    with a loopback stand-in would not be Entra; the host decides, so this
    checks the issuer check itself refuses http for a real Entra host."""
    result = cli(
        live,
        "idps",
        "trust",
        "http://login.microsoftonline.com/tenant/v2.0",
        "--jwks-uri",
        documents.url("/jwks"),
    )
    assert result.exit_code == 1


def test_a_disabled_person_gets_nothing_from_an_id_jag(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    assert cli(live, "users", "disable", employee["email"]).exit_code == 0
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    assert_oauth_error(id_jag_grant(live, app_client, assertion), 400, "invalid_grant")
    # Nor by email, into the same disabled account.
    assertion = idp.assertion(
        app_client["client_id"],
        sub="new-subject",
        email=employee["email"],
        email_verified=True,
    )
    assert_oauth_error(id_jag_grant(live, app_client, assertion), 400, "invalid_grant")


def test_an_id_jag_is_spent_once_across_instances_at_once(
    make_server: Callable[..., LiveServer], documents: DocumentServer
) -> None:
    one = make_server(CIMD_ALLOW_LOOPBACK="on")
    two = make_server(CIMD_ALLOW_LOOPBACK="on", ISSUER=one.url)
    provider = Idp(one, documents)
    trust(one, provider.issuer, provider.jwks_uri)
    person = make_user(one, "employee@example.com")
    _link(one, person, provider.issuer, "00u-1")
    client = register_client(one.browser())
    assertion = provider.assertion(client["client_id"], sub="00u-1")
    # Warm both instances' key caches with other assertions.
    for server in (one, two):
        warm = provider.assertion(client["client_id"], sub="00u-1")
        assert id_jag_grant(server, client, warm).status_code == 200
    barrier = threading.Barrier(8)

    def attempt(server: LiveServer) -> int:
        barrier.wait()
        return id_jag_grant(server, client, assertion).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, [one, two] * 4))
    assert sorted(statuses) == [200] + [400] * 7, statuses


def test_an_id_jag_cannot_be_presented_as_a_client_assertion(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    response = post_token(
        live, assertion_form(assertion, grant_type="client_credentials")
    )
    assert_invalid_client(response)


# --- /introspect and /revoke with assertions ------------------------------------------


def _introspect_with(server: LiveServer, assertion: str, token: str, **kw: Any) -> Any:
    return requests.post(
        server.url + "/introspect",
        data=assertion_form(assertion, token=token),
        timeout=30,
        **kw,
    )


def test_a_keyed_client_introspects_and_revokes_only_its_own_tokens(
    live: LiveServer, keyed: tuple[dict, ECKey], user: dict
) -> None:
    service, key = keyed
    own = credentials_grant(live, sign(key, client_claims(live, service["client_id"])))
    own_token = own.json()["access_token"]
    _, tokens = obtain_tokens(live.browser(), user)
    others = tokens["access_token"]
    other_service = create_service(live)
    other_service_token = _live_token(live, other_service)

    for token in (others, other_service_token):
        seen = _introspect_with(
            live, sign(key, client_claims(live, service["client_id"])), token
        )
        assert seen.status_code == 200, seen.text
        assert seen.json() == {"active": False}
        revoked = _revoke_with_token(live, key, service, token)
        assert revoked.status_code == 200, revoked.text
        assert mcp_status(live, token) == 200  # untouched
    mine = _introspect_with(
        live, sign(key, client_claims(live, service["client_id"])), own_token
    )
    assert mine.json()["active"] is True
    assert _revoke_with_token(live, key, service, own_token).status_code == 200
    assert mcp_status(live, own_token) == 401


def _revoke_with_token(
    server: LiveServer, key: ECKey, service: dict, token: str
) -> requests.Response:
    assertion = sign(key, client_claims(server, service["client_id"]))
    return requests.post(
        server.url + "/revoke", data=assertion_form(assertion, token=token), timeout=30
    )


def test_introspection_with_an_assertion_and_basic_at_once_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    token = credentials_grant(
        live, sign(key, client_claims(live, service["client_id"]))
    ).json()["access_token"]
    both = _introspect_with(
        live, sign(key, client_claims(live, service["client_id"])), token, auth=GATEWAY
    )
    assert both.status_code in (400, 401), both.text
    assert "active" not in both.json()


def test_a_secret_service_client_cannot_introspect(live: LiveServer) -> None:
    service = create_service(live)
    token = _live_token(live, service)
    response = requests.post(
        live.url + "/introspect",
        data={"token": token},
        auth=(service["client_id"], service["client_secret"]),
        timeout=30,
    )
    assert_invalid_client(response)


# --- tokens of the new grants at the person's own endpoints ---------------------------


def _mint_api_key(server: LiveServer, token: str) -> requests.Response:
    return requests.post(
        server.url + "/api-keys",
        json={"name": "escape"},
        headers=bearer(token),
        timeout=30,
    )


def test_a_service_client_acting_for_a_person_cannot_manage_their_api_keys(
    live: LiveServer,
) -> None:
    person = make_user(live, "owner@example.com")
    service = create_service(live, "--for", person["email"])
    token = _live_token(live, service)
    response = requests.post(
        live.url + "/api-keys",
        json={"name": "escape"},
        headers=bearer(token),
        timeout=30,
    )
    assert response.status_code in (401, 403), response.text
    listed = requests.get(live.url + "/api-keys", headers=bearer(token), timeout=30)
    assert listed.status_code in (401, 403), listed.text


def test_an_id_jag_token_cannot_mint_long_lived_api_keys(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    """The enterprise grant gives no refresh token so that the company's
    decision stays current: each token needs a fresh assertion. A token from
    it must not be able to mint an API key, a credential the company cannot
    end, even when the person once approved the same client by hand."""
    from helpers import get_code, redeem

    browser = live.browser()
    code, verifier, _ = get_code(browser, app_client, employee)
    assert redeem(browser, app_client, code, verifier).status_code == 200
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    token = id_jag_grant(live, app_client, assertion).json()["access_token"]
    response = requests.post(
        live.url + "/api-keys",
        json={"name": "escape"},
        headers=bearer(token),
        timeout=30,
    )
    assert response.status_code in (401, 403), (response.status_code, response.text)


# --- crafted input: never a 500 -------------------------------------------------------


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _crafted_assertions(key: ECKey, client_id: str, issuer: str) -> list[str]:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer + "/token",
        "exp": now + 60,
        "jti": secrets.token_hex(8),
    }
    head = b64(json.dumps({"alg": "ES256", "kid": key.kid}).encode())
    body = b64(json.dumps(claims).encode())
    deep = b64(_deep(50_000).encode())
    nested = b64(('{"a":' * 20_000 + "1" + "}" * 20_000).encode())
    not_utf8 = b64(b"\xff\xfe")

    def header(**fields: Any) -> str:
        return b64(json.dumps(fields).encode())

    def payload(**changes: Any) -> str:
        return b64(json.dumps({**claims, **changes}).encode())

    return [
        "a" * 9000,
        "\x00.\x00.\x00",
        "\u00e9.\u00e9.\u00e9",
        "...",
        "a.b",
        "a.b.c.d.e",
        f"{deep}.{body}.AA",
        f"{head}.{deep}.AA",
        f"{head}.{nested}.AA",
        f"{not_utf8}.{body}.AA",
        f"{head}.{not_utf8}.AA",
        f"{header(alg='ES256', kid={'a': 1})}.{body}.AA",
        f"{header(alg='ES256', kid='k' * 6000)}.{body}.AA",
        f"{header(alg='ES256', kid='a' + chr(0))}.{body}.AA",
        f"{header(alg=['ES256'])}.{body}.AA",
        f"{header(alg='ES256', crit=['exp'])}.{body}.AA",
        f"{head}.{payload(sub='a' + chr(0))}.AA",
        f"{head}.{payload(sub=chr(0xD800))}.AA",
        f"{head}.{body}.{'A' * 5000}",
        f"{head}.{body}.!!!!",
    ]


def _weak_rsa() -> RSAKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RSAKey.generate_key(1024, private=True, auto_kid=True)


def test_crafted_client_assertions_are_401_never_500(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    for assertion in _crafted_assertions(key, service["client_id"], live.issuer):
        for path in ("/token", "/revoke", "/introspect"):
            data = assertion_form(assertion, grant_type="client_credentials", token="t")
            response = requests.post(live.url + path, data=data, timeout=30)
            if response.status_code == 413:
                continue  # too large to read: refused before anything else
            assert response.status_code in (400, 401), (
                path,
                assertion[:80],
                response.status_code,
                response.text[:200],
            )
            assert response.json()["error"] in ("invalid_client", "invalid_request")


def test_raw_bytes_in_assertion_forms_are_never_500(
    live: LiveServer, keyed: tuple[dict, ECKey], idp: Idp, app_client: dict
) -> None:
    service, _ = keyed
    bodies = [
        b"grant_type=client_credentials&client_assertion_type="
        + ASSERTION_TYPE.encode()
        + b"&client_assertion=%FF%FE.%80.%00",
        b"grant_type=client_credentials&client_assertion_type="
        + ASSERTION_TYPE.encode()
        + b"&client_assertion=a.b.c&client_id=%ED%A0%80",
        b"grant_type=client_credentials&client_assertion_type=%00&client_assertion=x",
        b"grant_type=" + JWT_BEARER.encode() + b"&assertion=%FF%FE.%80.%00",
        b"grant_type=" + JWT_BEARER.encode() + b"&assertion=" + b"a" * 20_000,
        b"grant_type=" + JWT_BEARER.encode() + b"&assertion=a.b.c&resource=%00",
        b"grant_type=" + JWT_BEARER.encode() + b"&assertion=a.b.c&scope=%ED%A0%80",
    ]
    auth = (app_client["client_id"], app_client["client_secret"])
    for body in bodies:
        for use_auth in (False, True):
            if use_auth and b"client_assertion" in body:
                continue
            response = requests.post(
                live.url + "/token",
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                auth=auth if use_auth else None,
                timeout=30,
            )
            assert response.status_code in (400, 401), (
                body[:80],
                response.status_code,
                response.text[:200],
            )


def test_crafted_id_jags_are_invalid_grant_never_500(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict
) -> None:
    claims = idp.claims(app_client["client_id"], sub=employee["subject"])
    good_head = {"alg": "ES256", "kid": idp.key.kid, "typ": ID_JAG}
    odd = [
        signed_by_hand(idp.key, {**good_head, "kid": {"a": 1}}, claims),
        signed_by_hand(idp.key, {**good_head, "kid": 5}, claims),
        signed_by_hand(idp.key, {**good_head, "kid": "x" * 5000}, claims),
        signed_by_hand(idp.key, good_head, {**claims, "iss": "\ud800"}),
        signed_by_hand(idp.key, good_head, {**claims, "iss": idp.issuer + "\x00"}),
        signed_by_hand(idp.key, good_head, {**claims, "iss": ["x"]}),
        signed_by_hand(idp.key, good_head, {**claims, "iss": "i" * 100_00}),
        signed_by_hand(idp.key, good_head, {**claims, "scope": {"a": 1}}),
        signed_by_hand(
            idp.key,
            good_head,
            {**claims, "sub": "fresh", "email": ["x"], "email_verified": True},
        ),
        signed_by_hand(
            idp.key,
            good_head,
            {**claims, "sub": "fresh", "email": "\ud800@x.y", "email_verified": True},
        ),
        signed_by_hand(idp.key, good_head, {**claims, "resource": "\x00"}),
        signed_by_hand(idp.key, good_head, {**claims, "resource": "r" * 10_000}),
        signed_by_hand(idp.key, good_head, {**claims, "jti": "j" * 10_000}),
        signed_by_hand(idp.key, good_head, {**claims, "jti": "\ud800"}),
        signed_by_hand(idp.key, good_head, {**claims, "client_id": "\ud800"}),
    ]
    for assertion in odd:
        response = id_jag_grant(live, app_client, assertion)
        assert response.status_code == 400, (response.status_code, response.text[:200])
        assert response.json()["error"] in (
            "invalid_grant",
            "invalid_target",
            "invalid_scope",
            "invalid_request",
        )


@pytest.mark.parametrize(
    "metadata",
    [
        {"jwks": "PUBLIC_NUL_KID"},
        {"jwks": "PUBLIC_NUL_MEMBER"},
        {"jwks": "PUBLIC_SURROGATE"},
        {"jwks": "PUBLIC_NAN"},
        {"jwks": "ELEVEN_KEYS"},
        {"jwks": "RSA_1024"},
        {"jwks": "ENC_USE"},
        {"jwks": [1]},
        {"jwks": "x"},
        {"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}},
        {"jwks_uri": 5},
        {"jwks_uri": "http://127.0.0.1:1/\x00"},
        {"jwks_uri": "\ud800"},
        {"jwks_uri": "http://169.254.169.254/latest/meta-data"},
        {"jwks_uri": "ftp://127.0.0.1/jwks"},
        {"jwks_uri": "http://user:pw@127.0.0.1/jwks"},
        {"jwks_uri": "https://" + "a" * 3000 + ".example/"},
        {"jwks": "PUBLIC", "jwks_uri": "http://127.0.0.1:1/jwks"},
        {},
    ],
    ids=lambda m: repr(m)[:50],
)
def test_crafted_registrations_of_keyed_clients_are_invalid_client_metadata(
    live: LiveServer, metadata: dict[str, Any]
) -> None:
    public = ec_key().as_dict(private=False)
    special: dict[str, Callable[[], Any]] = {
        "PUBLIC": lambda: {"keys": [public]},
        "PUBLIC_NUL_KID": lambda: {"keys": [{**public, "kid": "a\x00b"}]},
        "PUBLIC_NUL_MEMBER": lambda: {"keys": [{**public, "x5t": "a\x00b"}]},
        "PUBLIC_SURROGATE": lambda: {"keys": [{**public, "note": "\ud800"}]},
        "ELEVEN_KEYS": lambda: public_set(*[ec_key(str(n)) for n in range(11)]),
        "RSA_1024": lambda: {"keys": [_weak_rsa().as_dict(private=False)]},
        "ENC_USE": lambda: {"keys": [{**public, "use": "enc"}]},
    }
    body: dict[str, Any] = {
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "private_key_jwt",
    }
    for name, value in metadata.items():
        known = isinstance(value, str) and value in special
        body[name] = special[value]() if known else value
    if metadata.get("jwks") == "PUBLIC_NAN":
        text = json.dumps({**body, "jwks": {"keys": [public]}})
        text = text.replace('"kty"', '"note": NaN, "kty"', 1)
    else:
        text = json.dumps(body)
    response = requests.post(
        live.url + "/register",
        data=text.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_oauth_error(response, 400, "invalid_client_metadata")


@pytest.mark.parametrize(
    "problem", ["nul_kid", "surrogate", "nan", "weak_rsa", "private"]
)
def test_the_operator_command_refuses_bad_key_files_in_one_line(
    live: LiveServer, tmp_path: Any, problem: str
) -> None:
    public = ec_key().as_dict(private=False)
    text = {
        "nul_kid": lambda: json.dumps({"keys": [{**public, "kid": "a\x00b"}]}),
        "surrogate": lambda: json.dumps({"keys": [{**public, "note": "\ud800"}]}),
        "nan": lambda: json.dumps({"keys": [public]}).replace(
            '"kty"', '"n2": NaN, "kty"'
        ),
        "weak_rsa": lambda: json.dumps({"keys": [_weak_rsa().as_dict(private=False)]}),
        "private": lambda: json.dumps({"keys": [ec_key().as_dict(private=True)]}),
    }[problem]()
    path = tmp_path / "keys.json"
    path.write_text(text)
    result = cli(
        live,
        "clients",
        "create-service",
        "ci",
        "--resource",
        live.issuer + "/mcp",
        "--jwks-file",
        str(path),
    )
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert printed_json_or_none(cli(live, "clients", "list-services", "--json")) == []


def printed_json_or_none(result: Any) -> Any:
    return printed_json(result.output) if result.exit_code == 0 else None


# --- single use when Redis forgets ----------------------------------------------------


def test_a_spent_id_jag_is_not_good_again_after_redis_forgets(
    live: LiveServer, idp: Idp, employee: dict, app_client: dict, redis_client: Any
) -> None:
    """An ID-JAG lives up to an hour; its jti is remembered only in Redis. A
    Redis that restarts empty (or a failover to a replica behind) forgets
    every spent jti, and an assertion captured from a log or a proxy is good
    again for the rest of its hour. The denylist notices such a Redis and
    rebuilds from Postgres; spent assertions get no such care."""
    assertion = idp.assertion(app_client["client_id"], sub=employee["subject"])
    assert id_jag_grant(live, app_client, assertion).status_code == 200
    assert_oauth_error(id_jag_grant(live, app_client, assertion), 400, "invalid_grant")
    redis_client.flushdb()
    replayed = id_jag_grant(live, app_client, assertion)
    assert_oauth_error(replayed, 400, "invalid_grant")


def test_a_spent_client_assertion_is_not_good_again_after_redis_forgets(
    live: LiveServer, keyed: tuple[dict, ECKey], redis_client: Any
) -> None:
    service, key = keyed
    assertion = sign(key, client_claims(live, service["client_id"]))
    assert credentials_grant(live, assertion).status_code == 200
    assert_invalid_client(credentials_grant(live, assertion))
    redis_client.flushdb()
    assert_invalid_client(credentials_grant(live, assertion))


# --- a keyed client of open registration through the code and refresh grants ----------


def test_a_keyed_clients_refresh_token_needs_its_assertion(
    live: LiveServer, user: dict
) -> None:
    from helpers import get_code

    key = ec_key()
    browser = live.browser()
    client = register_client(
        browser,
        token_endpoint_auth_method="private_key_jwt",
        jwks=public_set(key),
        grant_types=["authorization_code", "refresh_token"],
    )
    assert "client_secret" not in client
    code, verifier, _ = get_code(browser, client, user)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": verifier,
    }
    # The code alone, or with the client's id, or another key's assertion: no.
    assert_invalid_client(post_token(live, form))
    assert_invalid_client(post_token(live, {**form, "client_id": client["client_id"]}))
    forged = sign(ec_key(), client_claims(live, client["client_id"]))
    assert_invalid_client(post_token(live, assertion_form(forged, **form)))
    good = sign(key, client_claims(live, client["client_id"]))
    tokens = post_token(live, assertion_form(good, **form))
    assert tokens.status_code == 200, tokens.text
    refresh_token = tokens.json()["refresh_token"]
    refresh = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    assert_invalid_client(
        post_token(live, {**refresh, "client_id": client["client_id"]})
    )
    forged = sign(ec_key(), client_claims(live, client["client_id"]))
    assert_invalid_client(post_token(live, assertion_form(forged, **refresh)))
    good = sign(key, client_claims(live, client["client_id"]))
    assert post_token(live, assertion_form(good, **refresh)).status_code == 200


def test_a_service_client_name_is_shown_as_text(live: LiveServer) -> None:
    alice = make_user(live, "alice@example.com")
    a = live.browser()
    a.login(alice["email"], alice["password"])
    name = '<img src=x onerror="alert(1)">'
    _create_on_page(a, name=name)
    page = a.get("/account")
    assert name not in page.text
    assert "&lt;img" in page.text


def test_an_all_zero_ecdsa_signature_is_refused(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    """The "psychic signature" (r = s = 0) that once verified anything."""
    service, key = keyed
    claims = client_claims(live, service["client_id"])
    token = unsigned({"alg": "ES256", "kid": key.kid}, claims, b64(bytes(64)))
    assert_invalid_client(credentials_grant(live, token))


@pytest.mark.parametrize("grant", ["client_credentials", "id_jag"])
def test_assertions_without_redis_are_a_clear_503(
    make_server: Callable[..., LiveServer],
    doomed_redis: Any,
    documents: DocumentServer,
    tmp_path: Any,
    grant: str,
) -> None:
    live = make_server(REDIS_URL=doomed_redis.url, CIMD_ALLOW_LOOPBACK="on")
    key = ec_key()
    service = create_service(live, keys=public_set(key), tmp_path=tmp_path)
    provider = Idp(live, documents)
    trust(live, provider.issuer, provider.jwks_uri)
    person = make_user(live, "employee@example.com")
    _link(live, person, provider.issuer, "00u-1")
    client = register_client(live.browser())
    doomed_redis.stop()
    if grant == "client_credentials":
        response = credentials_grant(
            live, sign(key, client_claims(live, service["client_id"]))
        )
    else:
        response = id_jag_grant(
            live, client, provider.assertion(client["client_id"], sub="00u-1")
        )
    assert_oauth_error(response, 503, "temporarily_unavailable")


def test_a_trusted_issuers_verified_email_names_only_an_existing_account(
    live: LiveServer, idp: Idp, app_client: dict
) -> None:
    """An email names an account only for a domain the operator listed (never
    for Entra, never a new account): it is compared as an address, and an
    unknown one gets nothing."""
    person = make_user(live, "linked@example.com")
    unlisted = idp.assertion(
        app_client["client_id"],
        sub="first-subject",
        email="linked@example.com",
        email_verified=True,
    )
    assert_oauth_error(id_jag_grant(live, app_client, unlisted), 400, "invalid_grant")
    trust(live, idp.issuer, idp.jwks_uri, "--email-domain", "example.com")
    assertion = idp.assertion(
        app_client["client_id"],
        sub="first-subject",
        email="Linked@Example.com",
        email_verified=True,
    )
    response = id_jag_grant(live, app_client, assertion)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["sub"] == person["id"]
    # No account is ever made for an unknown email.
    nobody = idp.assertion(
        app_client["client_id"],
        sub="stranger",
        email="nobody@example.com",
        email_verified=True,
    )
    assert_oauth_error(id_jag_grant(live, app_client, nobody), 400, "invalid_grant")


# --- keys that cost the server more than the attacker ---------------------------------


def _costly_rsa_jwk(kid: str) -> dict[str, str]:
    """A 3072-bit RSA "public key" whose exponent is as long as its modulus:
    each verification is a full-length modular exponentiation (~15 ms, a
    hundred times a normal one). Nothing but e < n and oddness is checked."""
    bits = 3072
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    e = secrets.randbits(bits - 2) | (1 << (bits - 3)) | 1

    def encode(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": kid, "n": encode(n), "e": encode(e)}


def test_rsa_keys_with_huge_public_exponents_are_refused(live: LiveServer) -> None:
    """Open registration lets anyone store ten such keys; an assertion naming
    no kid (or their shared kid) with any signature at all then costs ten
    full-length exponentiations before the 401. NIST SP 800-56B wants
    65537 <= e < 2**256; a key set here should too."""
    jwks = {"keys": [_costly_rsa_jwk("same") for _ in range(10)]}
    response = requests.post(
        live.url + "/register",
        json={
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks,
        },
        timeout=30,
    )
    if response.status_code == 201:
        client_id = response.json()["client_id"]
        claims = client_claims(live, client_id)
        forged = unsigned({"alg": "RS256", "kid": "same"}, claims, b64(b"\x01" * 384))
        started = time.monotonic()
        for _ in range(5):
            assert_invalid_client(_revoke_with(live, forged))
        per_request = (time.monotonic() - started) / 5
        pytest.fail(
            f"registered; each forged assertion then cost {per_request * 1000:.0f} ms"
        )
    assert_oauth_error(response, 400, "invalid_client_metadata")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "2130706433",
        "0x7f.1",
        "127.1",
        "017700000001",
    ],
)
def test_without_loopback_no_key_set_url_reaches_this_host(
    make_server: Callable[..., LiveServer], documents: DocumentServer, host: str
) -> None:
    """SSRF through a client's ``jwks_uri``: however the address is spelled,
    a server that may not fetch from loopback never connects there."""
    live = make_server()
    uri = f"https://{host}:{documents.port}/jwks.json"
    response = requests.post(
        live.url + "/register",
        json={
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": uri,
        },
        timeout=30,
    )
    if response.status_code == 201:
        client_id = response.json()["client_id"]
        assertion = sign(ec_key(), client_claims(live, client_id))
        assert_invalid_client(_revoke_with(live, assertion))
    else:
        assert_oauth_error(response, 400, "invalid_client_metadata")
    assert documents.connections == 0


def test_a_keyed_client_trades_an_id_jag_with_one_jti_in_both_assertions(
    live: LiveServer, idp: Idp, employee: dict
) -> None:
    """A client assertion and an identity assertion have different signers:
    one jti in each is no replay, and neither spends the other."""
    key = ec_key()
    client = register_client(
        live.browser(),
        token_endpoint_auth_method="private_key_jwt",
        jwks=public_set(key),
    )
    jti = secrets.token_urlsafe(12)
    own = sign(key, client_claims(live, client["client_id"], jti=jti))
    id_jag = idp.assertion(client["client_id"], sub=employee["subject"], jti=jti)
    data = assertion_form(own, grant_type=JWT_BEARER, assertion=id_jag)
    response = post_token(live, data)
    assert response.status_code == 200, response.text
    # Each is spent now, on its own.
    assert_invalid_client(post_token(live, data))
    fresh = sign(key, client_claims(live, client["client_id"]))
    again = assertion_form(fresh, grant_type=JWT_BEARER, assertion=id_jag)
    assert_oauth_error(post_token(live, again), 400, "invalid_grant")


def test_fractional_times_and_a_list_audience_are_understood(
    live: LiveServer, keyed: tuple[dict, ECKey]
) -> None:
    service, key = keyed
    now = time.time()
    claims = client_claims(
        live,
        service["client_id"],
        exp=now + 90.5,
        iat=now - 0.5,
        aud=[live.issuer, "https://other.example"],
    )
    response = credentials_grant(live, sign(key, claims))
    assert response.status_code == 200, response.text
    # The same jti once more, as a float exp a hair later: still a replay.
    claims["exp"] = claims["exp"] + 0.25
    assert_invalid_client(credentials_grant(live, sign(key, claims)))


# --- an identity linked by an assertion is no way to sign in -------------------------


def test_an_id_jag_email_link_does_not_become_a_way_to_sign_in(
    make_server: Callable[..., LiveServer],
    oidc_provider: Any,
    documents: DocumentServer,
) -> None:
    """The company's IdP is both a sign-in provider here and a trusted ID-JAG
    issuer (one Okta org, say). Signing in through the provider with a
    verified email that is a password account's never takes that account
    over: the person must prove the account first (tests/test_provider_link).
    An ID-JAG carrying the same verified email names no one, even with its
    domain listed: the person links by signing in. And nothing it did makes
    the provider's person able to sign in to the account on the web (its
    keys, consents, service clients)."""
    from oidc_upstream import provider_sign_in

    server = make_server(CIMD_ALLOW_LOOPBACK="on", **oidc_provider.settings())
    make_user(server, "alice@example.com")
    # Before: the provider's "alice" must prove the account.
    before = provider_sign_in(server.browser(), "alice")
    assert before.status_code == 200
    assert select_one(before, "#link-needed")

    # The operator trusts the same issuer for ID-JAGs (the stand-in keys are
    # served here; the IdP's own would be at its jwks_uri), emails included.
    key = ec_key("idp")
    documents.respond("/okta/jwks", json.dumps(public_set(key)))
    trust(
        server,
        oidc_provider.issuer,
        documents.url("/okta/jwks"),
        "--email-domain",
        "example.com",
    )
    client = register_client(server.browser())
    now = int(time.time())
    id_jag = sign(
        key,
        {
            "iss": oidc_provider.issuer,
            "sub": "alice",
            "aud": server.issuer,
            "client_id": client["client_id"],
            "resource": server.issuer + "/mcp",
            "scope": "read",
            "email": "alice@example.com",
            "email_verified": True,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(12),
        },
        typ=ID_JAG,
    )
    refused = id_jag_grant(server, client, id_jag)
    assert_oauth_error(refused, 400, "invalid_grant")

    browser = server.browser()
    after = provider_sign_in(browser, "alice")
    assert after.status_code == 200, after.status_code
    assert select_one(after, "#link-needed"), "signed in to alice's account"
    assert browser.get("/account").status_code == 302


def test_concurrent_first_assertions_of_one_person_never_500(
    live: LiveServer, idp: Idp, app_client: dict
) -> None:
    """Six first assertions of one (issuer, subject) at once, each naming the
    person by email: none may crash, and all are served."""
    make_user(live, "racer@example.com")
    trust(live, idp.issuer, idp.jwks_uri, "--email-domain", "example.com")
    assertions = [
        idp.assertion(
            app_client["client_id"],
            sub="racer",
            email="racer@example.com",
            email_verified=True,
        )
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(assertions))

    def attempt(assertion: str) -> int:
        barrier.wait()
        return id_jag_grant(live, app_client, assertion).status_code

    with ThreadPoolExecutor(len(assertions)) as pool:
        statuses = list(pool.map(attempt, assertions))
    assert statuses == [200] * len(assertions), statuses
