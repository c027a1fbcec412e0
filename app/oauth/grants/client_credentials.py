"""The client-credentials grant (RFC 6749 §4.4) for service clients.

MCP's ``io.modelcontextprotocol/oauth-client-credentials`` extension: a
service client (:mod:`app.service_clients`) authenticates, with its secret
or a signed assertion, and gets a token for its one resource, within its
scope ceiling, for the person who made it or for itself. Authlib's grant
authenticates the client and checks it may use the grant; the resource and
scope are decided at its ``validate_requested_scope`` hook, and the token
is the :class:`~app.oauth.issuance.Issuance` decided there. No refresh
token: the client authenticates again instead (§4.4.3).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError, UnauthorizedClientError

from ...denylist import is_user_denied
from ...service_clients import note_use
from ..clients import Client
from ..constants import AUTH_METHODS
from ..issuance import Issuance
from ..oauth_errors import InvalidTargetError
from ..resources import Resource, find_resource, resolve_resource
from ..scopes import OFFLINE_ACCESS, scope_tokens
from ..tokens import new_jti


def granted_scope(requested: str | None, ceiling: str, resource: Resource) -> str:
    """The scope to grant: what is asked, within the ceiling and the
    resource's scopes; all of those when nothing is asked."""
    allowed = [s for s in resource.scope_names if s in ceiling.split()]
    wanted = [s for s in scope_tokens(requested) if s != OFFLINE_ACCESS]
    if any(s not in allowed for s in wanted):
        raise InvalidScopeError()
    scope = [s for s in allowed if s in wanted] if wanted else allowed
    if not scope:
        raise InvalidScopeError()
    return " ".join(scope)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    # Secrets and assertions; a public client has no credentials to present.
    TOKEN_ENDPOINT_AUTH_METHODS = [m for m in AUTH_METHODS if m != "none"]

    def validate_requested_scope(self) -> None:
        client: Client = self.request.client
        bound = client.row.service_resource
        resource = find_resource(bound) if bound else None
        if resource is None:
            raise UnauthorizedClientError("The client's resource is no longer served.")
        # RFC 8707: a service client's tokens are for its resource only.
        values = self.request.payload.datalist.get("resource", [])
        if values and resolve_resource(values) != resource:
            raise InvalidTargetError("This client's tokens are for its own resource.")
        scope = granted_scope(self.request.payload.scope, client.row.scope, resource)
        owner = client.row.owner_id
        if owner is not None and not _is_active(owner):
            raise UnauthorizedClientError("The client's person is disabled.")
        self.request.user = Issuance(
            user_id=owner if client.row.acts_for_owner else None,
            client_id=client.client_id,
            resource=resource,
            scope=scope,
            jti=new_jti(),
        )

    def create_token_response(self) -> tuple[int, Any, Any]:
        issuance: Issuance = self.request.user
        token = self.generate_token(
            user=issuance, scope=issuance.scope, include_refresh_token=False
        )
        self.save_token(token)
        note_use(issuance.client_id or "")
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _is_active(user_id: Any) -> bool:
    # Disabling a person denies their tokens (a marker every process holds
    # in memory for the longest token lifetime) and, in the same
    # transaction, revokes their service clients, which evicts them from
    # every process's client cache: the marker covers the person until no
    # cache can still hold their clients, so no Postgres read is needed.
    return not is_user_denied(str(user_id))
