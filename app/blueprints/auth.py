"""Signing in and out."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_limiter import RequestLimit
from limits import parse_many
from werkzeug.exceptions import TooManyRequests

from .. import audit
from ..config import current_settings
from ..device_cookies import lock_device, login_account, remember_device, trusted_device
from ..oauth.clients import query_client
from ..oauth.constants import AUTHORIZATION_PATH
from ..rate_limits import client_address, limit, setting
from ..sessions import current_user, is_local_target, issuer_redirect, sign_in, sign_out
from ..users import authenticate

bp = Blueprint("auth", __name__)

#: Where people land after signing in when no ``next`` was given.
DEFAULT_TARGET = "/account"


def _email() -> str:
    return request.form.get("email", "")


def _is_trusted() -> bool:
    return trusted_device(_email()) is not None


def _is_untrusted() -> bool:
    return trusted_device(_email()) is None


def _account() -> str:
    return login_account(_email())


def _account_key() -> str:
    return "login-account:" + _account()


def _device_key() -> str:
    return "login-device:" + (trusted_device(_email()) or "")


def _device_budget_spent(_: RequestLimit) -> None:
    # A stolen device cookie must not be an endless oracle: once its budget
    # is spent it counts for nothing, and its attempts fall to the shared one.
    lock_device()


def _wait_minutes() -> int:
    """The longest window of ``LOGIN_RATE_LIMIT``, in whole minutes: by then a
    spent budget has been given back."""
    items = parse_many(current_settings().login_rate_limit)
    return max(1, -(-max(item.get_expiry() for item in items) // 60))


def _shared_budget_message() -> str:
    # OWASP accepts that strangers can pause sign-in for browsers the account
    # has never used; the page says so and names the ways in that remain.
    return " ".join(
        (
            _(
                "There have been too many sign-in attempts for this account or "
                "from this network, perhaps by someone else, so sign-in from "
                "this browser is paused."
            ),
            _(
                "A browser or device you have signed in with before is not "
                "affected: you can sign in there."
            ),
            ngettext(
                "Otherwise, try again in %(num)d minute.",
                "Otherwise, try again in %(num)d minutes.",
                _wait_minutes(),
            ),
        )
    )


def _device_budget_message() -> str:
    return ngettext(
        "There have been too many sign-in attempts from this browser. "
        "Try again in %(num)d minute.",
        "There have been too many sign-in attempts from this browser. "
        "Try again in %(num)d minutes.",
        _wait_minutes(),
    )


def _target() -> str:
    target = request.values.get("next")
    return target if target and is_local_target(target) else DEFAULT_TARGET


def _asking_client(target: str) -> str | None:
    """The name of the client whose authorization request ``target`` resumes."""
    parts = urlsplit(target)
    if parts.path != AUTHORIZATION_PATH:
        return None
    client = query_client(parse_qs(parts.query).get("client_id", [None])[0])
    return client.client_name if client is not None else None


@bp.route("/login", methods=["GET", "POST"])
# Every attempt counts, and is counted before the password is checked: counting
# only failures afterwards would let parallel guesses all slip under the limit.
# A browser holding a device cookie for the account spends its own budget;
# every other attempt spends the address's and the account's, so guessing from
# any number of addresses stays bounded without locking the owner out.
@limit(
    setting("login_rate_limit"),
    methods=["POST"],
    exempt_when=_is_trusted,
    error_message=_shared_budget_message,
)
@limit(
    setting("login_rate_limit"),
    methods=["POST"],
    key_func=_account_key,
    exempt_when=_is_trusted,
    error_message=_shared_budget_message,
)
@limit(
    setting("login_rate_limit"),
    methods=["POST"],
    key_func=_device_key,
    exempt_when=_is_untrusted,
    on_breach=_device_budget_spent,
    error_message=_device_budget_message,
)
def login() -> Response | tuple[str, int] | str:
    if request.method == "GET":
        if current_user() is not None:
            return issuer_redirect(_target())
        target = _target()
        return render_template(
            "auth/login.html", next=target, client_name=_asking_client(target)
        )
    user = authenticate(request.form.get("email", ""), request.form.get("password", ""))
    if user is None:
        audit.record(audit.SIGN_IN_FAILED, account=_account(), address=client_address())
        # One message for every failure: unknown email, wrong password, disabled.
        error = _("The email or password is incorrect.")
        page = render_template(
            "auth/login.html",
            next=_target(),
            client_name=_asking_client(_target()),
            error=error,
            email=request.form.get("email", ""),
        )
        return page, 401
    sign_in(user)
    audit.record(
        audit.SIGN_IN_SUCCEEDED,
        user_id=user.id,
        account=_account(),
        address=client_address(),
    )
    response = issuer_redirect(_target())
    remember_device(response, user.email)
    return response


@bp.errorhandler(TooManyRequests)
def too_many_attempts(error: TooManyRequests) -> tuple[str, int]:
    """The sign-in form again, saying why it is paused and what still works."""
    page = render_template(
        "auth/login.html",
        next=_target(),
        client_name=_asking_client(_target()),
        error=error.description,
        email=request.form.get("email", ""),
    )
    return page, 429


@bp.post("/logout")
def logout() -> Response:
    sign_out()
    return issuer_redirect("/login")
