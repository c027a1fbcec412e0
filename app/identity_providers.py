"""Signing in through an identity provider, with Authlib's Flask client.

One client per provider in ``SIGN_IN_PROVIDERS``. An OpenID provider is found
by discovery; the authorization code flow uses PKCE S256, a ``state`` and a
``nonce`` kept by :mod:`app.provider_states` (single use, this browser only),
and the ID token's signature (the provider's JWKS, fetched again for a key
it does not know), ``iss``, ``aud``, ``exp`` and ``nonce`` are checked.
Authlib leaves RFC 9207's ``iss`` on the callback to us. GitHub is OAuth
without OpenID Connect (:mod:`app.github_identity`).

Whatever goes wrong ends as :class:`SignInFailure` with a reason code, which
the sign-in page explains and the audit trail records.

Authlib's client is used through its public steps rather than its two
one-call helpers: ``authorize_redirect`` cannot keep ``next`` with the
state, and ``authorize_access_token`` redeems the code before the RFC 9207
``iss`` could be compared, and checks ``aud`` only when told to. So:
``create_authorization_url``, the framework's ``set_state_data`` /
``get_state_data`` (:mod:`app.provider_states`), ``fetch_access_token``,
``parse_id_token`` with explicit ``iss`` and ``aud`` options, ``userinfo``.
Discovery and the JWKS are kept by each process's client, as Authlib does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app, session
from joserfc.errors import JoseError

from .config import Settings
from .config_providers import GITHUB_KIND, ProviderSettings
from .github_identity import github_identity
from .provider_states import BrowserBoundStates
from .upstream_identity import (
    SignInFailure,
    UpstreamIdentity,
    accepts_discovered_issuer,
    from_id_token,
    is_entra,
    token_issuer,
)

log = logging.getLogger(__name__)

#: Seconds any call to a provider may take before the sign-in gives up.
TIMEOUT = 10


class ProviderClients(OAuth):
    """Authlib's Flask client registry, keeping ``state`` in Redis."""

    framework_integration_cls = BrowserBoundStates


@dataclass(frozen=True)
class Started:
    """Where to send the browser, at the provider."""

    url: str


@dataclass(frozen=True)
class Finished:
    """Who the provider says signed in, and where they were going."""

    identity: UpstreamIdentity
    #: The local path the sign-in was started for (``next``).
    target: str


def init_app(app: Flask, settings: Settings) -> None:
    clients = ProviderClients(app)
    for provider in settings.sign_in_providers:
        clients.register(provider.name, **_client_options(provider))
    app.extensions["identity_providers"] = {
        provider.name: provider for provider in settings.sign_in_providers
    }


def _client_options(provider: ProviderSettings) -> dict[str, Any]:
    client_kwargs = {
        "scope": " ".join(provider.scopes),
        "code_challenge_method": "S256",
        "default_timeout": TIMEOUT,
    }
    options: dict[str, Any] = {
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
    }
    if provider.kind == GITHUB_KIND:
        # GitHub's documented OAuth app endpoints; it reads the client's
        # credentials from the form.
        client_kwargs["token_endpoint_auth_method"] = "client_secret_post"
        return {
            **options,
            "authorize_url": provider.issuer + "/login/oauth/authorize",
            "access_token_url": provider.issuer + "/login/oauth/access_token",
            "api_base_url": provider.api_url + "/",
            "client_kwargs": client_kwargs,
        }
    return {
        **options,
        "server_metadata_url": provider.discovery_url,
        "client_kwargs": client_kwargs,
    }


def signs_in(issuer: str) -> bool:
    """Whether an identity of ``issuer`` can sign in here today: a configured
    provider's (for Entra ID, any tenant on its host). An identity linked by
    an enterprise's identity assertion alone cannot."""
    host = urlsplit(issuer).hostname
    return any(
        provider.issuer == issuer
        or (is_entra(provider.issuer) and urlsplit(provider.issuer).hostname == host)
        for provider in providers().values()
    )


def providers() -> Mapping[str, ProviderSettings]:
    """The configured providers by name, in ``SIGN_IN_PROVIDERS`` order."""
    return current_app.extensions["identity_providers"]


def _client(provider: ProviderSettings) -> Any:
    return current_app.extensions["authlib.integrations.flask_client"].create_client(
        provider.name
    )


