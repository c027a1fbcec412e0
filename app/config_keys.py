"""Reading the key settings (``JWT_SIGNING_KEY``, ``JWT_VERIFY_KEYS``) from PEM.

A validation helper of :mod:`app.config`, which refuses at start-up a key that
could not sign later; :mod:`app.oauth.keys` builds the key ring from what it
reads. Imports nothing from app/.
"""

from __future__ import annotations

import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, Key, OKPKey

#: One PEM block (RFC 7468 §2); its label must match at both ends.
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)

#: The key types accepted (ES256 and EdDSA), as configuration errors name them.
ACCEPTED = "an EC P-256 or Ed25519 key"


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
