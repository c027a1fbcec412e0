"""What the grants ``make bench`` times consume, made in process beforehand.

A refresh token, a device code, an identity assertion and a refresh token
to revoke are each good for one request. Going through the front door for
each (consent, a code exchange, a device authorization) would take longer
than the timed run itself, so they are made here with the app's own
functions and models, as the endpoints that normally make them would, and
the timed requests each take a fresh one (``tools/bench_wrk.lua``).

The service client and the trusted identity issuer are made once, as an
operator's command would make them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench_servers import app_for

#: Saves that many fresh one-use credentials and returns them.
Mint = Callable[[int], list[str]]
#: Rows inserted per statement.
BATCH = 1000
#: The identity assertion's media type (``typ``).
ID_JAG_TYPE = "oauth-id-jag+jwt"
#: The bench person's subject at the identity issuer.
SUBJECT = "bench-employee"


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def _chain_starts(
    tokens: list[str],
    consents: list[tuple[uuid.UUID, uuid.UUID]],
    client_id: str,
    scope: str,
) -> list[dict[str, Any]]:
    """The rows :func:`app.oauth.refresh_store.issue` writes for a chain's
    first token (as a code exchange begins it), one per token; ``consents``:
    each token's (consent id, person id)."""
    from app.config import current_settings
    from app.models import utcnow
    from app.oauth.refresh_store import hash_token
    from app.oauth.resources import builtin_resource

    settings = current_settings()
    resource = builtin_resource(settings)
    now = utcnow()
    ends = now + timedelta(seconds=settings.refresh_token_ttl)
    return [
        {
            "id": uuid.uuid4(),
            "token_hash": hash_token(token),
            "consent_id": consent_id,
            "client_id": client_id,
            "user_id": user_id,
            "scope": scope,
            "resource": resource.uri,
            "issued_at": now,
            "chain_expires_at": ends,
        }
        for token, (consent_id, user_id) in zip(tokens, consents, strict=True)
    ]


def _insert(model: Any, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    from app.db import db

    for batch in _batches(rows):
        db.session.execute(insert(model), batch)


@contextlib.contextmanager
def refresh_minter(env: dict[str, str], client_id: str, user_id: str) -> Iterator[Mint]:
    """Yield ``mint(count)``: refresh tokens, each the first of its own chain
    under the person's one live consent to ``client_id`` (as many code
    exchanges would have begun). A token is refreshed once; presented again
    it would be a repeat (the grace window's answer) or reuse, which ends
    the consent."""
    from app.config import current_settings
    from app.db import db
    from app.models import RefreshToken
    from app.oauth.consent import find_consent
    from app.oauth.refresh_store import new_refresh_token
    from app.oauth.resources import builtin_resource

    with app_for(env) as app:

        def mint(count: int) -> list[str]:
            with app.app_context(), db.transaction():
                resource = builtin_resource(current_settings()).uri
                consent = find_consent(uuid.UUID(user_id), client_id, resource)
                if consent is None:
                    raise SystemExit(f"the bench person approved no {client_id}")
                tokens = [new_refresh_token() for _ in range(count)]
                pairs = [(consent.id, consent.user_id)] * count
                rows = _chain_starts(tokens, pairs, client_id, consent.scope)
                _insert(RefreshToken, rows)
            return tokens

        yield mint


@contextlib.contextmanager
def revocable_minter(env: dict[str, str], client_id: str) -> Iterator[Mint]:
    """Yield ``mint(count)``: live refresh tokens of ``client_id``, each under
    the consent of a person of its own.

    Revoking a live refresh token ends the whole consent it hangs on
    (docs/reference.md, ``POST /revoke``), after which the consent's other
    tokens would change nothing: every revocation needs a consent of its
    own, and a person holds one live consent per client and resource.
    """
    from app.config import current_settings
    from app.db import db
    from app.models import Consent, RefreshToken, User, utcnow
    from app.oauth.refresh_store import new_refresh_token
    from app.oauth.resources import builtin_resource

    with app_for(env) as app:

        def mint(count: int) -> list[str]:
            with app.app_context(), db.transaction():
                resource = builtin_resource(current_settings())
                scope = " ".join(resource.scope_names)
                now = utcnow()
                people = [uuid.uuid4() for _ in range(count)]
                consents = [uuid.uuid4() for _ in range(count)]
                _insert(
                    User,
                    [
                        {
                            "id": p,
                            "email": f"revoke-{p}@bench.example",
                            "is_active": True,
                        }
                        for p in people
                    ],
                )
                _insert(
                    Consent,
                    [
                        {
                            "id": c,
                            "user_id": p,
                            "client_id": client_id,
                            "scope": scope,
                            "resource": resource.uri,
                            "approved_at": now,
                        }
                        for c, p in zip(consents, people, strict=True)
                    ],
                )
                tokens = [new_refresh_token() for _ in range(count)]
                pairs = list(zip(consents, people, strict=True))
                _insert(RefreshToken, _chain_starts(tokens, pairs, client_id, scope))
            return tokens

        yield mint


@contextlib.contextmanager
def device_code_minter(env: dict[str, str], client_id: str) -> Iterator[Mint]:
    """Yield ``mint(count)``: device codes of ``client_id`` that no one has
    decided on yet, stored as ``POST /device_authorization`` stores them.
    Each is polled once: the first poll is never too early (no
    ``slow_down``), so each answer is ``authorization_pending``."""
    from app.config import current_settings
    from app.oauth import device_codes
    from app.oauth.resources import builtin_resource

    with app_for(env) as app:

        def mint(count: int) -> list[str]:
            with app.app_context():
                settings = current_settings()
                resource = builtin_resource(settings)
                scope = " ".join(resource.scope_names)
                return [
                    device_codes.issue(
                        client_id, scope, resource.uri, settings.device_code_ttl
                    )[0]
                    for _ in range(count)
                ]

        yield mint


def service_client(env: dict[str, str]) -> tuple[str, str]:
    """A service client for the built-in resource with a secret
    (``client_secret_basic``), as ``flask --app app clients create-service``
    makes one; its id and secret."""
    from app import audit, service_clients
    from app.config import current_settings
    from app.db import db
    from app.oauth.resources import builtin_resource

    with app_for(env) as app, app.app_context(), db.transaction():
        made = service_clients.create(
            "bench service",
            builtin_resource(current_settings()),
            "",
            {},
            actor=audit.OPERATOR,
        )
    assert made.client_secret is not None
    return made.client_id, made.client_secret


class _KeySetHandler(BaseHTTPRequestHandler):
    server: _KeySetServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps(self.server.key_set).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _KeySetServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, key_set: dict[str, Any]) -> None:
        self.key_set = key_set
        super().__init__(("127.0.0.1", 0), _KeySetHandler)


