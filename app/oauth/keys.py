"""The keys that sign and verify access tokens, and the public JWK Set (RFC 7517).

With ``JWT_SIGNING_KEY`` set, tokens are signed with that EC P-256 (ES256) or
Ed25519 (EdDSA) private key and name it by its RFC 7638 thumbprint in ``kid``;
the keys in ``JWT_VERIFY_KEYS`` are published and accepted beside it. Without
it, tokens are HS256 under ``JWT_SECRET``, which is never published.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import InvalidKeyIdError, InvalidKeyTypeError
from joserfc.jwa import EdDSAAlgorithm, JWSAlgModel, JWSRegistry
from joserfc.jwk import ECKey, Key, OctKey, OKPKey

#: The algorithm of deployments without a signing key.
HMAC_ALGORITHM = "HS256"

#: One PEM block (RFC 7468 §2); its label must match at both ends.
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)

#: The key types accepted (ES256 and EdDSA), as configuration errors name them.
ACCEPTED = "an EC P-256 or Ed25519 key"


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


def _normalise(text: str) -> str:
    # Platforms that cannot hold newlines in a variable get "\n" escapes.
    return text.replace("\\n", "\n").strip()


def pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """Split concatenated PEM blocks into ``(label, block)``; refuse other text."""
    text = _normalise(text)
    found = [(m.group(1), m.group(0).encode()) for m in PEM_BLOCK.finditer(text)]
    if not found or PEM_BLOCK.sub("", text).strip():
        raise ValueError("must be PEM blocks (RFC 7468) and nothing else")
    # `openssl ecparam -genkey` writes the curve's name in a block of its own.
    return [(label, block) for label, block in found if label != "EC PARAMETERS"]


def _describe(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA key"
    return "a key of another type"


def algorithm_of(public_key: Any) -> str:
    """The JWS algorithm of an accepted public key; ``ValueError`` for others."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return "ES256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"must be {ACCEPTED}, not {_describe(public_key)}")


def _load_private(block: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise ValueError("must not be encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a readable PEM private key") from None


def _public_jwk(public_key: Any) -> tuple[str, Key]:
    algorithm = algorithm_of(public_key)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key: Key = ECKey.import_key(pem) if algorithm == "ES256" else OKPKey.import_key(pem)
    return algorithm, key


def load_signing_key(text: str) -> tuple[str, Key, Key]:
    """Read ``JWT_SIGNING_KEY``: ``(algorithm, private key, public key)``."""
    blocks = pem_blocks(text)
    if len(blocks) != 1 or "PRIVATE KEY" not in blocks[0][0]:
        raise ValueError(f"must be one PEM private key, {ACCEPTED}")
    private = _load_private(blocks[0][1])
    algorithm, public = _public_jwk(private.public_key())
    key_class = ECKey if algorithm == "ES256" else OKPKey
    return algorithm, key_class.import_key(blocks[0][1]), public


def load_verify_keys(text: str) -> list[tuple[str, Key]]:
    """Read ``JWT_VERIFY_KEYS``: the public half of each PEM block, with its alg."""
    keys = []
    for label, block in pem_blocks(text):
        if "PRIVATE KEY" in label:
            public = _load_private(block).public_key()
        elif label == "PUBLIC KEY":
            try:
                public = serialization.load_pem_public_key(block)
            except (ValueError, UnsupportedAlgorithm):
                raise ValueError("holds an unreadable PEM public key") from None
        else:
            raise ValueError(f"holds a '{label}' block; only keys are accepted")
        keys.append(_public_jwk(public))
    return keys


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
    algorithms = sorted({entry.algorithm for entry in verifying.values()})
    return KeyRing(
        algorithm=algorithm,
        kid=current.kid,
        signing_key=private,
        verifying=verifying,
        signing_registry=TokenRegistry(algorithms=[algorithm]),
        verifying_registry=TokenRegistry(algorithms=algorithms),
        jwks={"keys": [_published(entry) for entry in verifying.values()]},
    )
