"""The account page: a signed-in person's API keys and authorized clients."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, abort, make_response, render_template, request
from flask_babel import gettext as _

from ..api_keys import (
    MAX_EXPIRES_IN_DAYS,
    MAX_NAME_LENGTH,
    SCOPES,
    ApiKeyError,
    KeyLimitReached,
    create_api_key,
    is_expired,
    list_api_keys,
    parse_id,
    revoke,
    validate_new_key,
)
from ..db import db
from ..models import User, utcnow
from ..oauth.consent import list_consents, withdraw
from ..oauth.refresh_store import last_refreshed
from ..signin import current_user, issuer_redirect, login_required

bp = Blueprint("account", __name__)

#: Where every action on the page returns to (POST-redirect-GET).
ACCOUNT_PATH = "/account"


@bp.app_template_filter("utc")
def format_utc(moment: datetime | None) -> str:
    """Show a timestamp to people, in UTC to the minute."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _signed_in() -> User:
    user = current_user()
    assert user is not None  # login_required let the request through
    return user


def _account_page(status: int = 200, error: str | None = None) -> tuple[str, int]:
    user = _signed_in()
    consents = list_consents(user.id)
    page = render_template(
        "account/index.html",
        user=user,
        keys=list_api_keys(user.id),
        consents=consents,
        refreshed=last_refreshed([consent.id for consent in consents]),
        is_expired=is_expired,
        now=utcnow(),
        scopes=SCOPES,
        max_name_length=MAX_NAME_LENGTH,
        max_days=MAX_EXPIRES_IN_DAYS,
        error=error,
        form=request.form if request.method == "POST" else None,
    )
    return page, status


@bp.get(ACCOUNT_PATH)
@login_required
def index() -> tuple[str, int]:
    """Show the person's keys and the clients they authorized."""
    return _account_page()


def _days(value: str) -> object:
    # An empty field means "never expires"; anything not a number is left for
    # validation to refuse with its message.
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        return value


@bp.post(f"{ACCOUNT_PATH}/api-keys")
@login_required
def create_key() -> Response | tuple[str, int]:
    """Create a key and show it, this once, in the answer itself."""
    user = _signed_in()
    form = request.form
    try:
        new_key = validate_new_key(
            form.get("name"),
            form.getlist("scopes"),
            _days(form.get("expires_in_days", "")),
        )
        with db.transaction():
            key, secret = create_api_key(user.id, new_key)
    except KeyLimitReached as exc:
        return _account_page(403, str(exc))
    except ApiKeyError as exc:
        return _account_page(400, str(exc))
    # The key goes out in this answer and nowhere else (not the session, not a
    # redirect): reloading the account page can never show it again.
    page = render_template("account/key_created.html", key=key, secret=secret)
    return make_response(page, 201)


@bp.post(f"{ACCOUNT_PATH}/api-keys/<key_id>/revoke")
@login_required
def revoke_key(key_id: str) -> Response:
    """Revoke one of the person's keys."""
    parsed = parse_id(key_id)
    with db.transaction():
        revoked = parsed is not None and revoke(_signed_in().id, parsed)
    if not revoked:
        abort(404, _("There is no such API key."))
    return issuer_redirect(ACCOUNT_PATH)


@bp.post(f"{ACCOUNT_PATH}/consents/<consent_id>/revoke")
@login_required
def revoke_client(consent_id: str) -> Response:
    """Withdraw a client's authorization; its tokens stop working at once."""
    parsed = parse_id(consent_id)
    with db.transaction():
        revoked = parsed is not None and withdraw(_signed_in().id, parsed)
    if not revoked:
        abort(404, _("There is no such authorization."))
    return issuer_redirect(ACCOUNT_PATH)
