"""Signing in and out."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _

from ..oauth.clients import query_client
from ..oauth.metadata import AUTHORIZATION_PATH
from ..rate_limits import limit, setting
from ..sessions import current_user, is_local_target, issuer_redirect, sign_in, sign_out
from ..users import authenticate, normalize_email

bp = Blueprint("auth", __name__)

#: Where people land after signing in when no ``next`` was given.
DEFAULT_TARGET = "/account"


def _account_key() -> str:
    # Hashed, so the limiter's own log lines never carry an email address.
    email = normalize_email(request.form.get("email", ""))[:320]
    digest = hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()
    return "login-account:" + digest[:32]


def _target() -> str:
    target = request.values.get("next")
    return target if is_local_target(target) else DEFAULT_TARGET


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
@limit(setting("login_rate_limit"), methods=["POST"])
@limit(setting("login_rate_limit"), methods=["POST"], key_func=_account_key)
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
    return issuer_redirect(_target())


@bp.post("/logout")
def logout() -> Response:
    sign_out()
    return issuer_redirect("/login")
