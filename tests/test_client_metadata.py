"""Client ID Metadata Documents at /authorize and /token (docs/reference.md).

Documents are served by a local web server; ``CIMD_ALLOW_LOOPBACK=on`` lets
the service fetch them over http on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from bs4 import BeautifulSoup
from conftest import LiveServer
from document_server import DocumentServer
from helpers import (
    LOOPBACK_REDIRECT,
    Browser,
    authorize_params,
    authorize_path,
    client_ids,
    get_code,
    pkce_pair,
    prune,
    redeem,
    register_client,
    result_of,
    select_one,
    whoami,
)

from app.oauth.client_metadata import MAX_CONCURRENT_FETCHES

LOOPBACK_ON = {"CIMD_ALLOW_LOOPBACK": "on"}


@pytest.fixture
def live(make_server: Any) -> Any:
    return make_server(**LOOPBACK_ON)


def client_for(url: str, redirect_uri: str = LOOPBACK_REDIRECT) -> dict[str, Any]:
    """What the test client sends: the URL as client_id, and no secret."""
    return {
        "client_id": url,
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "none",
    }


def authorize_page(browser: Any, url: str) -> Any:
    _, challenge = pkce_pair()
    return browser.get(authorize_path(authorize_params(client_for(url), challenge)))


def error_text(page: Any) -> str:
    return select_one(page, "p.error").get_text()


def token_with(browser: Any, url: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": "x" * 43,
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_verifier": "v" * 43,
        "client_id": url,
    }
    return browser.post("/token", data=data)


# --- The whole flow ----------------------------------------------------------------


def test_a_document_client_goes_from_authorize_to_mcp(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    url = documents.document("/client.json")
    browser = live.browser()
    client = client_for(url)

    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)

    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    caller = json.loads(result_of(whoami(browser, token))["content"][0]["text"])
    assert caller["client_id"] == url
    assert caller["scope"] == "read write"
    assert documents.requests == {"/client.json": 1}


def test_rp_metadata_choices_with_none_are_a_public_client(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    # ChatGPT's document offers a list of methods (OpenID Federation §5.1.2)
    # rather than naming one; with "none" among them, the client is public.
    url = documents.document(
        "/chatgpt.json",
        token_endpoint_auth_methods_supported=["client_secret_basic", "none"],
    )
    browser = live.browser()
    client = client_for(url)

    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)

    assert response.status_code == 200, response.text


def test_the_consent_page_shows_the_documents_host(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    url = documents.document("/client.json", client_name="Visual Studio Code")
    browser = live.browser()
    browser.login(user["email"], user["password"])

    page = authorize_page(browser, url)

    assert page.status_code == 200, page.text
    soup = BeautifulSoup(page.text, "html.parser")
    assert "Visual Studio Code" in select_one(soup, "h1").get_text()
    host = select_one(soup, "#client-host").get_text()
    assert host == f"127.0.0.1:{documents.port}"
    # The redirect goes to 127.0.0.1 without the document's port: another host.
    assert soup.select_one("#client-redirect-elsewhere") is not None


def test_the_consent_page_says_nothing_more_when_the_host_is_the_same(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    redirect = f"http://127.0.0.1:{documents.port}/callback"
    url = documents.document("/client.json", redirect_uris=[redirect])
    browser = live.browser()
    browser.login(user["email"], user["password"])
    _, challenge = pkce_pair()

    page = browser.get(
        authorize_path(authorize_params(client_for(url, redirect), challenge))
    )

    soup = BeautifulSoup(page.text, "html.parser")
    assert soup.select_one("#client-host") is not None
    assert soup.select_one("#client-redirect-elsewhere") is None


def test_a_documents_name_is_shown_normalised(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    name = "\uff23\uff2c\uff21\uff35\uff24\uff25\u3000\u00a0Desktop"
    url = documents.document("/client.json", client_name=name)
    browser = live.browser()
    browser.login(user["email"], user["password"])

    page = authorize_page(browser, url)

    assert page.status_code == 200, page.text
    heading = select_one(page, "h1").get_text()
    assert heading.startswith("CLAUDE Desktop ")


def test_registered_clients_get_no_document_notice(signed_in: Browser) -> None:
    client = register_client(signed_in)
    _, challenge = pkce_pair()

    page = signed_in.get(authorize_path(authorize_params(client, challenge)))

    assert page.status_code == 200
    assert "client-host" not in page.text


def test_the_consent_page_is_translated(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    url = documents.document("/client.json")
    browser = live.browser()
    browser.headers["Accept-Language"] = "zh-CN"
    browser.login(user["email"], user["password"])

    page = authorize_page(browser, url)

    notice = select_one(page, "#client-document")
    assert "网站" in notice.get_text()


def test_a_redirect_uri_not_in_the_document_is_refused(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    url = documents.document("/client.json")
    browser = live.browser()
    _, challenge = pkce_pair()
    params = authorize_params(
        client_for(url, "http://127.0.0.1/other"), challenge, client_id=url
    )

    page = browser.get(authorize_path(params))

    assert page.status_code == 400
    assert "Location" not in page.headers


def test_a_document_client_must_not_send_a_secret(
    live: Any, documents: DocumentServer, user: dict[str, str]
) -> None:
    url = documents.document("/client.json")
    browser = live.browser()
    code, verifier, _ = get_code(browser, client_for(url), user)

    response = browser.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": LOOPBACK_REDIRECT,
            "code_verifier": verifier,
        },
        auth=(url, "sk-anything"),
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# --- Bad documents -----------------------------------------------------------------

BAD_DOCUMENTS = {
    "client_id differs": (
        lambda d: d.document("/c", client_id="https://elsewhere.example/c"),
        "differs from its URL",
    ),
    "not JSON": (lambda d: d.respond("/c", "<html>hello</html>"), "not a JSON"),
    "a JSON list": (lambda d: d.respond("/c", "[]"), "not a JSON"),
    "no redirect_uris": (
        lambda d: d.document("/c", redirect_uris=None),
        "redirect_uris",
    ),
    "a bad redirect_uri": (
        lambda d: d.document("/c", redirect_uris=["http://evil.example/cb"]),
        "http://evil.example/cb",
    ),
    "a browser launcher as redirect_uri": (
        lambda d: d.document("/c", redirect_uris=["Microsoft-Edge:https://x.example/"]),
        "Microsoft-Edge:https://x.example/",
    ),
    "a client_secret": (
        lambda d: d.document("/c", client_secret="sk-123"),
        "client_secret",
    ),
    "client_secret_basic": (
        lambda d: d.document("/c", token_endpoint_auth_method="client_secret_basic"),
        "token_endpoint_auth_method",
    ),
    "choices without none": (
        lambda d: d.document(
            "/c",
            token_endpoint_auth_methods_supported=[
                "private_key_jwt",
                "client_secret_post",
            ],
        ),
        "token_endpoint_auth_method",
    ),
    "a hidden character in the name": (
        lambda d: d.document("/c", client_name="VS\u200bCode"),
        "client_name",
    ),
    "an overlay in the name": (
        lambda d: d.document("/c", client_name="Claude\u0338"),
        "client_name",
    ),
    "over 5 KB": (
        lambda d: d.document("/c", client_name="x" * 6000),
        "exceeds 5120 bytes",
    ),
    "an endless body": (lambda d: d.endless("/c"), "exceeds 5120 bytes"),
    "a redirect": (
        lambda d: d.respond("/c", status=302, headers={"Location": d.url("/x")}),
        "HTTP 302",
    ),
    "a 404": (lambda d: None, "HTTP 404"),
}


@pytest.mark.parametrize("serve", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_a_bad_document_is_a_page_at_authorize_and_401_at_token(
    live: Any, documents: DocumentServer, serve: Any
) -> None:
    make, words = serve
    make(documents)
    url = documents.url("/c")
    browser = live.browser()

    page = authorize_page(browser, url)
    response = token_with(browser, url)

    assert page.status_code == 400
    assert "Location" not in page.headers
    assert words in error_text(page)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # The failure is remembered: its host is asked once.
    assert documents.requests["/c"] == 1


def test_a_document_too_slow_to_arrive_is_refused(
    live: Any, documents: DocumentServer
) -> None:
    from app.oauth.client_metadata_fetch import DEADLINE

    documents.document("/c", delay=DEADLINE + 2)
    browser = live.browser()

    page = authorize_page(browser, documents.url("/c"))

    assert page.status_code == 400
    assert "took too long" in error_text(page)
    assert token_with(browser, documents.url("/c")).status_code == 401


def test_the_problem_page_is_translated(live: Any, documents: DocumentServer) -> None:
    browser = live.browser()
    browser.headers["Accept-Language"] = "zh-CN"

    page = authorize_page(browser, documents.url("/c"))

    assert page.status_code == 400
    assert "404" in error_text(page) and "HTTP" in error_text(page)
    assert "answered" not in error_text(page)


# --- Caching -----------------------------------------------------------------------


def test_two_instances_share_one_fetch(
    make_server: Callable[..., LiveServer],
    documents: DocumentServer,
    user: dict[str, str],
) -> None:
    url = documents.document("/c")
    first = make_server(**LOOPBACK_ON)
    # Instances of one service share its issuer, and so the resource its
    # codes are for.
    second = make_server(**LOOPBACK_ON, ISSUER=first.issuer)
    client = client_for(url)

    code, verifier, _ = get_code(first.browser(), client, user)
    response = redeem(second.browser(), client, code, verifier)

    assert response.status_code == 200, response.text
    assert authorize_page(second.browser(), url).status_code == 302  # to login
    assert documents.requests == {"/c": 1}


def test_concurrent_misses_fetch_once(
    make_server: Callable[..., LiveServer], documents: DocumentServer
) -> None:
    url = documents.document("/c", delay=0.5)
    servers = [make_server(**LOOPBACK_ON), make_server(**LOOPBACK_ON)]
    statuses: list[int] = []

    def ask(server: Any) -> None:
        statuses.append(authorize_page(server.browser(), url).status_code)

    # As many at once as one instance lets wait on a document; a third would
    # be refused at once (tests/test_cimd_stall.py).
    threads = [
        threading.Thread(target=ask, args=(s,))
        for s in servers * MAX_CONCURRENT_FETCHES
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [302] * len(threads)
    assert documents.requests == {"/c": 1}


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        (None, 300),
        ("max-age=5", 300),
        ("max-age=7200", 7200),
        ("max-age=10000000", 86400),
    ],
)
def test_the_verdict_lasts_as_cache_control_says_within_bounds(
    live: Any,
    documents: DocumentServer,
    redis_client: Any,
    cache_control: Any,
    ttl: Any,
) -> None:
    url = documents.document("/c", headers={"Cache-Control": cache_control})

    authorize_page(live.browser(), url)

    (key,) = redis_client.keys("cimd:verdict:*")
    assert ttl - 5 <= redis_client.ttl(key) <= ttl


def test_a_failure_is_remembered_briefly(
    live: Any, documents: DocumentServer, redis_client: Any
) -> None:
    documents.respond("/c", status=500)

    authorize_page(live.browser(), documents.url("/c"))

    (key,) = redis_client.keys("cimd:verdict:*")
    assert 55 <= redis_client.ttl(key) <= 60
    redis_client.delete(key)
    documents.document("/c")
    assert authorize_page(live.browser(), documents.url("/c")).status_code == 302
    assert documents.requests["/c"] == 2


# --- Settings ----------------------------------------------------------------------


def test_by_default_a_loopback_document_is_refused_unfetched(
    browser: Browser, documents: DocumentServer
) -> None:
    https_url = f"https://127.0.0.1:{documents.port}/c"
    http_url = documents.document("/c")

    page = authorize_page(browser, https_url)

    assert page.status_code == 400
    assert "127.0.0.1" in error_text(page)
    assert authorize_page(browser, http_url).status_code == 400
    assert token_with(browser, https_url).status_code == 401
    assert documents.connections == 0


def test_allowed_hosts_restrict_documents(
    make_server: Callable[..., LiveServer], documents: DocumentServer
) -> None:
    url = documents.document("/c")
    elsewhere = make_server(**LOOPBACK_ON, CIMD_ALLOWED_HOSTS="vscode.dev, claude.ai")
    here = make_server(**LOOPBACK_ON, CIMD_ALLOWED_HOSTS="vscode.dev,127.0.0.1")

    page = authorize_page(elsewhere.browser(), url)

    assert page.status_code == 400
    assert "not accepted" in error_text(page)
    assert documents.connections == 0
    assert authorize_page(here.browser(), url).status_code == 302


def test_switched_off_url_client_ids_are_unknown(
    make_server: Callable[..., LiveServer], documents: DocumentServer, browser: Browser
) -> None:
    url = documents.document("/c")
    off = make_server(**LOOPBACK_ON, CLIENT_METADATA_DOCUMENTS="off")

    page = authorize_page(off.browser(), url)
    metadata = off.browser().get("/.well-known/oauth-authorization-server").json()

    assert page.status_code == 400
    assert "does not exist" in error_text(page)
    assert token_with(off.browser(), url).status_code == 401
    assert "client_id_metadata_document_supported" not in metadata
    assert documents.connections == 0
    on = browser.get("/.well-known/oauth-authorization-server").json()
    assert on["client_id_metadata_document_supported"] is True


# --- The row kept for grants -------------------------------------------------------


def test_approval_keeps_a_row_that_caps_and_pruning_leave_alone(
    make_server: Callable[..., LiveServer],
    documents: DocumentServer,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    base_env: dict[str, str],
) -> None:
    url = documents.document("/c", client_name="First Name")
    live = make_server(**LOOPBACK_ON, MAX_CLIENTS="1", MAX_CLIENTS_PER_ADDRESS="1")
    browser = live.browser()
    get_code(browser, client_for(url), user)

    # The row does not count against the registration caps...
    registered = browser.post("/register", json={"redirect_uris": [LOOPBACK_REDIRECT]})
    assert registered.status_code == 201, registered.text
    assert client_name(engine, url) == "First Name"
    assert len(client_ids(engine)) == 2
    # ...and pruning keeps it while a grant refers to it.
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE oauth_clients SET created_at = now() - interval '30 days'"
            )
        )
    assert prune(base_env, "--older-than-days", "7").returncode == 0
    assert url in client_ids(engine)


def test_a_later_approval_refreshes_the_row_from_the_document(
    live: Any,
    documents: DocumentServer,
    user: dict[str, str],
    engine: sqlalchemy.Engine,
    redis_client: Any,
) -> None:
    url = documents.document("/c", client_name="First Name")
    browser = live.browser()
    get_code(browser, client_for(url), user)
    documents.document("/c", client_name="Second Name")
    redis_client.delete(*redis_client.keys("cimd:verdict:*"))

    get_code(browser, client_for(url), user)

    assert client_name(engine, url) == "Second Name"


def client_name(engine: Any, client_id: str) -> str:
    with engine.connect() as connection:
        return connection.execute(
            sqlalchemy.text("SELECT client_name FROM oauth_clients WHERE client_id=:i"),
            {"i": client_id},
        ).scalar_one()


# --- Who may fetch -------------------------------------------------------------------


def login_page_for(browser: Any, url: str) -> Any:
    """The sign-in page an authorization request for ``url`` leads to."""
    _, challenge = pkce_pair()
    target = authorize_path(authorize_params(client_for(url), challenge))
    return browser.get("/login", params={"next": target})


def test_only_authorize_fetches(
    live: Any,
    documents: DocumentServer,
    user: dict[str, str],
    redis_client: Any,
) -> None:
    url = documents.document("/c", client_name="Fetched At Authorize")
    browser = live.browser()
    client = client_for(url)

    token = token_with(browser, url)
    revoked = browser.post("/revoke", data={"token": "x" * 40, "client_id": url})
    login = login_page_for(browser, url)

    # Never looked up at /authorize: an unknown client, and its host untouched.
    assert (token.status_code, token.json()["error"]) == (401, "invalid_client")
    assert (revoked.status_code, revoked.json()["error"]) == (401, "invalid_client")
    assert login.status_code == 200
    assert "Fetched At Authorize" not in login.text
    assert documents.connections == 0

    # /authorize fetched it; the token endpoint takes that verdict...
    code, verifier, _ = get_code(browser, client, user)
    assert redeem(browser, client, code, verifier).status_code == 200
    # ...and, the verdict gone, the row the person's approval kept.
    code, verifier, _ = get_code(browser, client, user)
    redis_client.delete(*redis_client.keys("cimd:verdict:*"))
    redeemed = redeem(live.browser(), client, code, verifier)
    assert redeemed.status_code == 200, redeemed.text
    access_token = redeemed.json()["access_token"]
    revoked = live.browser().post(
        "/revoke", data={"token": access_token, "client_id": url}
    )
    assert revoked.status_code == 200
    assert "Fetched At Authorize" in login_page_for(live.browser(), url).text
    assert documents.requests == {"/c": 1}


def test_fetches_are_limited_per_address_cached_verdicts_are_not(
    make_server: Callable[..., LiveServer],
    documents: DocumentServer,
    redis_client: Any,
) -> None:
    live = make_server(
        **LOOPBACK_ON, CIMD_FETCH_RATE_LIMIT="3 per minute", TRUSTED_PROXY_HOPS="1"
    )
    browser, elsewhere = live.browser(), live.browser()
    browser.headers["X-Forwarded-For"] = "198.51.100.7"
    elsewhere.headers["X-Forwarded-For"] = "203.0.113.9"
    urls = [documents.document(f"/c{n}") for n in range(4)]

    fetched = [authorize_page(browser, url).status_code for url in urls[:3]]
    again = [authorize_page(browser, url).status_code for url in urls[:3]]
    refused = authorize_page(browser, urls[3])

    assert fetched == again == [302] * 3  # to sign in
    assert refused.status_code == 429
    assert refused.headers["Content-Type"].startswith("text/html")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too_many_requests" in refused.text
    assert documents.requests == {"/c0": 1, "/c1": 1, "/c2": 1}
    # The refusal is no verdict on the document; another address may fetch it.
    assert len(redis_client.keys("cimd:verdict:*")) == 3
    assert authorize_page(elsewhere, urls[3]).status_code == 302
    assert documents.requests["/c3"] == 1
