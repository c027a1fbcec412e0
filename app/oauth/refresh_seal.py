"""A rotation's answer, sealed for whoever holds the token it rotated out.

Two processes of one client often refresh with the same token at once, and
an answer can be lost on the way. Within the grace window, presenting the
rotated-out token again is answered with what the rotation answered: the
same successor refresh token and the same access token, not a fresh one each
time (docs/reference.md, "Refresh tokens").

The answer is stored beside the successor, in Postgres, encrypted (AES-GCM)
under a key derived from the rotated-out token. Postgres keeps only that
token's hash, so the database alone cannot open the answer; only someone
presenting the old token can, and that person could obtain the same answer
by refreshing. Nothing lives in Redis, which may restart empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_SEAL_LABEL = b"refresh-token-successor"
_NONCE_BYTES = 12


@dataclass(frozen=True)
class RotationAnswer:
    """What a rotation answered: the successor and, if known, its access token."""

    refresh_token: str
    access_token: str | None = None
    scope: str = ""
    #: When ``access_token`` expires (seconds since the epoch).
    expires_at: int = 0


def _seal_key(parent_token: str) -> bytes:
    # A keyed derivation, not the stored hash: the hash cannot unseal.
    return hmac.new(parent_token.encode(), _SEAL_LABEL, hashlib.sha256).digest()


def seal(answer: RotationAnswer, parent_token: str) -> str:
    plain = json.dumps(
        {
            "refresh_token": answer.refresh_token,
            "access_token": answer.access_token,
            "scope": answer.scope,
            "expires_at": answer.expires_at,
        },
        separators=(",", ":"),
    )
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_seal_key(parent_token)).encrypt(nonce, plain.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(sealed: str | None, parent_token: str) -> RotationAnswer | None:
    """Open a sealed answer; ``None`` if there is none or the token is wrong."""
    if not sealed:
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        plain = AESGCM(_seal_key(parent_token)).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None
        )
    except (InvalidTag, ValueError, binascii.Error):
        return None
    return _parse(plain.decode())


def _parse(plain: str) -> RotationAnswer:
    # Rows sealed before answers were kept hold the bare successor.
    if not plain.startswith("{"):
        return RotationAnswer(refresh_token=plain)
    fields: dict[str, Any] = json.loads(plain)
    return RotationAnswer(
        refresh_token=str(fields["refresh_token"]),
        access_token=fields.get("access_token"),
        scope=str(fields.get("scope") or ""),
        expires_at=int(fields.get("expires_at") or 0),
    )