def start(provider: ProviderSettings, redirect_uri: str, target: str) -> Started:
    """Begin a sign-in: remember its state in Redis, and where it leads."""
    client = _client(provider)
    try:
        if provider.kind != GITHUB_KIND:
            _metadata(provider, client)
        created = client.create_authorization_url(redirect_uri)
    except (requests.RequestException, ValueError, RuntimeError) as exc:
        log.warning("provider %s unreachable: %s", provider.name, type(exc).__name__)
        raise SignInFailure("unavailable", provider.name) from None
    state = created.pop("state")
    data = {
        "redirect_uri": redirect_uri,
        "code_verifier": created.get("code_verifier"),
        "nonce": created.get("nonce"),
        "next": target,
    }
    client.framework.set_state_data(session, state, data)
    return Started(created["url"])


def finish(provider: ProviderSettings, args: Mapping[str, str]) -> Finished:
    """Finish a sign-in from the callback's query; raise :class:`SignInFailure`."""
    client = _client(provider)
    # Taken out first, whatever follows: a state is good for one answer only.
    data = client.framework.get_state_data(session, args.get("state"))
    if data is None:
        raise SignInFailure("state", provider.name)
    target = str(data.get("next") or "")
    if "error" in args:
        denied = args.get("error") == "access_denied"
        raise SignInFailure("denied" if denied else "provider_error", provider.name)
    if not isinstance(args.get("code"), str) or not args["code"]:
        raise SignInFailure("provider_error", provider.name)
    try:
        if provider.kind == GITHUB_KIND:
            token = _token(client, args["code"], data)
            identity = github_identity(client, provider, token)
        else:
            metadata = _metadata(provider, client)
            _check_response_issuer(provider, metadata, args.get("iss"))
            token = _token(client, args["code"], data)
            identity = _id_token_identity(client, provider, token, data)
    except requests.RequestException as exc:
        log.warning("provider %s failed: %s", provider.name, type(exc).__name__)
        raise SignInFailure("unavailable", provider.name) from None
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        # What a provider answers is input like any other: an answer of the
        # wrong shape is refused, never a crash.
        log.warning("provider %s answered oddly: %s", provider.name, type(exc).__name__)
        raise SignInFailure("token", provider.name) from None
    return Finished(identity, target)


def _metadata(provider: ProviderSettings, client: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = client.load_server_metadata()
    # OpenID Connect Discovery 1.0 §4.3: the document must name the very
    # issuer it was fetched for, or its keys and endpoints are someone else's.
    if not accepts_discovered_issuer(provider, metadata.get("issuer")):
        log.warning("provider %s: discovery names another issuer", provider.name)
        # Emptied, the document is fetched again at the next sign-in, so a
        # passing fault (a proxy's error page) does not stick until restart.
        client.server_metadata.clear()
        raise SignInFailure("unavailable", provider.name)
    return metadata


def _check_response_issuer(
    provider: ProviderSettings, metadata: dict[str, Any], iss: str | None
) -> None:
    # RFC 9207 §2.4: compare iss when sent; a provider that advertises it
    # must send it, or the answer may come from another provider (mix-up).
    if iss is None and not metadata.get(
        "authorization_response_iss_parameter_supported"
    ):
        return
    if iss != provider.issuer:
        raise SignInFailure("issuer", provider.name)


def _token(client: Any, code: str, data: dict[str, Any]) -> dict[str, Any]:
    try:
        token: dict[str, Any] = client.fetch_access_token(
            redirect_uri=data.get("redirect_uri"),
            code=code,
            code_verifier=data.get("code_verifier"),
        )
    except OAuthError:
        raise SignInFailure("token", client.name) from None
    return token


def _id_token_identity(
    client: Any, provider: ProviderSettings, token: dict[str, Any], data: dict
) -> UpstreamIdentity:
    issuer = token_issuer(client.server_metadata["issuer"], token.get("id_token"))
    if issuer is None or "id_token" not in token or not data.get("nonce"):
        raise SignInFailure("token", provider.name)
    # Authlib checks aud only when told to: an ID token for another client
    # that names us in azp would otherwise pass.
    options = {
        "iss": {"essential": True, "values": [issuer]},
        "aud": {"essential": True, "values": [provider.client_id]},
    }
    try:
        claims = client.parse_id_token(token, data["nonce"], claims_options=options)
    except (JoseError, ValueError, TypeError, KeyError, RuntimeError):
        raise SignInFailure("token", provider.name) from None
    userinfo: Mapping[str, Any] = {}
    if "email" not in claims and client.server_metadata.get("userinfo_endpoint"):
        # Providers that conform to OpenID Connect Core §5.4 put scope claims
        # in the UserInfo answer, not in the ID token of a code flow.
        userinfo = client.userinfo(token=token)
    return from_id_token(provider, dict(claims), dict(userinfo), issuer)
