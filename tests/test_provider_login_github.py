"""GitHub's preset: OAuth and the REST API, people known by their numeric id.

No real GitHub can run here, so this runs against a small stand-in that
follows GitHub's documented endpoints (tests/github_standin.py), in GitHub
Enterprise Server's layout (``N_ISSUER=github:<URL>``). The OpenID flows
are tested against a real provider (tests/test_provider_login.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy
from conftest import LiveServer
from github_standin import GitHubStandIn
from oidc_upstream import identities, reason_of, start_at_provider, users


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    standin = GitHubStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def github_server(
    make_server: Callable[..., LiveServer], github: GitHubStandIn
) -> LiveServer:
    return make_server(**github.settings())


def sign_in_with_github(server: LiveServer) -> Any:
    browser = server.browser()
    at_github = start_at_provider(browser, "gh")
    back = browser.get(at_github)
    assert back.status_code == 302, back.text
    return browser.get(back.headers["Location"])


def test_the_button_says_github(github_server: LiveServer) -> None:
    assert "Continue with GitHub" in github_server.browser().get("/login").text


def test_a_github_account_is_known_by_its_numeric_id(
    github_server: LiveServer, github: GitHubStandIn, engine: sqlalchemy.Engine
) -> None:
    answer = sign_in_with_github(github_server)

    assert answer.status_code == 302, answer.text
    assert identities(engine) == [("octo@acme.test", github.url, "583231")]
    # A renamed login is the same person; only the id counts.
    github.account.login = "octocat-renamed"
    assert sign_in_with_github(github_server).status_code == 302
    assert users(engine) == ["octo@acme.test"]


def test_only_a_verified_primary_email_counts(
    github_server: LiveServer, github: GitHubStandIn, engine: sqlalchemy.Engine
) -> None:
    github.account.emails = [
        {"email": "octo@acme.test", "primary": True, "verified": False},
        {"email": "octo@other.test", "primary": False, "verified": True},
    ]

    answer = sign_in_with_github(github_server)

    assert answer.status_code == 403
    assert reason_of(answer) == "email_unverified"
    assert users(engine) == []
