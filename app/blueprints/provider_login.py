"""Signing in through an identity provider: ``/login/<provider>`` and its callback.

The provider only says who the person is there. Who they are here is the
account holding that identity; a new identity makes an account only for an
allowed domain, and joins an existing account only once the person has
signed in to it (``/login/link``). Whatever the provider remembered, the
MCP client's own consent is still asked on our consent page afterwards.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import TooManyRequests

from .. import audit
from ..config_providers import ProviderSettings
from ..db import db
from ..identities import (
    IdentityTaken,
    account_with_email,
    create_account,
    link,
    owner_of,
)
from ..identity_links import PendingLink, offer, pending, take
from ..identity_providers import finish, providers, start
from ..models import User
from ..rate_limits import client_address, limit, setting
from ..signin import (
    LOGIN_PATH,
    current_sign_in,
    current_user,
    end,
    issuer_redirect,
    login_redirect,
)
from ..signin_complete import complete, target_of
from ..templating import public_url
from ..upstream_identity import SignInFailure, UpstreamIdentity

bp = Blueprint("provider_login", __name__)

#: Where a person confirms linking a new identity to the account they signed in to.
LINK_PATH = LOGIN_PATH + "/link"


def _provider(name: str) -> ProviderSettings:
    provider = providers().get(name)
    if provider is None:
        abort(404, _("There is no such way to sign in."))
    return provider


def callback_url(provider: ProviderSettings) -> str:
    """The redirect URI registered with the provider: one per provider."""
    return public_url("provider_login.callback", name=provider.name)


@bp.post(LOGIN_PATH + "/<name>")
# Each start keeps a few hundred bytes in Redis for minutes: bounded per address.
@limit(setting("login_rate_limit"))
def begin_sign_in(name: str) -> Response | tuple[str, int]:
    """Send the browser to the provider, with a fresh state, nonce and PKCE."""
    provider = _provider(name)
    target = target_of(request.form.get("next"))
    try:
        started = start(provider, callback_url(provider), target)
    except SignInFailure as failure:
        return _failed(failure)
    return Response(status=303, headers={"Location": started.url})


@bp.get(LOGIN_PATH + "/<name>/callback")
@limit(setting("login_rate_limit"))
def callback(name: str) -> Response | tuple[str, int]:
    """Finish the sign-in the provider sends back, or say why it failed."""
    provider = _provider(name)
    signed_in = current_user()
    try:
        finished = finish(provider, request.args)
        with db.transaction():
            found = _account_for(provider, finished.identity, signed_in)
    except SignInFailure as failure:
        return _failed(failure)
    if isinstance(found, User):
        return complete(found, finished.target, provider)
    earlier = current_sign_in()
    held = PendingLink(
        finished.identity,
        found,
        finished.target,
        earlier.session_id if earlier else None,
    )
    return _offer_link(held, provider, adding=earlier is not None)


def _account_for(
    provider: ProviderSettings, identity: UpstreamIdentity, signed_in: User | None
) -> User | str:
    """The account the identity signs in to (made now if it may be), or the
    id of the account it may be linked to once the person proves it theirs:
    the one this browser is signed in to (adding a way in from the account
    page), else the one with the identity's verified email."""
    user = owner_of(identity)
    if user is not None and signed_in is not None and user.id != signed_in.id:
        # Adding a way in to one account must not switch to another.
        raise SignInFailure("identity_taken", provider.name, str(signed_in.id))
    if user is not None:
        if not user.is_active:
            raise SignInFailure("disabled", provider.name, str(user.id))
        return user
    if signed_in is not None:
        return str(signed_in.id)
    existing = account_with_email(identity)
    if existing is not None:
        return str(existing.id)
    if identity.account_email is None:
        raise SignInFailure("email_unverified", provider.name)
    if not identity.allowed_by(provider.allowed_domains):
        raise SignInFailure("domain", provider.name)
    try:
        user = create_account(identity)
    except IdentityTaken:
        # Made meanwhile by a sign-in in another tab: start again.
        raise SignInFailure("state", provider.name) from None
    return user


def _offer_link(
    link_to: PendingLink, provider: ProviderSettings, adding: bool
) -> Response:
    page = render_template(
        "provider_login/link_needed.html",
        adding=adding,
        provider=provider,
        email=link_to.identity.email,
        sign_in_path=LOGIN_PATH + "?next=" + LINK_PATH,
    )
    response = Response(page, status=200, mimetype="text/html")
    offer(response, link_to)
    return response


def _failed(failure: SignInFailure) -> tuple[str, int]:
    audit.record(
        audit.SIGN_IN_FAILED,
        account=failure.account,
        address=client_address(),
        method=None,
        provider=failure.provider,
        reason=failure.reason,
    )
    page = render_template(
        "provider_login/failed.html",
        reason=failure.reason,
        label=providers()[failure.provider].label,
    )
    return page, FAILURE_STATUS.get(failure.reason, 400)


#: The status of each failure's page: the person's doing, or the provider's.
FAILURE_STATUS = {
    "denied": 403,
    "provider_error": 502,
    "unavailable": 502,
    "email_unverified": 403,
    "domain": 403,
    "disabled": 403,
    "identity_taken": 409,
}


@bp.route(LINK_PATH, methods=["GET", "POST"])
def confirm_link() -> Response | tuple[str, int]:
    """Link the identity this browser brought back, once signed in to the account."""
    held = pending()
    if held is None:
        abort(404, _("There is no identity waiting to be linked in this browser."))
    signed_in, user = current_sign_in(), current_user()
    if signed_in is not None and (
        signed_in.session_id == held.earlier_session
        or signed_in.began_at < held.offered_at
    ):
        # Signed in before the provider answered (here, or in a browser the
        # offer was carried to): that proves nothing about this identity.
        # Sign in again, then come back here.
        end()
        return login_redirect()
    if user is None:
        return login_redirect()
    if str(user.id) != held.user_id:
        abort(403, _("The identity can only be linked to the account with its email."))
    provider = providers().get(held.identity.provider)
    if provider is None:
        abort(404, _("There is no such way to sign in."))
    if request.method == "GET":
        page = render_template(
            "provider_login/link.html", provider=provider, email=held.identity.email
        )
        return page, 200
    response = issuer_redirect(held.target)
    taken = take(response)
    if taken is None or taken.user_id != str(user.id):
        abort(404, _("There is no identity waiting to be linked in this browser."))
    try:
        with db.transaction():
            link(user.id, taken.identity)
    except IdentityTaken:
        abort(409, _("This identity already belongs to an account."))
    audit.record(
        audit.IDENTITY_LINKED,
        user_id=user.id,
        address=client_address(),
        provider=provider.name,
    )
    return response


@bp.errorhandler(TooManyRequests)
def too_many(_error: TooManyRequests) -> tuple[str, int]:
    page = render_template("provider_login/failed.html", reason="too_many", label="")
    return page, 429
