"""What a client does: a browser with cookies and forms, and the OAuth steps."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from bs4 import BeautifulSoup

if TYPE_CHECKING:
    from conftest import LiveServer

LOOPBACK_REDIRECT = "http://127.0.0.1/callback"


class Browser(requests.Session):
    """A cookie-keeping HTTP client rooted at one server; never follows redirects."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__()
        self.server = server

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith("/"):
            url = self.server.url + url
        # Redirects are what these tests inspect; follow one only when asked.
        kwargs["allow_redirects"] = kwargs.pop("follow", False)
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)

    def form(self, response: requests.Response) -> dict[str, str]:
        """The hidden fields of the page's first form (CSRF token, next)."""
        soup = BeautifulSoup(response.text, "html.parser")
        fields = soup.select("form input[type=hidden]")
        return {f["name"]: f.get("value", "") for f in fields}

    def login(self, email: str, password: str, next_path: str | None = None) -> Any:
        page = self.get(
            "/login" + (f"?{urlencode({'next': next_path})}" if next_path else "")
        )
        if page.status_code == 302:
            return page  # already signed in
        assert page.status_code == 200, page.text
        data = {**self.form(page), "email": email, "password": password}
        return self.post("/login", data=data)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return verifier, challenge


def register_client(browser: Browser, **metadata: Any) -> dict[str, Any]:
    metadata.setdefault("redirect_uris", [LOOPBACK_REDIRECT])
    response = browser.post("/register", json=metadata)
    assert response.status_code == 201, response.text
    return response.json()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def authorize_params(client: dict[str, Any], challenge: str, **extra: str) -> dict:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def authorize_path(params: dict[str, str]) -> str:
    return "/authorize?" + urlencode(params)


def consent(browser: Browser, params: dict[str, str], decision: str = "approve") -> Any:
    """Open the consent page for ``params`` and press a button; return the 302."""
    path = authorize_path(params)
    page = browser.get(path)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    return browser.post(path, data={**browser.form(page), "decision": decision})


def get_code(
    browser: Browser, client: dict[str, Any], user: dict[str, str], **extra: str
) -> tuple[str, str, dict[str, str]]:
    """Log in, approve, and return ``(code, verifier, authorize params)``."""
    verifier, challenge = pkce_pair()
    params = authorize_params(client, challenge, **extra)
    browser.login(user["email"], user["password"])
    response = consent(browser, params)
    assert response.status_code == 302, response.text
    query = query_of(response.headers["Location"])
    assert query["state"] == params["state"]
    return query["code"], verifier, params


def token_request(
    browser: Browser,
    client: dict[str, Any],
    data: dict[str, str],
    method: str | None = None,
) -> Any:
    """POST /token authenticating as the client registered."""
    method = method or client.get("token_endpoint_auth_method", "client_secret_basic")
    data = dict(data)
    auth = None
    if method == "client_secret_basic":
        auth = (client["client_id"], client["client_secret"])
    elif method == "client_secret_post":
        data.update(
            client_id=client["client_id"], client_secret=client["client_secret"]
        )
    else:
        data["client_id"] = client["client_id"]
    return browser.post("/token", data=data, auth=auth)


def redeem(
    browser: Browser,
    client: dict[str, Any],
    code: str,
    verifier: str,
    redirect_uri: str | None = None,
    **extra: str,
) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or client["redirect_uris"][0],
        "code_verifier": verifier,
        **extra,
    }
    return token_request(browser, client, data)


def obtain_token(browser: Browser, user: dict[str, str], **client_metadata: Any) -> str:
    """The whole flow: register, log in, approve, redeem; return the access token."""
    client = register_client(browser, **client_metadata)
    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def refresh(
    browser: Browser, client: dict[str, Any], refresh_token: str, **extra: str
) -> Any:
    """POST /token grant_type=refresh_token, authenticating as the client registered."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return token_request(browser, client, data)


def obtain_tokens(
    browser: Browser, user: dict[str, str], **client_metadata: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register a client asking for refresh tokens, sign in, approve, redeem.

    Return the client and the token response.
    """
    client_metadata.setdefault("grant_types", ["authorization_code", "refresh_token"])
    client = register_client(browser, **client_metadata)
    code, verifier, _ = get_code(browser, client, user)
    response = redeem(browser, client, code, verifier)
    assert response.status_code == 200, response.text
    return client, response.json()
