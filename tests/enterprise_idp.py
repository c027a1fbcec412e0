"""A stand-in enterprise identity provider that issues ID-JAGs.

It plays the IdP of enterprise-managed authorization (the Identity Assertion
JWT Authorization Grant, ``typ: oauth-id-jag+jwt``): it holds a signing key,
serves its JWK Set over plain HTTP on 127.0.0.1 from a thread (the service
under test runs with ``CIMD_ALLOW_LOOPBACK=on``), can rotate that key, and
mints assertions whose every claim and header may be overridden. It can also
forge the classic attacks (``alg: none``, HS256 keyed with the public key, a
foreign key under the right ``kid``), built by hand where no library would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import warnings
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeyParameters, OctKey, RSAKey
from joserfc.jws import JWSRegistry

#: The ID-JAG's media type (header ``typ``).
ID_JAG_TYP = "oauth-id-jag+jwt"

#: Leave a claim or header out: ``idp.mint(jti=OMIT)``, ``header={"typ": OMIT}``.
OMIT: Any = object()

Key = RSAKey | ECKey
#: What may sign an assertion here, a shared secret included (for attacks).
AnyKey = RSAKey | ECKey | OctKey


def new_key(
    alg: str = "RS256", kid: str | None = None, bits: int = 2048, exponent: int = 65537
) -> Key:
    """A fresh private key for ``alg`` (RS256 or ES256) named ``kid``; an RSA
    key of ``bits`` with public ``exponent``."""
    parameters: KeyParameters = {
        "kid": kid or secrets.token_hex(8),
        "alg": alg,
        "use": "sig",
    }
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(exponent, bits)
        with warnings.catch_warnings():
            # joserfc warns of keys under 2048 bits: weak ones are made on purpose.
            warnings.simplefilter("ignore", SecurityWarning)
            return RSAKey.import_key(private, parameters=parameters)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters)
    raise ValueError(f"no key for {alg}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not OMIT}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, idp: EnterpriseIdp) -> None:
        self.idp = idp
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        idp = self.server.idp
        with idp.lock:
            idp.requests[self.path] += 1
            body = json.dumps(idp.jwks()).encode() if self.path == "/jwks" else None
        if idp.delay:
            time.sleep(idp.delay)  # a slow IdP: fetches overlap
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EnterpriseIdp:
    """An IdP at ``http://127.0.0.1:PORT`` (its issuer, unless ``issuer`` names
    another) with its JWKS at ``/jwks``.

    ``audience`` (the service's issuer), ``client_id`` and ``resource`` are the
    defaults of the assertions it mints; :meth:`mint` overrides any of them.
    """

    def __init__(
        self,
        alg: str = "RS256",
        audience: str = "",
        client_id: str = "",
        resource: str = "",
        issuer: str | None = None,
    ) -> None:
        self.alg = alg
        self.key = new_key(alg)
        #: The keys the JWKS publishes (public halves only are served).
        self.published: list[Key] = [self.key]
        #: Further JWKs served as given (a symmetric key an IdP should never
        #: publish, for one).
        self.extra_jwks: list[dict[str, Any]] = []
        #: Seconds the JWKS takes to answer.
        self.delay = 0.0
        self.audience = audience
        self.client_id = client_id
        self.resource = resource
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.httpd = _Server(self)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        #: Its own URL, unless it plays an issuer elsewhere (its keys still here).
        self.issuer = issuer or self.url
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks"

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def jwks(self) -> dict[str, Any]:
        keys = [key.as_dict(private=False) for key in self.published]
        return {"keys": keys + self.extra_jwks}

    def use(self, key: Key) -> None:
        """Sign with ``key`` from now on, and publish it alone."""
        with self.lock:
            self.key = key
            self.published = [key]

    def rotate(self, keep_old: bool = False) -> Key:
        """Sign with a new key (a new ``kid``) from now on; publish it, and the
        old one too when ``keep_old``."""
        with self.lock:
            self.key = new_key(self.alg)
            self.published = [*self.published, self.key] if keep_old else [self.key]
        return self.key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """An ID-JAG's claims: good ones, with ``overrides`` (``OMIT`` drops one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "employee-1",
            "aud": self.audience,
            "client_id": self.client_id,
            "resource": self.resource,
            "scope": "read write",
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return _present(claims)

    def header(self, key: AnyKey | None = None, **overrides: Any) -> dict[str, Any]:
        key = key or self.key
        header = {"typ": ID_JAG_TYP, "alg": self.alg, "kid": key.kid}
        header.update(overrides)
        return _present(header)

    def mint(
        self,
        header: dict[str, Any] | None = None,
        key: AnyKey | None = None,
        **claims: Any,
    ) -> str:
        """A signed ID-JAG: ``claims`` override the good claims, ``header`` the
        good header (``typ``, ``alg``, ``kid``); ``key`` signs instead of the
        IdP's current key."""
        signing_key = key or self.key
        protected = self.header(signing_key, **(header or {}))
        payload = json.dumps(self.claims(**claims), separators=(",", ":"))
        # jws, not jwt.encode: that one would add ``typ: JWT`` where it is left out.
        return jws.serialize_compact(
            protected, payload, signing_key, algorithms=[protected["alg"]]
        )

    def signed_as_given(
        self,
        header: dict[str, Any],
        key: Key | None = None,
        payload: bytes | None = None,
        **claims: Any,
    ) -> str:
        """Signed with the header exactly as given, which no library would
        write (an unknown ``crit`` extension), over ``payload`` if given (any
        bytes), else the claims: the signature computed here."""
        signing_key = key or self.key
        protected = self.header(signing_key, **header)
        body = (
            b64url(payload) if payload is not None else b64json(self.claims(**claims))
        )
        signing_input = f"{b64json(protected)}.{body}"
        algorithm = JWSRegistry.algorithms[protected["alg"]]
        signature = algorithm.sign(signing_input.encode(), signing_key)
        return f"{signing_input}.{b64url(signature)}"

    def unsigned(self, alg: str = "none", **claims: Any) -> str:
        """``alg: none`` (or ``alg`` as spelled), no signature: accepted by
        nothing sound."""
        header = _present({"typ": ID_JAG_TYP, "alg": alg, "kid": self.kid})
        return f"{b64json(header)}.{b64json(self.claims(**claims))}."

    def hs256_with_public_key(self, **claims: Any) -> str:
        """HS256, its HMAC keyed with the IdP's public key (PEM), the old
        algorithm-confusion attack on verifiers that take the key as given."""
        header = {"typ": ID_JAG_TYP, "alg": "HS256", "kid": self.kid}
        signing_input = f"{b64json(header)}.{b64json(self.claims(**claims))}"
        secret = self.key.as_pem(private=False)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def foreign(self, **claims: Any) -> str:
        """Signed by a key that is not the IdP's, under the IdP's ``kid``."""
        impostor = new_key(self.alg, kid=self.kid)
        return self.mint(key=impostor, **claims)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
