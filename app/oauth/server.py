"""Wire Authlib's authorization server: grants, endpoints, client auth, tokens."""

from __future__ import annotations

from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import (
    FlaskJsonPayload,
    FlaskOAuth2Payload,
    FlaskOAuth2Request,
)
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.authorization_server import _create_grant
from authlib.oauth2.rfc6749.errors import UnsupportedGrantTypeError
from authlib.oauth2.rfc6749.requests import JsonRequest
from flask import Flask, Response, current_app
from flask import request as flask_request

from ..config import Settings
from . import client_auth
from .clients import mark_authorized, query_client
from .errors import UnsupportedGrantType, UnsupportedResponseType
from .grants import (
    AuthorizationCodeGrant,
    ResourceIndicator,
    S256CodeChallenge,
    SingleParameters,
)
from .metadata import validate_metadata
from .registration import RegistrationEndpoint
from .tokens import AccessTokenGenerator


class _Request(FlaskOAuth2Request):
    """Authlib's request, with the URL seen from the issuer.

    TLS ends at the platform's router, so the URL the app sees may be plain
    http; the issuer (https, or loopback in development) is what clients use.
    """

    def __init__(self, request: Any, issuer: str) -> None:
        OAuth2Request.__init__(
            self, request.method, issuer + request.full_path, headers=request.headers
        )
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class _JsonPayload(FlaskJsonPayload):
    @property
    def data(self) -> Any:
        # Malformed JSON or a wrong content type becomes ``None``, which the
        # registration endpoint answers with ``invalid_client_metadata``.
        return self._request.get_json(force=True, silent=True)


class _JsonRequest(JsonRequest):
    def __init__(self, request: Any, issuer: str) -> None:
        super().__init__(request.method, issuer + request.full_path, request.headers)
        self.payload = _JsonPayload(request)


class AuthServer(AuthorizationServer):
    """Authlib's Flask server with the contract's error texts and RFC 9207."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return _Request(flask_request, self.settings.issuer)

    def create_json_request(self, request: Any) -> JsonRequest:
        return _JsonRequest(flask_request, self.settings.issuer)

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        for grant_cls, extensions in self._authorization_grants:
            if grant_cls.check_authorization_endpoint(request):
                return _create_grant(grant_cls, extensions, request, self)
        # Authlib's own version quotes the response_type in its message, and a
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
        raise UnsupportedResponseType(redirect_uri=redirect_uri)

    def get_token_grant(self, request: OAuth2Request) -> Any:
        try:
            return super().get_token_grant(request)
        except UnsupportedGrantTypeError:
            raise UnsupportedGrantType() from None

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        # RFC 9207 §2: every authorization response, success or error, names us.
        headers = [
            (name, add_params_to_uri(value, {"iss": self.settings.issuer}))
            if name.lower() == "location"
            else (name, value)
            for name, value in headers
        ]
        return super().handle_response(status, body, headers)


def save_token(token: dict[str, Any], request: Any) -> None:
    # Access tokens are self-contained; what is worth keeping is that this
    # client is in use, which protects it from pruning.
    mark_authorized(request.client.client_id)


def init_app(app: Flask, settings: Settings) -> None:
    validate_metadata(settings)
    server = AuthServer(settings)
    server.init_app(app, query_client=query_client, save_token=save_token)
    # After init_app, which installs Authlib's default (opaque token) generator.
    server.register_token_generator("default", AccessTokenGenerator(settings))
    client_auth.register(server)
    server.register_grant(
        AuthorizationCodeGrant,
        [S256CodeChallenge(required=True), ResourceIndicator(), SingleParameters()],
    )
    server.register_endpoint(RegistrationEndpoint)
    app.extensions["oauth_server"] = server


def get_server() -> AuthServer:
    return current_app.extensions["oauth_server"]
