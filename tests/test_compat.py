"""Each private passage in app/compat.py still does what the app relies on.

These fail, naming the passage and the library version, on the upgrade that
breaks a passage; the rest of the suite would only see odd behaviour.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from authlib.integrations.flask_oauth2 import ResourceProtector, current_token
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Blueprint, Flask, Response

from app import compat

APP = Path(__file__).resolve().parent.parent / "app"


def _app_with(*names: str) -> Flask:
    app = Flask(__name__)
    for name in names:
        blueprint = Blueprint(name, __name__, url_prefix=f"/{name}")
        blueprint.add_url_rule("/", name, lambda: "ok")
        app.register_blueprint(blueprint)
    return app


def _recorder(seen: list[str], label: str) -> dict[str, Callable[..., Any]]:
    def before() -> None:
        seen.append(f"{label}:before")

    def after(response: Response) -> Response:
        seen.append(f"{label}:after")
        return response

    def teardown(_exc: BaseException | None) -> None:
        seen.append(f"{label}:teardown")

    return {"before": before, "after": after, "teardown": teardown}


def _hook_all(app: Flask, hooks: dict[str, Callable[..., Any]]) -> None:
    app.before_request(hooks["before"])
    app.after_request(hooks["after"])
    app.teardown_request(hooks["teardown"])


def test_confined_to_is_used_with_the_flask_it_was_written_for() -> None:
    low, high = compat.FLASK_HOOKS_VERSIONS
    installed = compat.release("flask")
    assert low <= installed < high, (
        f"app.compat.confined_to reaches into Flask's request-hook dicts and was "
        f"written for Flask {low} up to {high}; Flask {version('flask')} is "
        f"installed: re-check the passage, then widen FLASK_HOOKS_VERSIONS"
    )


def test_flask_still_keeps_request_hooks_in_dicts_keyed_by_blueprint() -> None:
    app = _app_with("a")
    hooks = _recorder([], "x")
    _hook_all(app, hooks)
    where = f"app.compat.confined_to with Flask {version('flask')}"
    assert app.before_request_funcs[None] == [hooks["before"]], where
    assert app.after_request_funcs[None] == [hooks["after"]], where
    assert app.teardown_request_funcs[None] == [hooks["teardown"]], where


def test_hooks_added_inside_confined_to_run_only_for_those_blueprints() -> None:
    app = _app_with("a", "b")
    seen: list[str] = []
    _hook_all(app, _recorder(seen, "everywhere"))
    with compat.confined_to(app, ["a"]):
        _hook_all(app, _recorder(seen, "confined"))
    client = app.test_client()

    assert client.get("/b/").status_code == 200
    only_b, seen[:] = list(seen), []
    assert client.get("/a/").status_code == 200

    where = f"app.compat.confined_to with Flask {version('flask')}"
    assert only_b == ["everywhere:before", "everywhere:after", "everywhere:teardown"]
    assert seen == [
        "everywhere:before",
        "confined:before",
        "confined:after",
        "everywhere:after",
        "confined:teardown",
        "everywhere:teardown",
    ], where


def test_confined_to_wraps_the_hooks_of_the_wrapped_blueprints_only() -> None:
    app = _app_with("a", "b")
    seen: list[str] = []

    def wrap_for(hook: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            seen.append("wrapper")
            return hook(*args)

        return wrapped

    with compat.confined_to(app, ["a", "b"], wrap_for=wrap_for, wrapped=["b"]):
        app.before_request(_recorder(seen, "confined")["before"])
    client = app.test_client()

    client.get("/a/")
    assert seen == ["confined:before"]
    seen.clear()
    client.get("/b/")
    assert seen == ["wrapper", "confined:before"]


def test_acquire_bearer_token_is_used_with_the_authlib_it_was_copied_from() -> None:
    low, high = compat.AUTHLIB_ACQUIRE_TOKEN_VERSIONS
    installed = compat.release("authlib")
    assert low <= installed < high, (
        f"app.compat.acquire_bearer_token copies Authlib's "
        f"ResourceProtector.acquire_token and was written for Authlib {low} up "
        f"to {high}; Authlib {version('authlib')} is installed: re-check the "
        f"passage, then widen AUTHLIB_ACQUIRE_TOKEN_VERSIONS"
    )


def test_authlibs_acquire_token_is_still_the_one_acquire_bearer_token_copies() -> None:
    source = inspect.getsource(ResourceProtector.acquire_token)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == compat.AUTHLIB_ACQUIRE_TOKEN_SHA256, (
        f"Authlib {version('authlib')} changed "
        f"authlib.integrations.flask_oauth2.ResourceProtector.acquire_token, "
        f"which app.compat.acquire_bearer_token copies step for step: bring the "
        f"copy in line with it, then pin the new digest {digest}:\n{source}"
    )


class _Token(dict):
    def get_scope(self) -> str:
        return "read"

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False


class _AnyTokenValidator(BearerTokenValidator):
    def authenticate_token(self, token_string: str) -> _Token:
        return _Token(value=token_string)


def test_acquire_bearer_token_leaves_the_token_where_current_token_reads_it() -> None:
    protector = ResourceProtector()
    protector.register_token_validator(_AnyTokenValidator())
    app = Flask(__name__)
    headers = {"Authorization": "Bearer abc"}
    with app.test_request_context("/x?y=1", headers=headers):
        token = compat.acquire_bearer_token(protector, "https://as.example", "read")
        assert token == {"value": "abc"}
        assert current_token._get_current_object() is token, (
            f"app.compat.acquire_bearer_token with Authlib {version('authlib')}: "
            f"Authlib's current_token no longer reads the token where Authlib "
            f"keeps it"
        )


@pytest.mark.parametrize(
    "private",
    [
        "_check_request_limit",
        "request_ctx",
        "authlib_server_oauth2_token",
        "_srcfile",
        "before_request_funcs",
        "after_request_funcs",
        "teardown_request_funcs",
    ],
)
def test_no_module_but_compat_names_a_private_passage(private: str) -> None:
    naming = [
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if not path.name.startswith("compat") and private in path.read_text()
    ]
    assert naming == []
