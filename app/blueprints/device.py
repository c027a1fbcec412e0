"""The page where a person approves a device (RFC 8628 §3.3).

The person signs in (any way of §8 and §14), types or confirms the user
code the device shows, reads what the device asks for, and approves or
denies. The approval is a consent like any other (:mod:`app.oauth.consent`):
the account page lists it and revokes it.

Guessing is bounded: every code looked up is counted, before the lookup,
per address and per account, and a decision is taken only on the code this
browser looked up. A ``GET`` never looks a code up (a link can be followed
unasked, from anywhere): it fills the form in, and the person confirms it.
Every code that is not pending, whoever it belonged to, gets the same
answer, so the page tells a stranger nothing.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, abort, render_template, request, session
from flask_babel import gettext as _

from ..config import current_settings
from ..db import db
from ..oauth import device_codes
from ..oauth.clients import Client, document_client_row, query_client
from ..oauth.consent import ClientGone, approve, deny, signed_in_consent
from ..oauth.constants import DEVICE_VERIFICATION_PATH
from ..oauth.device_codes import (
    Claim,
    DeviceRequest,
    display_user_code,
    normalize_user_code,
)
from ..oauth.resources import Resource, find_resource
from ..rate_limits import client_address, spend
from ..signin import SignIn, current_sign_in, login_redirect

bp = Blueprint("device", __name__)

#: The namespaces of the two counts of codes looked up (app/redis_keys.py).
ADDRESS_BUDGET = "user-code"
ACCOUNT_BUDGET = "user-code-account"
#: The code this browser looked up last: the one it may decide on.
LOOKED_UP = "device_user_code"
#: Longest code echoed back into the form.
ECHOED = 16

Page = tuple[str, int] | tuple[str, int, dict[str, str]] | Response


def _entry_page(status: int = 200, typed: str = "", wrong: bool = False) -> Page:
    page = render_template("device/code.html", typed=typed[:ECHOED], wrong=wrong)
    return page, status


def _too_many(retry_after: int) -> Page:
    page = render_template("device/code.html", typed="", too_many=True)
    return page, 429, {"Retry-After": str(retry_after)}


@bp.route(DEVICE_VERIFICATION_PATH, methods=["GET", "POST"])
def device() -> Page:
    # Reads, and an approval written in one statement: no transaction needed.
    db.autocommit()
    signed_in = current_sign_in()
    if signed_in is None:
        return login_redirect()
    if request.method == "GET":
        return _entry_page(typed=request.args.get("user_code", ""))
    typed = request.form.get("user_code", "")
    decision = request.form.get("decision")
    if decision is None:
        return _look_up(signed_in, typed)
    if decision not in ("approve", "deny"):
        abort(400, _("Choose approve or deny."))
    return _decide(signed_in, typed, decision)


def _look_up(signed_in: SignIn, typed: str) -> Page:
    # Counted first, so that codes sent at once cannot outrun the count; and
    # exactly, as the budget bounds guessing (app/rate_limits.py).
    limit = current_settings().user_code_rate_limit
    budgets = ((ADDRESS_BUDGET, client_address()), (ACCOUNT_BUDGET, signed_in.user_id))
    spent = (spend(limit, *budget, exact=True) for budget in budgets)
    waits = [wait for wait in spent if wait is not None]
    if waits:
        return _too_many(max(waits))
    code = normalize_user_code(typed)
    pending = device_codes.find(code) if code else None
    if pending is None:
        return _entry_page(400, typed, wrong=True)
    asked = _what_is_asked(pending.request)
    if asked is None:
        return _entry_page(400, typed, wrong=True)
    client, resource = asked
    found = signed_in_consent(signed_in.user_id, client.client_id, resource.uri)
    if found is None:
        return login_redirect()  # the account is gone or disabled
    session[LOOKED_UP] = pending.user_code
    page = render_template(
        "device/consent.html",
        client_name=client.client_name,
        user_code=display_user_code(pending.user_code),
        resource=resource,
        scopes=[(s, resource.describe(s)) for s in _scopes(pending.request, resource)],
        user=found[0],
        document_host=client.document_host,
    )
    return page, 200


def _what_is_asked(asked: DeviceRequest) -> tuple[Client, Resource] | None:
    """The client and resource of a request, unless gone since it was made."""
    client = query_client(asked.client_id)
    resource = find_resource(asked.resource)
    if client is None or resource is None:
        return None
    return client, resource


def _scopes(asked: DeviceRequest, resource: Resource) -> list[str]:
    # An operator may have dropped a scope from the resource meanwhile.
    return [s for s in asked.scope.split() if s in resource.scope_names]


def _decide(signed_in: SignIn, typed: str, decision: str) -> Page:
    code = normalize_user_code(typed)
    # Only on the code this browser looked up (and counted): deciding is no
    # way around the budgets.
    if code is None or session.pop(LOOKED_UP, None) != code:
        return _entry_page(400, typed, wrong=True)
    # Claimed before anything is recorded: of two people deciding at once,
    # the one who is told it failed is left with nothing.
    claimed = device_codes.claim(code, signed_in.user_id)
    if claimed is None:
        return _entry_page(400, typed, wrong=True)
    asked = claimed.request
    found = _what_is_asked(asked)
    if decision == "deny" or found is None:
        device_codes.settle(claimed, approved=False)
        if found is None:
            return _entry_page(400, typed, wrong=True)
        deny(uuid.UUID(signed_in.user_id), asked.client_id, asked.scope, asked.resource)
        return render_template("device/done.html", approved=False), 200
    return _approve(signed_in, claimed, *found)


def _approve(
    signed_in: SignIn, claimed: Claim, client: Client, resource: Resource
) -> Page:
    scope = " ".join(_scopes(claimed.request, resource))
    # One statement: the account must be enabled, and a metadata-document
    # client's row is kept with it.
    try:
        consent_id = approve(
            signed_in.user_id,
            client.client_id,
            scope,
            resource.uri,
            document_client_row(client),
        )
    except ClientGone:  # pruned meanwhile: the device is refused
        device_codes.settle(claimed, approved=False)
        return render_template("device/done.html", approved=False), 400
    if consent_id is None:
        device_codes.settle(claimed, approved=False)
        return login_redirect()  # the account was disabled meanwhile
    device_codes.settle(
        claimed,
        approved=True,
        consent_id=str(consent_id),
        scope=scope,
        auth_time=signed_in.auth_time,
    )
    return render_template("device/done.html", approved=True), 200
