"""A lean HTTP client for ``make bench``: sign in, and run whole OAuth flows.

Keep-alive ``http.client`` connections and a regular expression for the CSRF
token keep the driver's own cost per flow small, so the server is measured
rather than the client (no requests or BeautifulSoup in the loop).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

REDIRECT_URI = "http://127.0.0.1/callback"
_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
_SESSION = re.compile(r"(?:^|,\s*)(session=[^;]*)")


class FlowError(Exception):
    """A step of a flow got an answer other than the one a working server gives."""


class Client:
    """One keep-alive connection with the one cookie the app sets (its session)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            # gunicorn closes idle keep-alive connections; open a new one once.
            self.connection.close()
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or ():
            found = _SESSION.search(value)
            if found:
                self.cookie = found.group(1)
        return response.status, response, data

    def form(self, path: str, fields: dict[str, str], **headers: str) -> tuple:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.request("POST", path, urlencode(fields).encode(), headers)


def expect(status: int, wanted: int, step: str, data: bytes) -> None:
    if status != wanted:
        raise FlowError(f"{step}: {status} {data[:200]!r}")


def csrf_token(step: str, data: bytes) -> str:
    found = _CSRF.search(data)
    if not found:
        raise FlowError(f"{step}: no CSRF token in the page")
    return found.group(1).decode()


def sign_in(client: Client, email: str, password: str) -> None:
    status, _, page = client.request("GET", "/login")
    expect(status, 200, "GET /login", page)
    fields = {"csrf_token": csrf_token("GET /login", page)}
    status, _, data = client.form(
        "/login", {**fields, "email": email, "password": password}
    )
    expect(status, 302, "POST /login", data)


def challenge_of(verifier: str) -> str:
    """The S256 PKCE challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def register(client: Client, metadata: dict[str, Any] | None = None) -> dict:
    """Register a client (RFC 7591); ``metadata`` adds to or replaces the
    bench's own (a code-grant client with a secret, ``client_secret_basic``)."""
    fields = {
        "redirect_uris": [REDIRECT_URI],
        "client_name": "bench",
        **(metadata or {}),
    }
    body = json.dumps(fields)
    headers = {"Content-Type": "application/json"}
    status, _, data = client.request("POST", "/register", body.encode(), headers)
    expect(status, 201, "POST /register", data)
    return json.loads(data)


def approve(client: Client, client_id: str, challenge: str) -> str:
    """Open the consent page, approve, and return the code from the redirect."""
    path = "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "bench",
        }
    )
    status, _, page = client.request("GET", path)
    expect(status, 200, "GET /authorize", page)
    fields = {"csrf_token": csrf_token("GET /authorize", page), "decision": "approve"}
    status, response, data = client.form(path, fields)
    expect(status, 302, "POST /authorize", data)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    if "code" not in query:
        raise FlowError(f"POST /authorize: no code in {response.headers['Location']}")
    return query["code"][0]


def basic_auth(registered: dict) -> str:
    pair = f"{registered['client_id']}:{registered['client_secret']}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def token_form(code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }


def redeem(client: Client, registered: dict, code: str, verifier: str) -> str:
    status, _, data = client.form(
        "/token", token_form(code, verifier), Authorization=basic_auth(registered)
    )
    expect(status, 200, "POST /token", data)
    return json.loads(data)["access_token"]


def flow(
    client: Client, metadata: dict[str, Any] | None = None
) -> tuple[dict, str, str]:
    """Register (with ``metadata``, see :func:`register`), approve and redeem;
    return the client, verifier and access token."""
    registered = register(client, metadata)
    verifier = secrets.token_urlsafe(48)
    code = approve(client, registered["client_id"], challenge_of(verifier))
    return registered, verifier, redeem(client, registered, code, verifier)


def flow_worker(
    job: tuple[int, str, str, int, int], barrier: Any, results: Any
) -> None:
    """Sign in, wait for the other workers, then run flows for warm-up + seconds.

    Puts on ``results`` the count of flows finished after the warm-up, and the
    first error (a failed flow stops the worker).
    """
    port, email, password, warmup, seconds = job
    done, error = 0, ""
    try:
        client = Client(port)
        sign_in(client, email, password)
    except (FlowError, OSError) as exc:
        error = str(exc)
    barrier.wait()
    counted_from = time.time() + warmup
    end = counted_from + seconds
    while not error:
        try:
            flow(client)
        except (FlowError, OSError) as exc:
            error = str(exc)
            break
        now = time.time()
        if now > end:
            break
        if now >= counted_from:
            done += 1
    results.put((done, error))
