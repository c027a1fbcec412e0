"""The MCP authorization server: ``create_app`` assembles it and does nothing else."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from . import (
    cli,
    errors,
    i18n,
    identity_providers,
    logs,
    middleware,
    rate_limits,
    redis_store,
    security,
    sessions,
    surfaces,
)
from .blueprints import (
    account,
    api_key_routes,
    auth,
    authorize,
    device,
    forward_auth,
    health,
    mcp_endpoint,
    provider_login,
    register,
    token,
    wellknown,
)
from .config import settings_from_environment
from .db import db
from .oauth import client_metadata, key_sets
from .oauth import server as oauth_server
from .surfaces import Surface
from .templating import init_app as init_templating


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment; ``overrides`` replace variables (tests)."""
    settings = settings_from_environment(overrides)
    app = Flask(__name__, template_folder="../templates")
    app.config["SETTINGS"] = settings
    # Werkzeug would answer '//' in a path with a redirect built from the Host
    # header; every URL we print must come from ISSUER instead.
    app.url_map.merge_slashes = False

    logs.configure_logging(settings.log_level)
    security.init_app(app, settings)
    sessions.init_app(app)
    errors.init_app(app)
    i18n.init_app(app)
    init_templating(app)

    db.init_app(app, settings.database_url)
    redis_store.init_app(app, settings.redis_client_url)
    oauth_server.init_app(app, settings)
    client_metadata.init_app(app)
    key_sets.init_app(app)
    identity_providers.init_app(app, settings)

    for blueprint, surface in (
        (health.bp, Surface.SERVICE),
        (wellknown.bp, Surface.DOCUMENT),
        (token.bp, Surface.API),
        (register.bp, Surface.API),
        (authorize.bp, Surface.PAGE),
        (device.bp, Surface.PAGE),
        (auth.bp, Surface.PAGE),
        (provider_login.bp, Surface.PAGE),
        (account.bp, Surface.PAGE),
        (api_key_routes.bp, Surface.API),
        (mcp_endpoint.bp, Surface.API),
        (forward_auth.bp, Surface.SERVICE),
    ):
        surfaces.register(app, blueprint, surface)
    surfaces.init_app(app)
    rate_limits.init_app(app, settings.redis_client_url)
    cli.init_app(app)
    middleware.init_app(app, settings)
    return app
