"""The authorization endpoint and the consent page (RFC 6749 §4.1.1)."""

from __future__ import annotations

import uuid
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Blueprint, Response, abort, render_template
from flask import request as flask_request
from flask_babel import gettext as _

from ..db import db
from ..models import User
from ..oauth.client_metadata import FetchRefused, look_up, problem_text
from ..oauth.clients import Client, document_client_row
from ..oauth.consent import (
    ClientGone,
    ConsentedUser,
    approve,
    covers,
    deny,
    has_approved,
    signed_in_consent,
)
from ..oauth.constants import AUTHORIZATION_PATH
from ..oauth.grants.authorization_code import AuthorizationCodeGrant
from ..oauth.redirect_uris import app_scheme, browser_host, redirect_uri_is_trusted
from ..oauth.resources import Resource, resolve_resource
from ..oauth.server import get_server
from ..signin import current_sign_in, current_user, login_redirect

bp = Blueprint("authorize", __name__)

#: Every refusal to go ahead is a page with this status: the request as sent
#: cannot be completed, whether malformed or needing interaction it forbade.
ERROR_PAGE_STATUS = 400


def _error_page(error: OAuth2Error) -> tuple[str, int]:
    # Unknown client or unregistered redirect_uri: never redirect (RFC 6749 §4.1.2.1).
    page = render_template(
        "authorize/error.html",
        error=error.error,
        description=_document_problem(error) or error.get_error_description(),
    )
    return page, ERROR_PAGE_STATUS


def _error_link_page(error: OAuth2Error, location: str) -> tuple[str, int]:
    """Show the error and let the person take it to the client themselves."""
    page = render_template(
        "authorize/error_link.html",
        error=error.error,
        description=error.get_error_description(),
        host=browser_host(location),
        app_scheme=app_scheme(location),
        location=location,
    )
    return page, ERROR_PAGE_STATUS


def _client_id() -> Any:
    """The ``client_id`` as Authlib's request reads it (the first of
    ``request.values``), without building that request to read it: it
    validates its URL, the issuer's, each time."""
    return flask_request.values.get("client_id")


def _document_problem(error: OAuth2Error) -> str | None:
    """Why a metadata-document client_id was refused, if that is the error."""
    client_id = _client_id()
    if error.error != "invalid_client" or not isinstance(client_id, str):
        return None
    return problem_text(client_id)


def _look_up_document() -> tuple[str, int, dict[str, str]] | None:
    """Fetch the metadata document a URL ``client_id`` names, unless known.

    The one endpoint that fetches; the verdict stays with this request for
    Authlib's client lookup. A refusal to fetch now is a page of its own, not
    a verdict on the document.
    """
    client_id = _client_id()
    try:
        look_up(client_id if isinstance(client_id, str) else None)
    except FetchRefused as refused:
        if refused.status == 429:
            error = "too_many_requests"
            description = _(
                "Too many applications were looked up from your network. "
                "Please try again in a minute."
            )
        else:
            error = "temporarily_unavailable"
            description = _(
                "The service is temporarily unavailable. Please try again shortly."
            )
        page = render_template(
            "authorize/error.html", error=error, description=description
        )
        return page, refused.status, {"Retry-After": str(refused.retry_after)}
    return None


def _document_notice(client: Client, redirect_uri: str) -> dict[str, Any] | None:
    """A metadata-document client's URL host, and whether the redirect leaves it.

    The name is self-asserted; the host is what the document proves.
    """
    host = client.document_host
    if host is None:
        return None
    return {"host": host, "elsewhere": browser_host(redirect_uri) != host}


def _may_redirect(redirect_uri: str, user: User | None) -> bool:
    """RFC 9700 §4.11.2: redirect unasked only to a URI we can trust."""
    if redirect_uri_is_trusted(redirect_uri):
        return True
    if user is None:
        return False
    client_id = _client_id()
    return bool(client_id) and has_approved(user.id, client_id)


def _handle_error(error: OAuth2Error, user: User | None) -> Response | tuple[str, int]:
    if not error.redirect_uri:
        return _error_page(error)
    # Built by Authlib and the server's RFC 9207 hook, so the link shown
    # carries exactly what a redirect would: error, description, state, iss.
    response = get_server().handle_error_response(None, error)
    if _may_redirect(error.redirect_uri, user):
        return response
    return _error_link_page(error, response.headers["Location"])


