"""Signing in and out: the password form, one way into :mod:`app.signin`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, g, render_template, request
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_limiter import RequestLimit
from limits import parse_many
from werkzeug.exceptions import TooManyRequests

from .. import audit
from ..config import current_settings
from ..device_cookies import lock_device, trusted_device
from ..identity_providers import providers
from ..models import User
from ..oauth.clients import query_client
from ..oauth.constants import AUTHORIZATION_PATH
from ..rate_limits import client_address, limit, setting
from ..signin import (
    LOGIN_PATH,
    PASSWORD,
    current_user,
    end,
    issuer_redirect,
)
from ..signin_complete import complete, target_of
from ..users import account_key, authenticate, find_by_email

bp = Blueprint("auth", __name__)


@dataclass(frozen=True)
class Attempt:
    """Whom a sign-in attempt is for: the account its email names, if any."""

    user: User | None
    #: What limits, device cookies and audit count it by (users.account_key).
    account: str


def _attempt() -> Attempt:
    # Read once per request: by the limits below, then by the view.
    if "login_attempt" not in g:
        email = request.form.get("email", "")
        user = find_by_email(email)
        g.login_attempt = Attempt(user, account_key(email, user))
    attempt: Attempt = g.login_attempt
    return attempt


def _device() -> str | None:
    return trusted_device(_attempt().account)


def _is_trusted() -> bool:
    # flask-limiter asks before it filters by method: a GET looks nothing up.
    return request.method == "POST" and _device() is not None


def _is_untrusted() -> bool:
    return request.method != "POST" or _device() is None


def _account_key() -> str:
    return "login-account:" + _attempt().account


def _device_key() -> str:
    return "login-device:" + (_device() or "")


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
    return target_of(request.values.get("next"))


def _asking_client(target: str) -> str | None:
    """The name of the client whose authorization request ``target`` resumes."""
    parts = urlsplit(target)
    if parts.path != AUTHORIZATION_PATH:
        return None
    client = query_client(parse_qs(parts.query).get("client_id", [None])[0])
    return client.client_name if client is not None else None


@bp.route(LOGIN_PATH, methods=["GET", "POST"])
# Every attempt counts, and is counted before the password is checked: counting
# only failures afterwards would let parallel guesses all slip under the limit.
# A browser holding a device cookie for the account spends its own budget;
# every other attempt spends the address's and the account's, so guessing from
# any number of addresses stays bounded without locking the owner out.
# Each budget bounds guessing, so it is exact: a moving window, never more
# than the count in any window (app/rate_limits.py).
@limit(
    setting("login_rate_limit"),
    exact=True,
    methods=["POST"],
    exempt_when=_is_trusted,
    error_message=_shared_budget_message,
)
@limit(
    setting("login_rate_limit"),
    exact=True,
    methods=["POST"],
    key_func=_account_key,
    exempt_when=_is_trusted,
    error_message=_shared_budget_message,
)
@limit(
    setting("login_rate_limit"),
    exact=True,
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
        return login_page()
    if not current_settings().password_sign_in:
        return login_page(_("Sign-in with a password is turned off here."), 403)
    attempt = _attempt()
    user = authenticate(attempt.user, request.form.get("password", ""))
    if user is None:
        audit.record(
            audit.SIGN_IN_FAILED,
            account=attempt.account,
            address=client_address(),
            method=PASSWORD,
            provider=None,
            reason="credentials",
        )
        # One message for every failure: unknown email, no or a wrong
        # password, disabled account.
        return login_page(_("The email or password is incorrect."), 401)
    return complete(user, _target())


def login_page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    """The sign-in page: the providers' buttons and, unless it is off, the form."""
    target = _target()
    page = render_template(
        "auth/login.html",
        next=target,
        client_name=_asking_client(target),
        providers=list(providers().values()),
        password_sign_in=current_settings().password_sign_in,
        error=error,
        email=request.form.get("email", ""),
    )
    return page, status


@bp.errorhandler(TooManyRequests)
def too_many_attempts(error: TooManyRequests) -> tuple[str, int]:
    """The sign-in form again, saying why it is paused and what still works."""
    return login_page(str(error.description), 429)


@bp.post("/logout")
def logout() -> Response:
    end()
    return issuer_redirect(LOGIN_PATH)
