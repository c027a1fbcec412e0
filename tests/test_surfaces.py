"""Every route follows its blueprint's declared surface: CSRF, errors, CORS, cache.

The table is read from the running app, so a blueprint added later is checked
by the same rules without anyone editing this file.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from conftest import LiveServer
from flask import Blueprint, Flask
from helpers import Browser

from app import surfaces
from app.surfaces import Surface

#: Methods a browser sends without a CORS preflight's permission slip.
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
#: A browser page on an origin the service has never heard of.
FOREIGN_ORIGIN = "https://elsewhere.example"


def _concrete(rule: str) -> str:
    """A path the rule matches: every variable filled with a plausible value."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda _: str(uuid.uuid4()), rule)


def _routes(app: Any) -> list[tuple[str, str, Surface, bool]]:
    declared = app.extensions["surfaces"]
    routes = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0]
        if not blueprint:
            continue  # static files
        view = app.view_functions[rule.endpoint]
        same_origin = getattr(view, "same_origin_only", False)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            path = _concrete(rule.rule)
            routes.append((method, path, declared[blueprint], same_origin))
    return routes


def test_every_blueprint_declares_its_surface(app: Any) -> None:
    assert set(app.blueprints) == set(app.extensions["surfaces"])


def test_every_route_follows_its_surface(server: LiveServer, browser: Browser) -> None:
    routes = _routes(server.app)
    assert {surface for _, _, surface, _ in routes} == set(Surface)
    for method, path, surface, same_origin in routes:
        rules = surface.value
        where = f"{method} {path} ({surface.name})"
        # Without cookies, tokens or a CSRF token: every unsafe request is refused
        # by CSRF on a page, and by its own checks elsewhere.
        response = browser.request(method, path, data={"x": "y"})
        is_csrf_refusal = response.status_code == 400 and "CSRF" in response.text
        if method not in SAFE_METHODS:
            assert is_csrf_refusal == rules.csrf, where
        assert response.headers.get("Cache-Control") == rules.cache_control, where
        if response.status_code >= 400:
            wanted = "text/html" if rules.html_errors else "application/json"
            assert response.headers["Content-Type"].startswith(wanted), where
        preflight = browser.options(
            path,
            headers={
                "Origin": FOREIGN_ORIGIN,
                "Access-Control-Request-Method": method,
            },
        )
        # A path may be open for one method and not another (/mcp: POST only).
        allowed = preflight.headers.get("Access-Control-Allow-Methods", "")
        opened = preflight.headers.get(
            "Access-Control-Allow-Origin"
        ) == "*" and method in allowed.split(", ")
        assert opened == (rules.cross_origin and not same_origin), where


@pytest.mark.parametrize("surface", list(Surface))
def test_a_new_blueprint_gets_its_surfaces_rules(surface: Surface) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="x" * 32)
    bp = Blueprint("newcomer", __name__)
    bp.add_url_rule("/new", "new", lambda: "", methods=["POST"])
    surfaces.register(app, bp, surface)
    surfaces.init_app(app)
    response = app.test_client().post("/new", headers={"Origin": FOREIGN_ORIGIN})
    assert (response.status_code == 400) == surface.value.csrf
    assert response.headers["Cache-Control"] == surface.value.cache_control
    opened = response.headers.get("Access-Control-Allow-Origin") == "*"
    assert opened == surface.value.cross_origin


def test_a_blueprint_registered_without_a_surface_stops_the_app() -> None:
    app = Flask(__name__)
    app.register_blueprint(Blueprint("forgotten", __name__))
    with pytest.raises(RuntimeError, match="forgotten"):
        surfaces.init_app(app)


def test_cors_headers_on_fresh_answers_only_when_a_browser_asks(
    server: LiveServer, browser: Browser
) -> None:
    # Only browsers send Origin and read CORS headers; an answer no cache
    # keeps needs them only then. A cacheable document carries them always:
    # a shared cache may hand the same copy to a browser later.
    asked = browser.post("/mcp", json={}, headers={"Origin": FOREIGN_ORIGIN})
    unasked = browser.post("/mcp", json={})
    assert asked.headers.get("Access-Control-Allow-Origin") == "*"
    assert "Access-Control-Allow-Origin" not in unasked.headers
    document = browser.get("/.well-known/oauth-authorization-server")
    assert document.headers["Cache-Control"].startswith("public")
    assert document.headers.get("Access-Control-Allow-Origin") == "*"


def test_extension_hooks_run_only_for_the_surfaces_they_serve(app: Any) -> None:
    # CSRF on pages, CORS on cross-origin surfaces, the limiter on
    # blueprints with limits: nothing app-wide on every request.
    assert app.before_request_funcs.get(None, []) == []
    assert app.after_request_funcs.get(None, []) == []
    assert app.teardown_request_funcs.get(None, []) == []
    pages = {"authorize", "auth", "account"}
    for name in pages:
        names = [f.__qualname__ for f in app.before_request_funcs[name]]
        assert any("csrf" in n for n in names), name
    assert not any(
        "csrf" in f.__qualname__ for f in app.before_request_funcs.get("health", [])
    )


@pytest.mark.parametrize("surface", list(Surface))
def test_only_pages_set_the_session_cookie(surface: Surface) -> None:
    from flask import session

    from app import sessions

    app = Flask(__name__)
    app.config.update(SECRET_KEY="x" * 32)
    sessions.init_app(app)
    bp = Blueprint("writer", __name__)

    def write() -> str:
        session["seen"] = "1"
        return ""

    bp.add_url_rule("/write", "write", write)
    surfaces.register(app, bp, surface)
    surfaces.init_app(app)
    response = app.test_client().get("/write")
    assert ("Set-Cookie" in response.headers) == (surface is Surface.PAGE)
