"""Wire Authlib's authorization server: grants, endpoints, client auth, tokens.

Every remaining deviation from stock Authlib, and why:

- the request URL is built from ``ISSUER`` (TLS ends at a proxy);
- a token request must be a single form (:func:`check_token_request`) before
  Authlib looks at it: Authlib reads parameters from the query string as well
  as the body, and the first of repeated values;
- ``/token`` and ``/register`` run in one database transaction each
  (:mod:`app.db`: transactions at the edge);
- a ``401 invalid_client`` carries a Basic challenge with a realm;
- fixed error texts where Authlib echoes input into them: an unsupported
  ``response_type`` is answered before Authlib builds its own error, whose
  text quotes the value (a quote in it makes the error itself fail, a 500);
  so does an unregistered ``redirect_uri`` (``validate_authorization_redirect_uri``);
- the code grant (:mod:`.grants.authorization_code`): PKCE is S256-only and
  required of every client; ``query_authorization_code`` first refuses a
  malformed token request (so it does not burn its code), then consumes the
  code atomically and only for the client it was issued to;
  ``authenticate_user`` also checks that the consent the code was issued
  under is still live;
- every grant's ``authenticate_user`` returns an :class:`.issuance.Issuance`,
  which Authlib hands our token generator as ``user`` (its documented
  ``register_token_generator`` hook) and ``save_token`` as ``request.user``:
  the token is what the grant decided, scope included;
- the refresh grant (:mod:`.grants.refresh_token`) consumes its token
  atomically and keeps a grace window; revocation and introspection
  (:mod:`.token_endpoints`) accept post and none client authentication, and
  introspection authenticates resource servers, not clients;
- the device grant (:mod:`.grants.device_code`) binds its codes to a
  resource and scope checked as at the authorization endpoint, and answers
  each poll from one atomic script (single use, ``slow_down``).
"""

from __future__ import annotations

from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.requests import JsonPayload, JsonRequest
from flask import Flask, Response, current_app
from flask import request as flask_request

from ..config import Settings
from ..db import db
from ..errors import challenge
from . import client_auth
from .client_assertion import PrivateKeyJWT
from .clients import query_client
from .constants import PRIVATE_KEY_JWT
from .grants.authorization_code import AuthorizationCodeGrant
from .grants.client_credentials import ClientCredentialsGrant
from .grants.device_code import DeviceAuthorization, DeviceGrant
from .grants.extensions import ResourceIndicator, S256CodeChallenge, SingleParameters
from .grants.identity_assertion import IdentityAssertionGrant
from .grants.refresh_token import RefreshTokenGrant
from .issuance import save_token
from .metadata import validate_metadata
from .oauth_errors import UnsupportedGrantType, UnsupportedResponseType
from .registration import RegistrationEndpoint
from .token_endpoints import IntrospectionEndpoint, RevocationEndpoint
from .tokens import AccessTokenGenerator


class _Request(OAuth2Request):
    """Authlib's Flask request (``FlaskOAuth2Request``), with the URL seen
    from the issuer.

    TLS ends at the platform's router, so the URL the app sees may be plain
    http; the issuer (https, or loopback in development) is what clients use.
    """

    def __init__(self, request: Any, issuer: str) -> None:
        super().__init__(request.method, issuer + request.full_path)
        # Set after: the parent's ``headers or {}`` asks werkzeug's environ
        # headers for their length, which walks the whole WSGI environ.
        self.headers = request.headers
        self._request = request
        self.payload = FlaskOAuth2Payload(request)

    @property
    def args(self) -> Any:
        return self._request.args

    @property
    def form(self) -> Any:
        return self._request.form


class _JsonPayload(JsonPayload):
    """Authlib's JSON payload interface over a Flask request."""

    def __init__(self, request: Any) -> None:
        self.flask_request = request

    @property
    def data(self) -> Any:
        # Malformed JSON or a wrong content type becomes ``None``, which the
        # registration endpoint answers with ``invalid_client_metadata``.
        return self.flask_request.get_json(force=True, silent=True)


class _JsonRequest(JsonRequest):
    def __init__(self, request: Any, issuer: str) -> None:
        super().__init__(request.method, issuer + request.full_path)
        self.headers = request.headers  # as in _Request
        self.payload = _JsonPayload(request)


def _unproxied() -> Any:
    """This request itself, behind Flask's proxy (werkzeug's documented
    ``LocalProxy._get_current_object``)."""
    proxy: Any = flask_request
    return proxy._get_current_object()


REVOCATION = RevocationEndpoint.ENDPOINT_NAME
INTROSPECTION = IntrospectionEndpoint.ENDPOINT_NAME
DEVICE_AUTHORIZATION = DeviceAuthorization.ENDPOINT_NAME
#: Endpoints at which a client authenticates, as at the token endpoint.
CLIENT_ENDPOINTS = (REVOCATION, DEVICE_AUTHORIZATION)
#: RFC 6749 §3.2: the token endpoint takes a form body.
FORM_MIMETYPE = "application/x-www-form-urlencoded"
#: RFC 8707 §2: the one token parameter that may appear more than once.
REPEATABLE_TOKEN_PARAMETERS = frozenset({"resource"})


