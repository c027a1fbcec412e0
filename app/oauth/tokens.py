"""Access tokens: JWTs (RFC 9068 profile), RS256/ES256/EdDSA or HS256 (see ``keys``).

Every token is one :class:`~.issuance.Issuance` signed: OAuth grants' through
Authlib's token generator hook (:class:`AccessTokenGenerator`), API-key
exchanges' through :func:`issue_access_token`. Both build their claims with
:func:`claims_of` and sign through :func:`sign_claims`;
:func:`decode_access_token` is the one verifier.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from ..config import Settings, current_settings
from ..denylist import process_cache
from ..signing_keys import cached_ring, reread_ring
from .issuance import Issuance
from .keys import KeyRing, key_ring, stored_key_ring
from .resources import Resource

#: RFC 9068 §2.1: access tokens are typed, so an ID token cannot pass for one.
TOKEN_TYPE = "at+jwt"
TOKEN_TYPES_ACCEPTED = (TOKEN_TYPE, "application/at+jwt")
#: The token type named in token responses (RFC 6749 §7.1).
TOKEN_TYPE_NAME = "bearer"
#: Private claim: the consent an OAuth token was issued under (app.denylist).
CONSENT_ID_CLAIM = "consent_id"
#: The ``via`` claim of tokens exchanged from an API key.
VIA_API_KEY = "api_key"


class InvalidAccessToken(Exception):
    """A token failed verification; deliberately carries no detail to callers."""


def keys_of(settings: Settings) -> KeyRing:
    """The signing and verifying keys of ``settings``, imported once."""
    if settings.managed_keys:
        return cached_ring(settings, stored_key_ring)
    return key_ring(
        settings.jwt_secret, settings.jwt_signing_key, settings.jwt_verify_keys
    )


def public_jwks(settings: Settings) -> dict[str, Any] | None:
    """The JWK Set to publish; ``None`` when tokens are HS256 (a secret key)."""
    return keys_of(settings).jwks


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def sign_claims(claims: dict[str, Any], settings: Settings) -> str:
    keys = keys_of(settings)
    header = {"alg": keys.algorithm, "typ": TOKEN_TYPE}
    if keys.kid:
        # RFC 7515 §4.1.4: verifiers pick the key from the JWK Set by kid.
        header["kid"] = keys.kid
    return jwt.encode(header, claims, keys.signing_key, registry=keys.signing_registry)


def claims_of(issuance: Issuance, issuer: str, now: int) -> dict[str, Any]:
    """The claims of the token ``issuance`` describes (RFC 9068 §2.2)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": issuance.subject,
        # RFC 8707: the resource the grant resolved.
        "aud": issuance.resource.uri,
        "iat": now,
        "exp": now + issuance.resource.access_token_ttl,
        "jti": issuance.jti,
        "scope": issuance.scope,
    }
    if issuance.client_id is not None:
        claims["client_id"] = issuance.client_id
    if issuance.consent_id is not None:
        claims[CONSENT_ID_CLAIM] = str(issuance.consent_id)
    if issuance.api_key_id is not None:
        claims["via"] = VIA_API_KEY
        claims["api_key_id"] = issuance.api_key_id
    return claims


def issue_access_token(issuance: Issuance) -> tuple[str, dict[str, Any]]:
    """Sign the token ``issuance`` describes; return it with its claims."""
    settings = current_settings()
    claims = claims_of(issuance, settings.issuer, int(time.time()))
    return sign_claims(claims, settings), claims


#: The process cache of tokens verified lately (app/process_cache.py):
#: (token, issuer, audience) -> its claims. An MCP client sends one token with
#: every call until it expires; a JWT never changes, so its signature and
#: claims verify the same every time and are checked once per process. An
#: entry expires with its token; nothing else evicts one (revocation is the
#: denylist's, checked by the caller on every use). Failures are not kept.
VERIFIED_CACHE = "verified-tokens"
#: Enough for every live token of a busy instance; beyond it, the oldest go.
VERIFIED_TOKENS_KEPT = 4096


