"""Reading the key settings (``JWT_SIGNING_KEY``, ``JWT_VERIFY_KEYS``) from PEM,
and making the keys the service manages itself (app/signing_keys.py).

A validation helper of :mod:`app.config`, which refuses at start-up a key that
could not sign later; :mod:`app.oauth.keys` builds the key ring from what it
reads. Imports nothing from app/.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

#: One PEM block (RFC 7468 §2); its label must match at both ends.
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)

#: The key types accepted (RS256, ES256 and EdDSA), as configuration errors name them.
ACCEPTED = "an RSA, EC P-256 or Ed25519 key"
#: NIST SP 800-131A: RSA keys shorter than this no longer sign.
MIN_RSA_BITS = 2048
#: The size of the RSA keys the service makes: what verifiers expect, and
#: signing stays cheap (``make bench``).
GENERATED_RSA_BITS = 2048
#: What the service may make its own keys for (``SIGNING_KEY_ALGORITHM``).
GENERATED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
#: Each accepted algorithm's joserfc key class.
KEY_CLASSES: dict[str, type[Key]] = {"RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}


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
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"must be an RSA key of {MIN_RSA_BITS} bits or more,"
                f" not {public_key.key_size}"
            )
        return "RS256"
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
    return algorithm, KEY_CLASSES[algorithm].import_key(pem)


@functools.lru_cache(maxsize=32)
def load_signing_key(text: str) -> tuple[str, Key, Key]:
    """Read ``JWT_SIGNING_KEY``: ``(algorithm, private key, public key)``.

    Remembered by text: loading an RSA key checks it, 70 to 100 ms of CPU
    each time, and the service's own keys are read again with every key
    ring a process builds (at least once a minute, app/signing_keys.py).
    The keys are only read from, never changed.
    """
    blocks = pem_blocks(text)
    if len(blocks) != 1 or "PRIVATE KEY" not in blocks[0][0]:
        raise ValueError(f"must be one PEM private key, {ACCEPTED}")
    private = _load_private(blocks[0][1])
    algorithm, public = _public_jwk(private.public_key())
    return algorithm, KEY_CLASSES[algorithm].import_key(blocks[0][1]), public


def generate_private_pem(algorithm: str) -> bytes:
    """A new private key for ``algorithm`` (RS256, ES256 or EdDSA), as
    unencrypted PKCS #8 PEM; sealed by the caller before it is stored."""
    private: Any
    if algorithm == "RS256":
        private = rsa.generate_private_key(
            public_exponent=65537, key_size=GENERATED_RSA_BITS
        )
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"cannot make a key for {algorithm}")
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


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
