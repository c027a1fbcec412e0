"""What a client does: a browser with cookies and forms, and the OAuth steps."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.server
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import devservices
import redis
import requests
import sqlalchemy
from bs4 import BeautifulSoup, Tag
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

if TYPE_CHECKING:
    from conftest import LiveServer

LOOPBACK_REDIRECT = "http://127.0.0.1/callback"


class Browser(requests.Session):
    """A cookie-keeping HTTP client rooted at one server; never follows redirects."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__()
        self.server = server

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if isinstance(url, str) and url.startswith("/"):
            url = self.server.url + url
        # Redirects are what these tests inspect; follow one only when asked.
        kwargs["allow_redirects"] = kwargs.pop("follow", False)
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)

    def form(self, response: requests.Response) -> dict[str, str]:
        """The hidden fields of the page's first form (CSRF token, next)."""
        soup = BeautifulSoup(response.text, "html.parser")
        fields = soup.select("form input[type=hidden]")
        return {attribute(f, "name"): attribute(f, "value", "") for f in fields}

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


def authorize_params(
    client: dict[str, Any], challenge: str, **extra: str | None
) -> dict:
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


def client_post(
    browser: Browser,
    path: str,
    client: dict[str, Any],
    data: dict[str, str],
    method: str | None = None,
    **kwargs: Any,
) -> Any:
    """POST a form to ``path`` authenticating as the client registered."""
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
    return browser.post(path, data=data, auth=auth, **kwargs)


def token_request(
    browser: Browser,
    client: dict[str, Any],
    data: dict[str, str],
    method: str | None = None,
) -> Any:
    """POST /token authenticating as the client registered."""
    return client_post(browser, "/token", client, data, method)


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


#: The one body every failed exchange gets.
INVALID_CREDENTIALS = {"error": "Invalid credentials"}


WHOAMI: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "whoami", "arguments": {}},
}


MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_key(browser: Browser, token: str, **body: Any) -> requests.Response:
    body.setdefault("name", "laptop")
    return browser.post("/api-keys", json=body, headers=bearer(token))


def new_key(browser: Browser, token: str, **body: Any) -> dict[str, Any]:
    response = create_key(browser, token, **body)
    assert response.status_code == 201, response.text
    return response.json()