@dataclass(frozen=True)
class VerifiedClaims:
    """The claims of a token whose signature and claims verified, and the
    ``kid`` of the key that verified it."""

    claims: Mapping[str, Any]
    kid: str | None


def decode_access_token(token: str, resource: Resource) -> dict[str, Any]:
    """Verify signature, type, issuer, audience and lifetime; return the claims.

    The audience must be ``resource``'s URI (RFC 8707, RFC 9068 §4): the
    caller names the resource the token is presented to.
    """
    settings = current_settings()
    audience = resource.uri
    cache = process_cache(VERIFIED_CACHE, VERIFIED_TOKENS_KEPT)
    cache_key = (token, settings.issuer, audience)
    known = cache.get(cache_key) if cache is not None else None
    keys = keys_of(settings)
    # Only while the key that verified it is still published: a key taken
    # out ends what it verified here too.
    if known is not None and known.kid in keys.verifying:
        return dict(known.claims)
    try:
        claims, kid = _verify(token, settings, keys, audience)
    except InvalidAccessToken:
        # A key published since this process read its ring (a rotation that
        # switched at once): read the ring again, at most every few seconds.
        if not (settings.managed_keys and _kid_of(token) not in keys.verifying):
            raise
        if not reread_ring():
            raise
        claims, kid = _verify(token, settings, keys_of(settings), audience)
    if cache is not None:
        # RFC 7519 §4.1.4: not on or after exp; verified above with no leeway.
        frozen = VerifiedClaims(MappingProxyType(dict(claims)), kid)
        cache.put(cache_key, frozen, until=claims["exp"])
    return claims


def _kid_of(token: str) -> Any:
    """The ``kid`` a token's header names, unverified (``None``: none)."""
    header = _unverified(token, 0)
    return header.get("kid") if header is not None else None


def audience_of(token: str) -> str | None:
    """The ``aud`` a token claims, unverified: only to choose the resource to
    verify it for (:func:`decode_access_token` then checks everything)."""
    claims = _unverified(token, 1)
    audience = claims.get("aud") if claims is not None else None
    return audience if isinstance(audience, str) else None


def _unverified(token: str, part: int) -> dict[str, Any] | None:
    """A JWT's header (0) or claims (1) as written, before any check."""
    try:
        segment = token.split(".")[part]
        value = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _verify(
    token: str, settings: Settings, keys: KeyRing, audience: str
) -> tuple[dict[str, Any], str | None]:
    try:
        decoded = jwt.decode(
            token,
            lambda obj: keys.key_for(obj.headers()),
            registry=keys.verifying_registry,
        )
        typ = decoded.header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES_ACCEPTED:
            raise InvalidAccessToken
        JWTClaimsRegistry(
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidAccessToken from exc
    claims = decoded.claims
    if not isinstance(claims.get("scope", ""), str):
        raise InvalidAccessToken
    return claims, decoded.header.get("kid")


class AccessTokenGenerator:
    """Authlib's token generator hook (``register_token_generator``).

    Authlib passes the grant's :class:`~.issuance.Issuance` as ``user``; the
    token is exactly what it describes. Authlib's own ``scope`` and
    ``expires_in`` are ignored: the grant decided both, and re-deriving the
    scope from the client would turn an empty one into the client's whole.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(
        self,
        grant_type: str,
        client: Any,
        user: Issuance,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        claims = claims_of(user, self.settings.issuer, int(time.time()))
        token: dict[str, Any] = {
            "token_type": TOKEN_TYPE_NAME,
            "access_token": sign_claims(claims, self.settings),
            "expires_in": user.resource.access_token_ttl,
        }
        if include_refresh_token and user.refresh_token is not None:
            token["refresh_token"] = user.refresh_token
        if user.scope:
            token["scope"] = user.scope
        return token
