"""Protocol facts declared once: paths, client authentication, loopback.

Routes, discovery metadata, registration checks and error texts all read
them from here. Scopes have a module of their own (:mod:`.scopes`); the
path of ``/mcp`` and the loopback hosts are settings' facts
(:mod:`app.config_values`). The grant and response types offered follow
from the grants registered on the server (``AuthServer.grant_types``); only
registration's defaults are declared here.
"""

from __future__ import annotations

from ..config_values import LOOPBACK_HOSTS

#: RFC 6749 §3.1: the authorization endpoint.
AUTHORIZATION_PATH = "/authorize"
#: RFC 6749 §3.2: the token endpoint.
TOKEN_PATH = "/token"
#: RFC 7591 §3: the client registration endpoint.
REGISTRATION_PATH = "/register"
#: RFC 7009 token revocation.
REVOCATION_PATH = "/revoke"
#: RFC 7662 token introspection (resource servers only).
INTROSPECTION_PATH = "/introspect"
#: RFC 8628 §3.1: where a device asks for its codes, and §3.3: the page
#: where the person enters the user code.
DEVICE_AUTHORIZATION_PATH = "/device_authorization"
DEVICE_VERIFICATION_PATH = "/device"
#: RFC 8615: where discovery documents live.
WELL_KNOWN_PREFIX = "/.well-known"
#: RFC 8414 §3, and its OpenID Connect Discovery twin.
AUTHORIZATION_SERVER_METADATA_PATH = WELL_KNOWN_PREFIX + "/oauth-authorization-server"
OPENID_CONFIGURATION_PATH = WELL_KNOWN_PREFIX + "/openid-configuration"
#: RFC 9728 §3.
RESOURCE_METADATA_PATH = WELL_KNOWN_PREFIX + "/oauth-protected-resource"
#: RFC 7517 §5: the JWK Set.
JWKS_PATH = WELL_KNOWN_PREFIX + "/jwks.json"
#: An API key traded for an access token, and keys managed (docs/reference.md).
API_KEY_EXCHANGE_PATH = "/auth/token"
API_KEYS_PATH = "/api-keys"

#: Client authentication methods at the token endpoint (RFC 7591 §2, RFC 6749
#: §2.3), ``private_key_jwt`` being RFC 7523 §2.2 (app/oauth/client_assertion.py).
PRIVATE_KEY_JWT = "private_key_jwt"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none", PRIVATE_KEY_JWT)
#: Grants beyond the code and refresh: a service client's (RFC 6749 §4.4), and
#: an identity assertion traded for a token (RFC 7523 §2.1, ID-JAG).
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The identity assertion grant profile of the jwt-bearer grant, named in
#: discovery (draft-ietf-oauth-identity-assertion-authz-grant §6).
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
#: RFC 8628 §3.4: the device authorization grant.
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

#: RFC 7591 §2: what a client registers when it names no grant or response type.
DEFAULT_GRANT_TYPES = ("authorization_code",)
DEFAULT_RESPONSE_TYPES = ("code",)
#: Grant types that only continue a grant another one began (RFC 6749 §6):
#: a client registered with these alone could never obtain a first token.
CONTINUING_GRANT_TYPES = frozenset({"refresh_token"})

#: The same hosts as a browser (WHATWG URL) writes them: IPv6 in brackets.
LOOPBACK_BROWSER_HOSTS = frozenset(
    f"[{host}]" if ":" in host else host for host in LOOPBACK_HOSTS
)
