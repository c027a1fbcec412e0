"""The account page: a signed-in person's API keys, authorized clients,
service clients and ways to sign in."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, make_response, render_template, request
from flask_babel import gettext as _

from .. import audit, service_clients
from ..api_keys import (
    MAX_EXPIRES_IN_DAYS,
    MAX_NAME_LENGTH,
    ApiKeyError,
    KeyLimitReached,
    api_keys_page,
    create_api_key,
    is_expired,
    parse_id,
    revoke,
    validate_new_key,
)
from ..db import db
from ..identities import LastWayIn, list_identities, remove
from ..identity_providers import providers
from ..models import User, utcnow
from ..oauth.consent import consents_page, withdraw
from ..oauth.refresh_store import last_refreshed
from ..oauth.resources import Resource, known_resources, mcp_resource, registry
from ..pagination import page_number
from ..signin import current_user, issuer_redirect, login_required
from ..templating import public_url

bp = Blueprint("account", __name__)

#: Where every action on the page returns to (POST-redirect-GET).
ACCOUNT_PATH = "/account"

#: The page shown of each list, by its query (and form) parameter: a revoke
#: form carries them, so that its redirect comes back to the pages it was on.
KEYS_PAGE = "keys_page"
APPS_PAGE = "apps_page"
SERVICES_PAGE = "services_page"
PAGE_PARAMETERS = (KEYS_PAGE, APPS_PAGE, SERVICES_PAGE)


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


def _pages_asked() -> dict[str, int]:
    """The page of each list a request asks for (a GET's query, a form's fields)."""
    values = request.form if request.method == "POST" else request.args
    return {name: page_number(values, name) for name in PAGE_PARAMETERS}


def _back_to_pages() -> Response:
    """Back to the account page, on the pages of its lists the form was sent from."""
    pages = {name: n for name, n in _pages_asked().items() if n > 1}
    return issuer_redirect(ACCOUNT_PATH + (f"?{urlencode(pages)}" if pages else ""))


def _account_page(status: int = 200, error: str | None = None) -> tuple[str, int]:
    user = _signed_in()
    asked = _pages_asked()
    keys = api_keys_page(user.id, asked[KEYS_PAGE])
    consents = consents_page(user.id, asked[APPS_PAGE])
    services = service_clients.page_for(user.id, asked[SERVICES_PAGE])
    # The pages shown (one past the end shows the last), for links and forms.
    pages = {KEYS_PAGE: keys.number, APPS_PAGE: consents.number}
    pages[SERVICES_PAGE] = services.number
    resources = known_resources()
    page = render_template(
        "account/index.html",
        user=user,
        keys=keys,
        consents=consents,
        servers=_by_server(consents.items, resources),
        resources=resources,
        resource_names={resource.uri: resource.name for resource in resources},
        refreshed=last_refreshed([consent.id for consent in consents.items]),
        identities=list_identities(user.id),
        services=services,
        pages=pages,
        page_url=_page_url(pages),
        provider_labels={p.issuer: p.label for p in providers().values()},
        providers=list(providers().values()),
        is_expired=is_expired,
        now=utcnow(),
        max_name_length=MAX_NAME_LENGTH,
        max_days=MAX_EXPIRES_IN_DAYS,
        error=error,
        form=request.form if request.method == "POST" else None,
    )
    return page, status


def _page_url(pages: dict[str, int]) -> object:
    def url(name: str, number: int) -> str:
        wanted = {**pages, name: number}
        return public_url("account.index", **{k: n for k, n in wanted.items() if n > 1})

    return url


def _by_server(consents: list, resources: tuple[Resource, ...]) -> list[tuple]:
    """The consents grouped by the resource they are for, in registry order."""
    groups: dict[str, list] = {}
    for consent in consents:
        groups.setdefault(consent.resource, []).append(consent)
    known = [(r, groups.pop(r.uri)) for r in resources if r.uri in groups]
    # One removed meanwhile is still shown, by its URI, so it can be revoked.
    gone = [(Resource(uri, uri, (), 0), found) for uri, found in groups.items()]
    return known + gone


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
    # A form from before servers were named makes keys for the built-in one.
    named = form.get("resource")
    resource = registry().find(named) if named else mcp_resource()
    try:
        if resource is None:
            raise ApiKeyError(_("Choose the server the key is for."))
        new_key = validate_new_key(
            form.get("name"),
            form.getlist("scopes"),
            _days(form.get("expires_in_days", "")),
            resource,
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
    return _back_to_pages()


@bp.post(f"{ACCOUNT_PATH}/consents/<consent_id>/revoke")
@login_required
def revoke_client(consent_id: str) -> Response:
    """Withdraw a client's authorization; its tokens stop working at once."""
    parsed = parse_id(consent_id)
    with db.transaction():
        revoked = parsed is not None and withdraw(_signed_in().id, parsed, audit.PERSON)
    if not revoked:
        abort(404, _("There is no such authorization."))
    return _back_to_pages()


@bp.post(f"{ACCOUNT_PATH}/identities/<identity_id>/remove")
@login_required
def remove_identity(identity_id: str) -> Response | tuple[str, int]:
    """Stop an identity provider's account from signing in to this one."""
    user = _signed_in()
    parsed = parse_id(identity_id)
    try:
        with db.transaction():
            removed = parsed is not None and remove(user, parsed)
    except LastWayIn:
        return _account_page(
            409, _("This is your only way to sign in, so it cannot be removed.")
        )
    if not removed:
        abort(404, _("There is no such way to sign in."))
    audit.record(audit.IDENTITY_REMOVED, user_id=user.id, identity_id=parsed)
    return _back_to_pages()


@bp.post(f"{ACCOUNT_PATH}/service-clients")
@login_required
def create_service_client() -> Response | tuple[str, int]:
    """Make a service client and show its id (and secret), this once."""
    user = _signed_in()
    form = request.form
    named = form.get("resource")
    resource = registry().find(named) if named else None
    try:
        if resource is None:
            raise service_clients.ServiceClientProblem(
                _("Choose the server the client is for.")
            )
        keys = service_clients.keys_from(form.get("jwks"), form.get("jwks_uri"))
        with db.transaction():
            made = service_clients.create(
                form.get("name", ""),
                resource,
                form.get("scopes", ""),
                keys,
                owner=user,
                acts_for_owner=form.get("acts_for") == "me",
                actor=audit.PERSON,
            )
    except service_clients.ServiceClientLimit as exc:
        return _account_page(403, str(exc))
    except service_clients.ServiceClientProblem as exc:
        return _account_page(400, str(exc))
    # As for API keys: the secret goes out in this answer and nowhere else.
    page = render_template(
        "account/service_client_created.html", client=made, resource=resource
    )
    return make_response(page, 201)


@bp.post(f"{ACCOUNT_PATH}/service-clients/<client_id>/revoke")
@login_required
def revoke_service_client(client_id: str) -> Response:
    """Revoke one of the person's service clients; its tokens stop at once."""
    with db.transaction():
        revoked = service_clients.revoke(
            client_id, owner_id=_signed_in().id, actor=audit.PERSON
        )
    if not revoked:
        abort(404, _("There is no such service client."))
    return _back_to_pages()
