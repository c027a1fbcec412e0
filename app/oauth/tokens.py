"""Access tokens: JWTs (RFC 9068 profile), ES256/EdDSA or HS256 (see ``keys``).

OAuth tokens come out of Authlib's generator (:class:`AccessTokenGenerator`);
API-key tokens out of :func:`issue_access_token`. Both sign through
:func:`sign_claims`, and :func:`decode_access_token` is the one verifier.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from ..config import Settings, current_settings
from ..denylist import process_cache
from .keys import KeyRing, key_ring

#: RFC 9068 §2.1: access tokens are typed, so an ID token cannot pass for one.
TOKEN_TYPE = "at+jwt"
TOKEN_TYPES_ACCEPTED = (TOKEN_TYPE, "application/at+jwt")
#: The token type named in token responses (CONTRACT §4).
TOKEN_TYPE_NAME = "bearer"
#: Private claim: the consent an OAuth token was issued under (app.denylist).
CONSENT_ID_CLAIM = "consent_id"


class InvalidAccessToken(Exception):
    """A token failed verification; deliberately carries no detail to callers."""


def keys_of(settings: Settings) -> KeyRing:
    """The signing and verifying keys of ``settings``, imported once."""
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


def issue_access_token(
    subject: str, scope: str, extra: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Sign a token for ``subject``; return it with its claims."""
    settings = current_settings()
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": settings.mcp_resource,
        "iat": now,
        "exp": now + settings.access_token_ttl,
        "jti": new_jti(),
        "scope": scope,
        **(extra or {}),
    }
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
    """The claims of a token whose signature and claims verified."""

    claims: Mapping[str, Any]


def decode_access_token(token: str) -> dict[str, Any]:
    """Verify signature, type, issuer, audience and lifetime; return the claims."""
    settings = current_settings()
    cache = process_cache(VERIFIED_CACHE, VERIFIED_TOKENS_KEPT)
    cache_key = (token, settings.issuer, settings.mcp_resource)
    known = cache.get(cache_key) if cache is not None else None
    if known is not None:
        return dict(known.claims)
    claims = _verify(token, settings, keys_of(settings))
    if cache is not None:
        # RFC 7519 §4.1.4: not on or after exp; verified above with no leeway.
        frozen = VerifiedClaims(MappingProxyType(dict(claims)))
        cache.put(cache_key, frozen, until=claims["exp"])
    return claims


def _verify(token: str, settings: Settings, keys: KeyRing) -> dict[str, Any]:
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
            aud={"essential": True, "value": settings.mcp_resource},
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
    return claims


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """Authlib's RFC 9068 generator with our key, lifetime, audience and jti."""

    def __init__(self, settings: Settings, refresh_token_generator: Any = None) -> None:
        super().__init__(
            issuer=settings.issuer,
            alg=keys_of(settings).algorithm,
            refresh_token_generator=refresh_token_generator,
            expires_generator=settings.access_token_ttl,
        )
        self.settings = settings

    def access_token_generator(
        self, client: Any, grant_type: str, user: Any, scope: str
    ) -> str:
        # Authlib's version signs with joserfc's default registry, which refuses
        # EdDSA and sets no kid; build the same claims and use our one signer.
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "exp": now + self.settings.access_token_ttl,
            "client_id": client.get_client_id(),
            "iat": now,
            "jti": self.get_jti(client, grant_type, user, scope),
            "scope": scope,
            "sub": str(user.get_user_id()) if user else client.get_client_id(),
            "aud": self.get_audiences(client, user, scope),
        }
        claims.update(self.get_extra_claims(client, grant_type, user, scope))
        return sign_claims(claims, self.settings)

    def get_audiences(self, client: Any, user: Any, scope: str) -> str:
        # RFC 8707: the one resource we serve; a different one never gets this far.
        return self.settings.mcp_resource

    def get_jti(self, client: Any, grant_type: str, user: Any, scope: str) -> str:
        # ``user`` is the grant's ConsentedUser; its code chose the jti when it
        # was issued, so a replayed code can deny the token it became.
        return getattr(user, "token_jti", None) or new_jti()

    def get_extra_claims(
        self, client: Any, grant_type: str, user: Any, scope: str
    ) -> dict[str, Any]:
        return {CONSENT_ID_CLAIM: str(user.consent_id)}

    def generate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        token = super().generate(*args, **kwargs)
        token["token_type"] = TOKEN_TYPE_NAME
        return token
