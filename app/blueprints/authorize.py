"""The authorization endpoint and the consent page (RFC 6749 §4.1.1)."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, abort, render_template
from flask import request as flask_request
from flask_babel import gettext as _

from ..oauth.clients import browser_host
from ..oauth.consent import covers, find_grant, record_grant
from ..oauth.server import get_server
from ..sessions import current_user, login_redirect

bp = Blueprint("authorize", __name__)


def _scope_descriptions() -> dict[str, str]:
    return {
        "read": _("Read your data and use read-only tools"),
        "write": _("Change your data and use tools that make changes"),
    }


def _error_page(error: OAuth2Error) -> tuple[str, int]:
    # Unknown client or unregistered redirect_uri: never redirect (RFC 6749 §4.1.2.1).
    page = render_template(
        "authorize/error.html",
        error=error.error,
        description=error.get_error_description(),
    )
    return page, 400


def _handle_error(error: OAuth2Error) -> Response | tuple[str, int]:
    if error.redirect_uri:
        return get_server().handle_error_response(None, error)
    return _error_page(error)


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int] | str:
    server = get_server()
    user = current_user()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _handle_error(error)
    if user is None:
        return login_redirect()

    if flask_request.method == "POST":
        decision = flask_request.form.get("decision")
        if decision not in ("approve", "deny"):
            abort(400, _("Choose approve or deny."))
        if decision == "approve":
            record_grant(user.id, grant.client.client_id, grant.request.scope)
            return server.create_authorization_response(grant=grant, grant_user=user)
        return server.create_authorization_response(grant=grant, grant_user=None)

    client = grant.client
    previous = find_grant(user.id, client.client_id)
    descriptions = _scope_descriptions()
    scopes = [(s, descriptions.get(s, s)) for s in grant.request.scope.split()]
    return render_template(
        "authorize/consent.html",
        client_name=client.client_name,
        redirect_host=browser_host(grant.redirect_uri),
        scopes=scopes,
        user=user,
        approved_before=previous if covers(previous, grant.request.scope) else None,
    )
