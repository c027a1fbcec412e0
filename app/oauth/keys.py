"""The keys that sign and verify access tokens, and the public JWK Set (RFC 7517).

With ``JWT_SIGNING_KEY`` set, tokens are signed with that RSA (RS256), EC
P-256 (ES256) or Ed25519 (EdDSA) private key and name it by its RFC 7638
thumbprint in ``kid``; the keys in ``JWT_VERIFY_KEYS`` are published and
accepted beside it. With ``JWT_SECRET`` instead, tokens are HS256 under it,
and it is never published. With neither, the keys are those the service
made itself (app/signing_keys.py), built into a ring by :func:`stored_key_ring`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from joserfc.errors import InvalidKeyIdError, InvalidKeyTypeError
from joserfc.jwa import EdDSAAlgorithm, JWSAlgModel, JWSRegistry
from joserfc.jwk import Key, OctKey

from ..config_keys import KEY_CLASSES, load_signing_key, load_verify_keys
from ..signing_keys import StoredKeys

#: The algorithm of deployments without a signing key.
HMAC_ALGORITHM = "HS256"


class _EdDSA(EdDSAAlgorithm):
    # RFC 9864 deprecates "EdDSA" for the fully specified "Ed25519", but PyJWT
    # and most deployed verifiers know only RFC 8037's "EdDSA". We sign with
    # Ed25519 keys alone, so the name is not ambiguous here.
    security_warning = None  # type: ignore[assignment]


_EDDSA = _EdDSA()


class TokenRegistry(JWSRegistry):
    """joserfc's JWS registry, with ``EdDSA`` usable without a warning."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name == _EDDSA.name and self.allowed and name in self.allowed:
            return _EDDSA
        return super().get_alg(name)


@dataclass(frozen=True)
class VerifyingKey:
    """A public key that verifies tokens, and the one algorithm it accepts."""

    kid: str | None
    algorithm: str
    key: Key


@dataclass(frozen=True)
class KeyRing:
    """The key that signs, every key that verifies, and what is published."""

    algorithm: str
    kid: str | None
    signing_key: Key
    verifying: dict[str | None, VerifyingKey]
    signing_registry: JWSRegistry
    verifying_registry: JWSRegistry
    #: The JWK Set document; ``None`` for HS256, whose key is secret.
    jwks: dict[str, Any] | None

    def key_for(self, header: dict[str, Any]) -> Key:
        """Pick the verifying key named by the JWS header's ``kid``; refuse others."""
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidKeyIdError
        found = self.verifying.get(kid)
        if found is None:
            raise InvalidKeyIdError
        # A key verifies only under its own algorithm (no algorithm confusion).
        if header.get("alg") != found.algorithm:
            raise InvalidKeyTypeError
        return found.key


def _published(entry: VerifyingKey) -> dict[str, Any]:
    # Only the public members (RFC 7517 §4, RFC 7518 §6.2.1, RFC 8037 §2).
    public = entry.key.as_dict(private=False)
    return {**public, "kid": entry.kid, "use": "sig", "alg": entry.algorithm}


@functools.lru_cache(maxsize=8)
def key_ring(
    secret: str | None, signing_pem: str | None, verify_pems: str | None
) -> KeyRing:
    """Import the configured keys once per configuration (not per request)."""
    if not signing_pem:
        if not secret:
            raise ValueError("JWT_SECRET is required when JWT_SIGNING_KEY is not set")
        key = OctKey.import_key(secret.encode())
        registry = TokenRegistry(algorithms=[HMAC_ALGORITHM])
        return KeyRing(
            algorithm=HMAC_ALGORITHM,
            kid=None,
            signing_key=key,
            verifying={None: VerifyingKey(None, HMAC_ALGORITHM, key)},
            signing_registry=registry,
            verifying_registry=registry,
            jwks=None,
        )
    algorithm, private, public = load_signing_key(signing_pem)
    current = VerifyingKey(public.thumbprint(), algorithm, public)
    verifying = {current.kid: current}
    for other_algorithm, other in load_verify_keys(verify_pems) if verify_pems else []:
        verifying.setdefault(
            other.thumbprint(), VerifyingKey(other.thumbprint(), other_algorithm, other)
        )
    return _asymmetric_ring(current, private, verifying)


def stored_key_ring(stored: StoredKeys) -> KeyRing:
    """The ring of the keys the service made itself, as stored now."""
    kid, algorithm, pem = stored.signing
    _, private, public = load_signing_key(pem.decode())
    verifying: dict[str | None, VerifyingKey] = {
        stored_kid: VerifyingKey(
            stored_kid, stored_algorithm, KEY_CLASSES[stored_algorithm].import_key(jwk)
        )
        for stored_kid, stored_algorithm, jwk in stored.published
    }
    current = VerifyingKey(kid, algorithm, public)
    verifying.setdefault(kid, current)
    return _asymmetric_ring(current, private, verifying)


def _asymmetric_ring(
    current: VerifyingKey, private: Key, verifying: dict[str | None, VerifyingKey]
) -> KeyRing:
    algorithms = sorted({entry.algorithm for entry in verifying.values()})
    return KeyRing(
        algorithm=current.algorithm,
        kid=current.kid,
        signing_key=private,
        verifying=verifying,
        signing_registry=TokenRegistry(algorithms=[current.algorithm]),
        verifying_registry=TokenRegistry(algorithms=algorithms),
        jwks={"keys": [_published(entry) for entry in verifying.values()]},
    )