def _prompt_none(
    grant: AuthorizationCodeGrant, user_id: str | None
) -> ConsentedUser | None:
    """The consent ``prompt=none`` may skip every page under (OIDC Core §3.1.2.1).

    ``None`` when not asked to; raises the error to answer when a page
    would be needed.
    """
    values = (grant.request.payload.data.get("prompt") or "").split()
    if "none" not in values:
        return None
    where = {"redirect_uri": grant.redirect_uri, "state": grant.request.payload.state}
    if len(values) > 1:
        raise InvalidRequestError("'prompt=none' cannot be combined.", **where)
    resource = _resource(grant).uri
    found = (
        signed_in_consent(user_id, grant.client.client_id, resource)
        if user_id
        else None
    )
    if found is None:
        raise LoginRequiredError("The person is not signed in.", **where)
    person, approval = found
    if approval is None or not covers(approval, grant.request.scope):
        raise ConsentRequiredError("The requested scope is not approved.", **where)
    return ConsentedUser(person.id, approval.id)


@bp.route(AUTHORIZATION_PATH, methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int] | tuple[str, int, dict[str, str]] | str:
    # Reads, and an approval written in one statement: no transaction needed.
    db.autocommit()
    refused = _look_up_document()
    if refused is not None:
        return refused
    server = get_server()
    # The sign-in alone; the account is read with the consent, further down.
    signed_in = current_sign_in()
    user_id = signed_in.user_id if signed_in else None
    try:
        grant = server.get_consent_grant()
        # On a POST the person has decided; their decision is the answer.
        get = flask_request.method == "GET"
        silent = _prompt_none(grant, user_id) if get else None
    except OAuth2Error as error:
        return _handle_error(error, current_user())
    if user_id is None:
        return login_redirect()
    if silent is not None:
        return server.create_authorization_response(grant=grant, grant_user=silent)
    if flask_request.method == "POST":
        return _decide(grant, user_id)
    return _consent_page(grant, user_id)


def _resource(grant: AuthorizationCodeGrant) -> Resource:
    """The resource the token will be for (validated by ResourceIndicator)."""
    return resolve_resource(grant.request.payload.datalist.get("resource", []))


def _decide(grant: AuthorizationCodeGrant, user_id: str) -> Response | tuple[str, int]:
    server = get_server()
    decision = flask_request.form.get("decision")
    if decision not in ("approve", "deny"):
        abort(400, _("Choose approve or deny."))
    client_id, scope = grant.client.client_id, grant.request.scope
    resource = _resource(grant).uri
    if decision == "deny":
        user = current_user()
        if user is None:
            return login_redirect()
        deny(user.id, client_id, scope, resource)
        return server.create_authorization_response(grant=grant, grant_user=None)
    # One statement: the account must be enabled, and a metadata-document
    # client's row is kept with it.
    client_row = document_client_row(grant.client)
    try:
        consent_id = approve(user_id, client_id, scope, resource, client_row)
    except ClientGone:
        return _error_page(InvalidClientError())  # pruned meanwhile
    if consent_id is None:
        return login_redirect()  # the account was disabled meanwhile
    approved = ConsentedUser(uuid.UUID(user_id), consent_id)
    return server.create_authorization_response(grant=grant, grant_user=approved)


def _consent_page(
    grant: AuthorizationCodeGrant, user_id: str
) -> Response | tuple[str, int] | str:
    client = grant.client
    resource = _resource(grant)
    found = signed_in_consent(user_id, client.client_id, resource.uri)
    if found is None:
        return login_redirect()  # the account is gone or disabled
    person, previous = found
    requested = grant.request.scope.split()
    # Step-up (MCP's scope challenge): the page asks only for what is new,
    # and lists what the person granted before apart.
    granted = previous.scope.split() if previous is not None else []
    new = [s for s in requested if s not in granted]
    return render_template(
        "authorize/consent.html",
        client_name=client.client_name,
        redirect_host=browser_host(grant.redirect_uri),
        app_scheme=app_scheme(grant.redirect_uri),
        resource=resource,
        scopes=[(s, resource.describe(s)) for s in new or requested],
        # Nothing new: a request within the consent, which approving narrows.
        asks_anew=bool(new),
        granted=[(s, resource.describe(s)) for s in granted] if new else [],
        user=person,
        approved_before=previous if covers(previous, grant.request.scope) else None,
        document=_document_notice(client, grant.redirect_uri),
    )