@dataclass(frozen=True)
class IdentityIssuer:
    """An enterprise identity provider the app trusts: its issuer URL, which
    serves its JWK Set, and ``mint(count)`` for identity assertions (ID-JAG)
    about the bench person."""

    issuer: str
    mint: Mint


@contextlib.contextmanager
def identity_issuer(
    env: dict[str, str], client_id: str, user_id: str
) -> Iterator[IdentityIssuer]:
    """Serve an issuer's JWK Set from a thread, trust the issuer as
    ``flask --app app idps trust`` does, and give the bench person its
    identity (as signing in through it would have). The app fetches key
    sets from loopback only with ``CIMD_ALLOW_LOOPBACK=on``.

    The issuer signs with RS256, as most do; each assertion (``jti``) is
    good for one exchange."""
    from joserfc import jws
    from joserfc.jwk import KeyParameters, RSAKey

    from app import trusted_issuers
    from app.config import current_settings
    from app.db import db
    from app.models import Identity
    from app.oauth.resources import builtin_resource

    parameters: KeyParameters = {
        "alg": "RS256",
        "use": "sig",
        "kid": secrets.token_hex(8),
    }
    key = RSAKey.generate_key(2048, parameters=parameters)
    server = _KeySetServer({"keys": [key.as_dict(private=False)]})
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with app_for(env) as app:
            with app.app_context(), db.transaction():
                trusted_issuers.trust(issuer, issuer + "/jwks", False)
                _insert(
                    Identity,
                    [
                        {
                            "id": uuid.uuid4(),
                            "user_id": uuid.UUID(user_id),
                            "issuer": issuer,
                            "subject": SUBJECT,
                        }
                    ],
                )
            with app.app_context():
                settings = current_settings()
                audience = settings.issuer
                resource = builtin_resource(settings).uri
            header = {"typ": ID_JAG_TYPE, "alg": "RS256", "kid": key.kid}

            def mint(count: int) -> list[str]:
                now = int(time.time())
                claims = {
                    "iss": issuer,
                    "sub": SUBJECT,
                    "aud": audience,
                    "client_id": client_id,
                    "resource": resource,
                    "scope": "read write",
                    "iat": now,
                    "exp": now + 600,
                }
                return [
                    jws.serialize_compact(
                        header,
                        json.dumps({**claims, "jti": secrets.token_urlsafe(16)}),
                        key,
                        algorithms=["RS256"],
                    )
                    for _ in range(count)
                ]

            yield IdentityIssuer(issuer, mint)
    finally:
        server.shutdown()
        server.server_close()
