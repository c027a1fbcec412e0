"""The device authorization grant (RFC 8628), on Authlib's classes.

``POST /device_authorization`` is Authlib's :class:`DeviceAuthorizationEndpoint`
with what it leaves to us: the client authenticates the way it registered,
must have registered the grant, and its ``resource`` and ``scope`` are
checked as at ``/authorize``, so the device code is bound to one resource
from the start. The person decides at ``/device`` (app/blueprints/device.py).

Polling is Authlib's :class:`DeviceCodeGrant`, whose token request we
validate ourselves: one atomic Redis script (:mod:`..device_codes`) answers
``authorization_pending``, ``slow_down`` (the interval grows and stays grown
for every instance), ``access_denied`` or ``expired_token``, or hands the
approval to exactly one poll, which becomes an
:class:`~app.oauth.issuance.Issuance` as a redeemed code does.
"""

from __future__ import annotations

from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import (
    AuthorizationPendingError,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    ExpiredTokenError,
    SlowDownError,
)

from ...config import current_settings
from .. import device_codes
from ..clients import Client
from ..constants import AUTH_METHODS, DEVICE_CODE, DEVICE_VERIFICATION_PATH
from ..device_codes import Poll
from ..issuance import Issuance
from ..oauth_errors import InvalidTargetError
from ..resources import resolve_resource
from ..tokens import new_jti
from .authorization_code import consented_issuance


class DeviceAuthorization(DeviceAuthorizationEndpoint):
    """RFC 8628 §3.1–3.2, for clients that registered the grant."""

    CLIENT_AUTH_METHODS = list(AUTH_METHODS)
    INTERVAL = device_codes.POLL_INTERVAL

    def create_endpoint_response(self, request: Any) -> tuple[int, Any, Any]:
        # Authlib's own response would check the scope against the server's
        # list only, and keep no resource.
        client: Client = self.authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE):
            raise UnauthorizedClientError("The client did not register this grant.")
        # RFC 8707 and the scope, exactly as the authorization endpoint has them.
        resource = resolve_resource(request.payload.datalist.get("resource", []))
        scope = resource.allowed_scope(request.payload.scope, client.registered_scope)
        if scope is None:
            raise InvalidScopeError()
        ttl = current_settings().device_code_ttl
        device_code, user_code = device_codes.issue(
            client.client_id, scope, resource.uri, ttl
        )
        verification_uri = self.get_verification_uri()
        body = {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": add_params_to_uri(
                verification_uri, [("user_code", user_code)]
            ),
            "expires_in": ttl,
            "interval": self.INTERVAL,
        }
        return 200, body, default_json_headers

    def get_verification_uri(self) -> str:
        return current_settings().issuer + DEVICE_VERIFICATION_PATH


class DeviceGrant(DeviceCodeGrant):
    """RFC 8628 §3.4–3.5: polling, with each answer decided in one script."""

    GRANT_TYPE = DEVICE_CODE
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def validate_token_request(self) -> None:
        # Authlib's would answer an unknown code invalid_request and leave
        # single use, slow_down and the resource to storage we do not have.
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code' in request.")
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client did not register this grant.")
        self.request.client = client
        # RFC 8707: a resource we do not serve is refused before the code is
        # looked at; another of ours is refused by the poll, spending nothing.
        values = self.request.payload.datalist.get("resource", [])
        resource = resolve_resource(values).uri if values else ""
        result = device_codes.poll(device_code, client.client_id, resource)
        approved = result.request
        if approved is None or result.found is not Poll.APPROVED:
            raise _POLL_ERRORS[result.found]()
        if approved.user_id is None or approved.consent_id is None:
            raise InvalidGrantError("The device code is not valid.")
        self.request.user = consented_issuance(
            self.request,
            user_id=approved.user_id,
            consent_id=approved.consent_id,
            scope=approved.scope,
            resource_uri=approved.resource,
            jti=new_jti(),
        )

    def create_token_response(self) -> tuple[int, Any, Any]:
        issuance: Issuance = self.request.user
        token = self.generate_token(user=issuance, scope=issuance.scope)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _invalid_grant() -> InvalidGrantError:
    # An unknown code, another client's and a spent one look the same.
    return InvalidGrantError("The device code is not valid.")


#: Each poll that yields no token, as its RFC 8628 §3.5 error.
_POLL_ERRORS: dict[Poll, Any] = {
    Poll.UNKNOWN: _invalid_grant,
    Poll.USED: _invalid_grant,
    Poll.APPROVED: _invalid_grant,
    Poll.EXPIRED: ExpiredTokenError,
    Poll.DENIED: AccessDeniedError,
    Poll.PENDING: AuthorizationPendingError,
    Poll.SLOW_DOWN: SlowDownError,
    Poll.OTHER_RESOURCE: InvalidTargetError,
}