def list_keys(browser: Browser, token: str) -> list[dict[str, Any]]:
    response = browser.get("/api-keys", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["api_keys"]


def exchange(browser: Browser, key: Any) -> requests.Response:
    return browser.post("/auth/token", json={"apiKey": key})


def key_token(browser: Browser, key: str) -> str:
    response = exchange(browser, key)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def whoami(browser: Browser, token: str) -> requests.Response:
    return browser.post("/mcp", json=WHOAMI, headers={**MCP_HEADERS, **bearer(token)})


def whoami_output(browser: Browser, token: str) -> dict[str, Any]:
    response = whoami(browser, token)
    assert response.status_code == 200, response.text
    return json.loads(response.json()["result"]["content"][0]["text"])


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def soup(response: requests.Response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def select_one(page: requests.Response | Tag, selector: str) -> Tag:
    """The element ``selector`` finds first; the test fails if there is none."""
    found = (soup(page) if isinstance(page, requests.Response) else page).select_one(
        selector
    )
    assert found is not None, f"nothing matches {selector!r}"
    return found


def attribute(tag: Tag, name: str, default: str | None = None) -> str:
    """A single-valued attribute of ``tag`` (``action``, ``name``, ``href``...)."""
    value = tag.get(name, default)
    assert isinstance(value, str), f"{name}={value!r} on {tag.name}"
    return value


def form_actions(page: requests.Response) -> list[str]:
    return [attribute(f, "action") for f in soup(page).select("form[method=post]")]


def action_for(page: requests.Response, fragment: str) -> str:
    """The action of the page's one POST form whose action contains ``fragment``."""
    [action] = [a for a in form_actions(page) if fragment in a]
    return action


def csrf_token(browser: Browser) -> str:
    page = browser.get("/account")
    assert page.status_code == 200, page.text
    return browser.form(page)["csrf_token"]


def create_on_page(browser: Browser, **fields: Any) -> requests.Response:
    data = {"csrf_token": csrf_token(browser), "name": "laptop", "scopes": "read"}
    data.update(fields)
    return browser.post("/account/api-keys", data=data)


def created_key(response: requests.Response) -> str:
    assert response.status_code == 201, response.text
    return select_one(response, "#new-key").get_text(strip=True)


def revoke_from_account_page(
    browser: Browser, client_id: str = "", resource: str | None = None
) -> None:
    """Press the account page's revoke button for a client (the only one, if none).

    With ``resource``, the button in that resource's section of the page.
    """
    page = browser.get("/account")
    where: BeautifulSoup | Tag = soup(page)
    if resource is not None:
        where = select_one(page, f'section.resource[data-resource="{resource}"]')
    [form] = [
        form
        for row in where.select("tr")
        if client_id in row.get_text()
        for form in row.select("form[method=post]")
        if "/account/consents/" in attribute(form, "action")
    ]
    response = browser.post(attribute(form, "action"), data=browser.form(page))
    assert response.status_code == 302


def result_of(response: Any, request_id: Any = 1) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    assert "error" not in body, body
    return body["result"]


ROOT = Path(__file__).resolve().parent.parent


def prune(base_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run ``flask --app app prune`` as an operator would, with the settings."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "prune", *args],
        cwd=ROOT,
        env={**os.environ, **base_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def client_ids(engine: sqlalchemy.Engine) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT client_id FROM oauth_clients")
        )
        return {row.client_id for row in rows}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def start_web(
    base_env: dict[str, str], port: int, log: Path, **overrides: str
) -> subprocess.Popen:
    """The Procfile's ``web:`` line, run directly so its pid is gunicorn's master.

    One worker process; ``overrides`` are further settings.
    """
    env = {
        **os.environ,
        **base_env,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "ISSUER": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **overrides,
    }
    with log.open("w") as out:
        web = subprocess.Popen(
            shlex.split(procfile()["web"]),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        assert web.poll() is None, log.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).ok:
                return web
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.2)


def backdate(engine: sqlalchemy.Engine, client: dict, days: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE oauth_clients"
                " SET created_at = now() - make_interval(days => :d)"
                " WHERE client_id = :id"
            ),
            {"d": days, "id": client["client_id"]},
        )


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


def revoke(
    browser: Browser, client: dict[str, Any], data: dict[str, str], **kwargs: Any
) -> Any:
    """POST /revoke authenticating as the client registered."""
    return client_post(browser, "/revoke", client, data, **kwargs)


@contextmanager
def statements_as(
    server: Any, describe: Callable[[Any, str], Any]
) -> Iterator[list[Any]]:
    """Record, as ``describe(connection, sql)`` says, the SQL the live server
    runs (it shares this process)."""
    seen: list[Any] = []
    engine = server.app.extensions["db"].engine

    def record(
        conn: Any,
        cursor: Any,
        statement: Any,
        parameters: Any,
        context: Any,
        executemany: Any,
    ) -> None:
        seen.append(describe(conn, statement))

    sqlalchemy.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", record)


def statements(server: Any) -> Any:
    """The first word of each statement the live server runs."""
    return statements_as(server, lambda conn, sql: sql.split()[0].upper())


def api_key_token(server: Any, user: dict[str, str], key_id: str) -> str:
    """An access token as if exchanged from the API key ``key_id``."""
    from app.oauth.issuance import Issuance
    from app.oauth.resources import default_resource
    from app.oauth.tokens import issue_access_token, new_jti

    with server.app.app_context():
        token, _ = issue_access_token(
            Issuance(
                user_id=uuid.UUID(user["id"]),
                client_id=None,
                resource=default_resource(),
                scope="read",
                jti=new_jti(),
                api_key_id=key_id,
            )
        )
    return token


def claims_for(server: Any, user: dict[str, str], **changes: Any) -> dict[str, Any]:
    """Claims of a good OAuth access token, with ``changes`` applied."""
    now = int(time.time())
    claims = {
        "iss": server.issuer,
        "sub": user["id"],
        "aud": server.issuer + "/mcp",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(16),
        "scope": "read write",
        "client_id": "lessie-test-client",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def wait_for_current_view(server: Any, seconds: float = 5) -> None:
    """Wait until the server's denylist view has caught up (per-process caches
    such as the client cache are used only then)."""
    view = server.app.extensions["denylist_view"]
    deadline = time.monotonic() + seconds
    while not view.is_current() and time.monotonic() < deadline:
        time.sleep(0.02)


def until(predicate: Any, seconds: float) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; tell whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class RestartableRedis:
    """A private redis-server that keeps its port across restarts.

    It saves only when told (``SAVE``); a restart then loads that snapshot,
    as after a crash, unless :meth:`start` is asked to begin empty.
    """

    def __init__(self, data_dir: Path, *options: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.port = devservices.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.command = [
            devservices.find_redis_server(),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(data_dir), "--save", "", "--appendonly", "no"),
            *options,
        ]
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, empty: bool = False) -> None:
        if empty:
            for saved in ("dump.rdb", "appendonly.aof", "appendonlydir"):
                path = self.data_dir / saved
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        assert until(lambda: _answers(client), 10.0)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def run(self, *command: str) -> Any:
        """Send it one command (``FLUSHALL``, ``SAVE``) on a connection of its own."""
        client = redis.Redis.from_url(self.url)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def crash(self) -> None:
        """Die at once, as a crash does: nothing is saved on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def resources_cli(
    base_env: dict[str, str], *args: str, **settings: str
) -> subprocess.CompletedProcess:
    """Run ``flask --app app resources ...`` as an operator would.

    ``settings`` override the environment (``ISSUER``, ``DEFAULT_RESOURCE``).
    """
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "resources", *args],
        cwd=ROOT,
        env={**os.environ, **base_env, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resource_options(**options: Any) -> list[str]:
    """Command-line options from keywords: ``token_ttl=120`` is ``--token-ttl 120``,
    a list repeats its option, ``True`` is a bare flag."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        for one in value if isinstance(value, list | tuple) else [value]:
            args += [flag] if one is True else [flag, str(one)]
    return args


def add_resource(base_env: dict[str, str], uri: str, **options: Any) -> str:
    """Register a resource with the real command; return the URI it printed.

    ``name`` defaults to ``"Tools"`` and ``scopes`` to ``"read"``; every
    further keyword is an option (see :func:`resource_options`), e.g.
    ``describe=["repo=Read your repositories"]``, ``token_ttl=120``.
    """
    options.setdefault("name", "Tools")
    options.setdefault("scopes", "read")
    added = resources_cli(base_env, "add", uri, *resource_options(**options))
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def register_resource(server: Any, uri: str, **options: Any) -> str:
    """Register a resource as :func:`add_resource` does, with the same command
    run by Flask's CLI runner in this process, on the live ``server``'s app:
    set-up without starting Python each time. Return the URI it printed."""
    options.setdefault("name", "Tools")
    options.setdefault("scopes", "read")
    result = server.app.test_cli_runner().invoke(
        args=["resources", "add", uri, *resource_options(**options)]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout.strip()


def remove_resource(base_env: dict[str, str], uri: str) -> None:
    removed = resources_cli(base_env, "remove", uri)
    assert removed.returncode == 0, removed.stderr


#: Flags for a headless Chromium that talks to nothing but the pages it is sent to.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    """Debian's Chromium driven through ChromeDriver, with a throwaway profile."""
    binary, driver = devservices.find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        browser = webdriver.Chrome(options=options, service=Service(driver))
        browser.set_page_load_timeout(30)
        try:
            yield browser
        finally:
            browser.quit()


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def loopback_callback() -> Iterator[str]:
    """A loopback redirect URI whose server answers every GET with 200, so a
    browser lands on it with the code in its address."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/callback"
    finally:
        httpd.shutdown()
        httpd.server_close()


def npm_package(package: str, home: Path) -> Path:
    """``node_modules`` under ``home`` holding ``package`` (pinned, ``name@x.y.z``),
    installed on first use and kept between runs (``home`` is git-ignored)."""
    # Installed from Debian when missing, as the other servers the tests need.
    devservices.find_or_install("node", "nodejs")
    devservices.find_or_install("npm", "npm")
    marker = home / ".installed"
    if not marker.exists() or marker.read_text() != package:
        home.mkdir(parents=True, exist_ok=True)
        # pytest-xdist workers may get here at once: one installs, the others
        # wait for it and then find the marker (npm into one folder twice races).
        with (home / ".install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists() or marker.read_text() != package:
                subprocess.run(
                    ["npm", "install", "--prefix", str(home), "--no-save"]
                    + ["--no-audit", "--no-fund", "--loglevel=error", package],
                    check=True,
                    timeout=300,
                )
                marker.write_text(package)
    return home / "node_modules"


# --- Signed assertions: keys, JWTs, forms (service clients, private_key_jwt) ---

#: What signed assertions may be signed with, and the metadata lists
#: (docs/machines.md): asymmetric algorithms only.
SIGNING_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)

#: RFC 7523 §2.2's ``client_assertion_type``.
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_jwt(
    header: dict[str, Any],
    claims: dict[str, Any],
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """A compact JWS built by hand, for what no library will sign: ``sign`` maps
    the signing input to the signature; without it the signature is empty, as
    ``alg: none`` has it."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def signing_key(alg: str, kid: str | None = None) -> Any:
    """A fresh private key (joserfc) for ``alg``: RSA 2048 for RS*/PS*, the
    matching curve for ES*, Ed25519 for EdDSA; its ``kid`` set."""
    from joserfc import jwk

    parameters: Any = {"kid": kid or secrets.token_urlsafe(8)}
    if alg.startswith(("RS", "PS")):
        return jwk.RSAKey.generate_key(2048, parameters=parameters)
    if alg.startswith("ES"):
        curve = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
        return jwk.ECKey.generate_key(curve, parameters=parameters)
    assert alg == "EdDSA", alg
    return jwk.OKPKey.generate_key("Ed25519", parameters=parameters)


def public_jwks(*keys: Any) -> dict[str, Any]:
    """A JWK Set of the public halves of ``keys``."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def sign_jwt(key: Any, alg: str, claims: dict[str, Any], **header: Any) -> str:
    """``claims`` signed with ``key`` by ``alg``; the key's ``kid`` in the header."""
    import warnings

    from joserfc import jwt

    with warnings.catch_warnings():
        # joserfc warns that RFC 9864 deprecates the name EdDSA; servers still use it.
        warnings.simplefilter("ignore")
        return jwt.encode(
            {"alg": alg, "kid": key.kid, **header}, claims, key, algorithms=[alg]
        )


def client_assertion(
    key: Any, alg: str, client_id: str, audience: Any, **changes: Any
) -> str:
    """A good RFC 7523 client assertion (``iss`` = ``sub`` = ``client_id``, two
    minutes to live, a fresh ``jti``), with ``changes`` applied (``None`` drops a
    claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(16),
    }
    claims.update(changes)
    return sign_jwt(key, alg, {k: v for k, v in claims.items() if v is not None})


def assertion_form(assertion: str, **data: str) -> dict[str, str]:
    """A form authenticating its client with ``assertion`` (RFC 7523 §2.2)."""
    return {
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": assertion,
        **data,
    }


def run_command(server: Any, *args: str) -> Any:
    """``flask --app app ARGS`` run by Flask's CLI runner on the live ``server``'s
    app (its settings, this process); the click ``Result``."""
    return server.app.test_cli_runner().invoke(args=list(args))


# --- Device flow -------------------------------------------------------------------


def device_lookup(browser: Browser, user_code: str) -> Any:
    """Open ``verification_uri_complete`` and confirm the code it fills in:
    a GET never looks a code up; the form's POST does (the consent page, or
    the refusal). A redirect (not signed in) is returned as it is."""
    page = browser.get("/device", params={"user_code": user_code})
    if page.status_code != 200:
        return page
    fields = select_one(page, "#device-code-form").select("input")
    data = {attribute(f, "name"): attribute(f, "value", "") for f in fields}
    return browser.post("/device", data=data)
