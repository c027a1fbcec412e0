"""The page where a person approves a device (RFC 8628 §3.3).

The person signs in (any way of §8 and §14), types or confirms the user
code the device shows, reads what the device asks for, and approves or
denies. The approval is a consent like any other (:mod:`app.oauth.consent`):
the account page lists it and revokes it. Every wrong code is counted per
address and per account; and every code that is not pending, whoever it
belonged to, gets the same answer, so the page tells a stranger nothing.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import gettext as _

from ..config import current_settings
from ..db import db
from ..oauth import device_codes
from ..oauth.clients import document_client_row, query_client
from ..oauth.consent import approve, deny, signed_in_consent
from ..oauth.constants import DEVICE_VERIFICATION_PATH
from ..oauth.device_codes import Pending, display_user_code, normalize_user_code
from ..oauth.resources import find_resource
from ..rate_limits import client_address, spend, waiting
from ..signin import current_sign_in, login_redirect

bp = Blueprint("device", __name__)

#: The namespaces of the two counts of wrong codes (app/redis_keys.py).
ADDRESS_BUDGET = "user-code"
ACCOUNT_BUDGET = "user-code-account"

Page = tuple[str, int] | tuple[str, int, dict[str, str]] | Response


def _budgets(user_id: str) -> tuple[tuple[str, str], ...]:
    return ((ADDRESS_BUDGET, client_address()), (ACCOUNT_BUDGET, user_id))


def _entry_page(status: int = 200, typed: str = "", wrong: bool = False) -> Page:
    page = render_template("device/code.html", typed=typed, wrong=wrong)
    return page, status


def _too_many(retry_after: int) -> Page:
    page = render_template("device/code.html", typed="", too_many=True)
    return page, 429, {"Retry-After": str(retry_after)}


def _wrong_code(user_id: str, typed: str) -> Page:
    """Count a wrong code against both budgets; the same page for every
    code that is not pending: unknown, expired, or decided by anyone."""
    limit = current_settings().user_code_rate_limit
    waits = [spend(limit, *budget) for budget in _budgets(user_id)]
    spent = [wait for wait in waits if wait is not None]
    if spent:
        return _too_many(max(spent))
    return _entry_page(400, typed[:16], wrong=True)


@bp.route(DEVICE_VERIFICATION_PATH, methods=["GET", "POST"])
def device() -> Page:
    # Reads, and an approval written in one statement: no transaction needed.
    db.autocommit()
    signed_in = current_sign_in()
    if signed_in is None:
        return login_redirect()
    values = request.form if request.method == "POST" else request.args
    typed = values.get("user_code")
    if typed is None:
        return _entry_page()
    limit = current_settings().user_code_rate_limit
    waits = [waiting(limit, *budget) for budget in _budgets(signed_in.user_id)]
    spent = [wait for wait in waits if wait is not None]
    if spent:
        return _too_many(max(spent))
    code = normalize_user_code(typed)
    pending = device_codes.find(code) if code else None
    if pending is None:
        return _wrong_code(signed_in.user_id, typed)
    decision = values.get("decision") if request.method == "POST" else None
    if decision is None:
        return _consent_page(pending, signed_in.user_id)
    if decision not in ("approve", "deny"):
        abort(400, _("Choose approve or deny."))
    return _decide(pending, signed_in.user_id, signed_in.auth_time, decision)


def _consent_page(pending: Pending, user_id: str) -> Page:
    asked = pending.request
    client = query_client(asked.client_id)
    resource = find_resource(asked.resource)
    if client is None or resource is None:
        # Gone since the device asked: nothing left to approve.
        return _entry_page(400, display_user_code(pending.user_code), wrong=True)
    found = signed_in_consent(user_id, client.client_id, resource.uri)
    if found is None:
        return login_redirect()  # the account is gone or disabled
    person, _previous = found
    page = render_template(
        "device/consent.html",
        client_name=client.client_name,
        user_code=display_user_code(pending.user_code),
        resource=resource,
        scopes=[(s, resource.describe(s)) for s in asked.scope.split()],
        user=person,
        document_host=client.document_host,
    )
    return page, 200


def _decide(pending: Pending, user_id: str, auth_time: int, decision: str) -> Page:
    asked = pending.request
    client = query_client(asked.client_id)
    if client is None or find_resource(asked.resource) is None:
        return _entry_page(400, display_user_code(pending.user_code), wrong=True)
    if decision == "deny":
        if not device_codes.decide(pending.user_code, approved=False):
            return _entry_page(400, display_user_code(pending.user_code), wrong=True)
        deny(uuid.UUID(user_id), asked.client_id, asked.scope, asked.resource)
        return render_template("device/done.html", approved=False), 200
    # One statement: the account must be enabled, and a metadata-document
    # client's row is kept with it.
    client_row = document_client_row(client)
    consent_id = approve(
        user_id, asked.client_id, asked.scope, asked.resource, client_row
    )
    if consent_id is None:
        return login_redirect()  # the account was disabled meanwhile
    decided = device_codes.decide(
        pending.user_code,
        approved=True,
        user_id=user_id,
        consent_id=str(consent_id),
        scope=asked.scope,
        auth_time=auth_time,
    )
    if not decided:
        # Decided by another, or expired, in the moment since it was read.
        return _entry_page(400, display_user_code(pending.user_code), wrong=True)
    return render_template("device/done.html", approved=True), 200
