"""Access tokens: JWTs (RFC 9068 profile) signed with the shared ``JWT_SECRET``.

OAuth tokens come out of Authlib's generator (:class:`AccessTokenGenerator`);
API-key tokens out of :func:`issue_access_token`. Both sign through
:func:`sign_claims`, and :func:`decode_access_token` is the one verifier.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import Any

from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry

from ..config import Settings, current_settings

#: The only algorithm ever used or accepted.
ALGORITHM = "HS256"
#: RFC 9068 §2.1: access tokens are typed, so an ID token cannot pass for one.
TOKEN_TYPE = "at+jwt"
TOKEN_TYPES_ACCEPTED = (TOKEN_TYPE, "application/at+jwt")
#: The token type named in token responses (CONTRACT §4).
TOKEN_TYPE_NAME = "bearer"
#: Private claim: the consent an OAuth token was issued under (app.denylist).
CONSENT_ID_CLAIM = "consent_id"


class InvalidAccessToken(Exception):
    """A token failed verification; deliberately carries no detail to callers."""


def signing_key(settings: Settings) -> OctKey:
    return _import_key(settings.jwt_secret)


@functools.lru_cache(maxsize=4)
def _import_key(secret: str) -> OctKey:
    # Imported once per secret, not on every token issued or checked.
    return OctKey.import_key(secret.encode())


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def sign_claims(claims: dict[str, Any], settings: Settings) -> str:
    header = {"alg": ALGORITHM, "typ": TOKEN_TYPE}
    return jwt.encode(header, claims, signing_key(settings), algorithms=[ALGORITHM])


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


def decode_access_token(token: str) -> dict[str, Any]:
    """Verify signature, type, issuer, audience and lifetime; return the claims."""
    settings = current_settings()
    try:
        decoded = jwt.decode(token, signing_key(settings), algorithms=[ALGORITHM])
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
            alg=ALGORITHM,
            refresh_token_generator=refresh_token_generator,
            expires_generator=settings.access_token_ttl,
        )
        self.settings = settings

    def get_jwks(self) -> OctKey:
        return signing_key(self.settings)

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
