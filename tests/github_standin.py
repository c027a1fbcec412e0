"""A stand-in for GitHub, which no test can reach: its documented endpoints only.

GitHub is not an OpenID provider, so no certified server plays it. This
small server answers as GitHub documents its OAuth app flow and REST API
(and a GitHub Enterprise Server's layout, ``/api/v3``): ``/login/oauth/
authorize`` (here the person is already signed in and has authorized the
app, so it redirects straight back), ``/login/oauth/access_token`` (form
credentials, PKCE S256 checked, JSON only when asked for), ``/user`` and
``/user/emails``. It is a stand-in, not GitHub: it checks what the service
sends, and answers what GitHub would.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "Iv1.standin0client"
CLIENT_SECRET = "a-github-client-secret"


@dataclass
class GitHubAccount:
    """The person signed in at the stand-in."""

    id: int = 583231
    login: str = "octocat"
    emails: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"email": "octo@acme.test", "primary": True, "verified": True},
            {
                "email": "octo@users.noreply.github.com",
                "primary": False,
                "verified": True,
            },
        ]
    )


class GitHubStandIn:
    """The stand-in, on a free loopback port."""

    def __init__(self) -> None:
        self.account = GitHubAccount()
        #: code -> (redirect_uri, code_challenge); token -> account id.
        self.codes: dict[str, tuple[str, str]] = {}
        self.tokens: set[str] = set()
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.get(self)

            def do_POST(self) -> None:
                standin.post(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def settings(self, name: str = "gh") -> dict[str, str]:
        prefix = name.upper() + "_"
        return {
            "SIGN_IN_PROVIDERS": name,
            prefix + "ISSUER": "github:" + self.url,
            prefix + "CLIENT_ID": CLIENT_ID,
            prefix + "CLIENT_SECRET": CLIENT_SECRET,
            prefix + "ALLOWED_DOMAINS": "acme.test",
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def get(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/login/oauth/authorize":
            assert query["client_id"] == CLIENT_ID
            assert query["code_challenge_method"] == "S256"
            code = secrets.token_hex(10)
            self.codes[code] = (query["redirect_uri"], query["code_challenge"])
            back = {"code": code, "state": query["state"]}
            location = query["redirect_uri"] + "?" + urlencode(back)
            self._answer(handler, 302, b"", {"Location": location})
        elif parts.path in ("/api/v3/user", "/api/v3/user/emails"):
            scheme, _, token = handler.headers.get("Authorization", "").partition(" ")
            if scheme.lower() not in ("bearer", "token") or token not in self.tokens:
                self._json(handler, 401, {"message": "Requires authentication"})
            elif parts.path.endswith("/emails"):
                self._json(handler, 200, self.account.emails)
            else:
                body = {"id": self.account.id, "login": self.account.login}
                self._json(handler, 200, body)
        else:
            self._json(handler, 404, {"message": "Not Found"})

    def post(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = {
            k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()
        }
        if urlsplit(handler.path).path != "/login/oauth/access_token":
            self._json(handler, 404, {"message": "Not Found"})
            return
        issued = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        ok = (
            issued is not None
            and form.get("client_id") == CLIENT_ID
            and form.get("client_secret") == CLIENT_SECRET
            and form.get("redirect_uri") == issued[0]
            and challenge == issued[1]
        )
        # GitHub answers 200 with an error field, in JSON only when asked.
        body: dict[str, str] = {"error": "bad_verification_code"}
        if ok:
            token = "gho_" + secrets.token_hex(18)
            self.tokens.add(token)
            body = {"access_token": token, "token_type": "bearer", "scope": "read:user"}
        if "application/json" in handler.headers.get("Accept", ""):
            self._json(handler, 200, body)
        else:
            encoded = urlencode(body).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            self._answer(handler, 200, encoded, headers)

    def _json(self, handler: Any, status: int, body: Any) -> None:
        headers = {"Content-Type": "application/json"}
        self._answer(handler, status, json.dumps(body).encode(), headers)

    @staticmethod
    def _answer(
        handler: Any, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