def check_form_request(request: Any) -> None:
    """Refuse a request to a token-like endpoint that is not one unambiguous form.

    RFC 6749 §3.2 (and RFC 7009 §2.1, RFC 7662 §2.1): parameters are sent in
    the form body and MUST NOT be included more than once.
    """
    if request.args:
        raise InvalidRequestError("Send the parameters in the form body, not the URL.")
    # An empty body is an empty form: every parameter of some requests is
    # optional (a device authorization request by a client using Basic).
    empty = not request.mimetype and not request.content_length
    if request.mimetype != FORM_MIMETYPE and not empty:
        raise InvalidRequestError(f"The body must be {FORM_MIMETYPE}.")
    for name, values in request.form.lists():
        if len(values) > 1 and name not in REPEATABLE_TOKEN_PARAMETERS:
            raise InvalidRequestError("A parameter is repeated.")


def check_token_request(request: Any) -> None:
    """Refuse a token request that is not one unambiguous form, with one
    client authentication method (RFC 6749 §2.3)."""
    check_form_request(request)
    if not request.form.get("grant_type"):
        raise InvalidRequestError("Missing 'grant_type' in request.")
    client_auth.check_one_method(request)


class AuthServer(AuthorizationServer):
    """Authlib's Flask server with our error texts and RFC 9207."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        #: What the registered grants offer, in registration order: discovery
        #: metadata, registration checks and error texts all read these.
        self.grant_types: tuple[str, ...] = ()
        self.response_types: tuple[str, ...] = ()

    def register_grant(self, grant_cls: Any, extensions: list | None = None) -> None:
        super().register_grant(grant_cls, extensions)
        self.grant_types += (grant_cls.GRANT_TYPE,)
        # Token-endpoint-only grants (refresh_token) have no response types.
        for response_type in sorted(getattr(grant_cls, "RESPONSE_TYPES", ())):
            if response_type not in self.response_types:
                self.response_types += (response_type,)

    # The request itself, not Flask's proxy to it: Authlib reads its
    # parameters many times per request, each read through the proxy a lookup.
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return _Request(_unproxied(), self.settings.issuer)

    def create_json_request(self, request: Any) -> JsonRequest:
        return _JsonRequest(_unproxied(), self.settings.issuer)

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        if AuthorizationCodeGrant.check_authorization_endpoint(request):
            return super().get_authorization_grant(request)
        # Authlib's own error quotes the response_type in its message, and a
        # quote in it makes the error itself fail (a 500). RFC 6749 §4.1.2.1:
        # redirect only once the client and its redirect URI are known good.
        client = self.query_client(request.payload.client_id)
        redirect_uri = None
        if client is not None:
            requested = request.payload.redirect_uri
            if not requested:
                redirect_uri = client.get_default_redirect_uri()
            elif client.check_redirect_uri(requested):
                redirect_uri = requested
        raise UnsupportedResponseType(self.response_types, redirect_uri=redirect_uri)

    def get_token_grant(self, request: OAuth2Request) -> Any:
        try:
            return super().get_token_grant(request)
        except UnsupportedGrantTypeError:
            raise UnsupportedGrantType(self.grant_types) from None

    def create_token_response(self, request: Any = None) -> Response:
        try:
            check_token_request(flask_request)
        except OAuth2Error as error:
            return self.handle_error_response(None, error)
        with db.transaction():
            return super().create_token_response(request)

    def create_endpoint_response(self, name: str, request: Any = None) -> Response:
        if name in (*CLIENT_ENDPOINTS, INTROSPECTION):
            try:
                check_form_request(flask_request)
                if name in CLIENT_ENDPOINTS:
                    client_auth.check_one_method(flask_request)
            except OAuth2Error as error:
                return self.handle_error_response(None, error)
        with db.transaction():
            return super().create_endpoint_response(name, request)

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        status, body, headers = error(self.get_error_uri(request, error))
        if isinstance(error, InvalidClientError) and status == 401:
            # RFC 7617 §2: realm is a required parameter of a Basic challenge;
            # Authlib's has none. The realm is the issuer, as at /auth/token.
            headers = [h for h in headers if h[0].lower() != "www-authenticate"]
            basic = challenge("Basic", realm=self.settings.issuer, error=error.error)
            headers.append(("WWW-Authenticate", basic))
        return self.handle_response(status, body, headers)

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        # RFC 9207 §2: every authorization response, success or error, names us.
        headers = [
            (name, add_params_to_uri(value, {"iss": self.settings.issuer}))
            if name.lower() == "location"
            else (name, value)
            for name, value in headers
        ]
        return super().handle_response(status, body, headers)


def init_app(app: Flask, settings: Settings) -> None:
    server = AuthServer(settings)
    server.init_app(app, query_client=query_client, save_token=save_token)
    # After init_app, which installs Authlib's default (opaque token) generator.
    server.register_token_generator("default", AccessTokenGenerator(settings))
    client_auth.register(server)
    server.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJWT())
    server.register_grant(
        AuthorizationCodeGrant,
        [
            S256CodeChallenge(required=True),
            ResourceIndicator(),
            SingleParameters(),
        ],
    )
    server.register_endpoint(RegistrationEndpoint)
    if settings.refresh_tokens:
        server.register_grant(RefreshTokenGrant)
    server.register_grant(DeviceGrant)
    server.register_endpoint(DeviceAuthorization)
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(IdentityAssertionGrant)
    server.register_endpoint(RevocationEndpoint)
    if settings.resource_servers:
        server.register_endpoint(IntrospectionEndpoint)
    validate_metadata(settings, server)
    app.extensions["oauth_server"] = server


def get_server() -> AuthServer:
    return current_app.extensions["oauth_server"]
