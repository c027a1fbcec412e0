"""Two small MCP servers behind one issuer: the README's example and its demo.

Both sit behind nginx on the issuer's own origin (tools/demo_nginx.py writes the
configuration), each a resource registered with the issuer (RFC 8707, RFC 9728):

- **notes** (``ISSUER/notes``, endpoint ``ISSUER/notes/mcp``) is the MCP Python
  SDK's ``MCPServer``. It checks no token itself: nginx's ``auth_request`` asks
  the issuer's ``GET /auth/verify`` about every request and forwards the caller
  in ``X-Auth-Subject``, ``X-Auth-Client`` and ``X-Auth-Scope``. The server
  believes those headers (it listens on loopback, behind nginx) and answers a
  tool call outside the caller's scope with ``403 insufficient_scope``, MCP's
  scope challenge. Its tools: ``list_notes`` (``notes:read``) and ``add_note``
  (``notes:write``).
- **search** (``ISSUER/search/mcp``) is FastMCP. It verifies tokens itself:
  FastMCP's ``JWTVerifier`` reads the issuer's ``/.well-known/jwks.json`` and
  checks ``iss`` and ``aud`` (its own resource URI); its ``401`` names its
  RFC 9728 document. Its tool: ``search`` (scope ``search``). The verifier
  accepts one algorithm: RS256 unless ``--algorithm`` names another, since
  that is what the issuer signs with when it makes its own key (``make run
  DEMO=servers`` passes the ``alg`` of the issuer's published keys).

    python tools/demo_servers.py notes --issuer URL --port N
    python tools/demo_servers.py search --issuer URL --port M [--algorithm RS256]

Each command serves one server on 127.0.0.1 until stopped.
"""

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: An ASGI application, spelled out so that importing this module needs no server
#: library (the tests import the URLs and scopes below).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where each server lives on the issuer's origin.
NOTES_PREFIX = "/notes"
NOTES_ENDPOINT = "/notes/mcp"
SEARCH_ENDPOINT = "/search/mcp"

NOTES_NAME = "Team notes"
SEARCH_NAME = "Team search"
NOTES_SCOPES = ("notes:read", "notes:write")
SEARCH_SCOPES = ("search",)
#: The scope each of the notes server's tools needs.
NOTES_TOOL_SCOPES = {"list_notes": "notes:read", "add_note": "notes:write"}

#: What the search server finds: a fixed, tiny corpus.
DOCUMENTS = (
    {"title": "On-call handbook", "text": "Who answers the pager and how to escalate."},
    {"title": "Release checklist", "text": "Tag, build, deploy, announce."},
    {"title": "Style guide", "text": "Plain words, short sentences, exact names."},
)

#: The headers nginx sets from /auth/verify's answer (and nothing else may set).
SUBJECT_HEADER = "x-auth-subject"
CLIENT_HEADER = "x-auth-client"
SCOPE_HEADER = "x-auth-scope"


@dataclass(frozen=True)
class Demo:
    """The two servers' URLs on the issuer's origin (``issuer`` has no path)."""

    issuer: str

    @property
    def notes_resource(self) -> str:
        """The notes server's registered resource: its path prefix, which covers
        its endpoint below it."""
        return self.issuer + NOTES_PREFIX

    @property
    def notes_url(self) -> str:
        """The MCP endpoint to give a client."""
        return self.issuer + NOTES_ENDPOINT

    @property
    def search_resource(self) -> str:
        """The search server's resource: its endpoint, as FastMCP advertises it."""
        return self.issuer + SEARCH_ENDPOINT

    @property
    def search_url(self) -> str:
        return self.issuer + SEARCH_ENDPOINT

    def metadata_url(self, resource: str) -> str:
        """A resource's RFC 9728 document on this origin (RFC 9728 §3.1)."""
        path = urlsplit(resource).path
        return f"{self.issuer}/.well-known/oauth-protected-resource{path}"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/.well-known/jwks.json"

    def registrations(self) -> list[list[str]]:
        """The ``flask --app app resources add`` arguments for both servers."""
        return [
            [
                self.notes_resource,
                "--name",
                NOTES_NAME,
                "--scopes",
                " ".join(NOTES_SCOPES),
                "--describe",
                "notes:read=Read your notes",
                "--describe",
                "notes:write=Add notes",
                "--describe-zh",
                "notes:read=读取你的笔记",
                "--describe-zh",
                "notes:write=添加笔记",
            ],
            [
                self.search_resource,
                "--name",
                SEARCH_NAME,
                "--scopes",
                " ".join(SEARCH_SCOPES),
                "--describe",
                "search=Search the team's documents",
                "--describe-zh",
                "search=搜索团队文档",
            ],
        ]


def _header(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key.decode("latin-1").lower() == name:
            return value.decode("latin-1")
    return None


def _called_tools(body: bytes) -> list[str]:
    """The tools a JSON-RPC POST body calls (``tools/call``), if any."""
    try:
        message = json.loads(body)
    except ValueError:
        return []
    messages = message if isinstance(message, list) else [message]
    return [
        str(item["params"].get("name"))
        for item in messages
        if isinstance(item, dict)
        and item.get("method") == "tools/call"
        and isinstance(item.get("params"), dict)
    ]


async def _answer(
    send: Send, status: int, challenge: str, body: dict[str, str]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", challenge.encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class ProxyIdentity:
    """The notes server's gate: it believes the caller nginx forwards.

    nginx lets a request through only once ``/auth/verify`` accepted its token
    for this resource, and sets ``X-Auth-Subject`` and ``X-Auth-Scope`` from
    that answer, replacing whatever the client sent. A request without them did
    not come through nginx: ``401``. A ``tools/call`` of a tool whose scope the
    token lacks: ``403`` with ``error="insufficient_scope"`` and the scope to
    ask for (MCP's scope challenge), so that the client asks again for more.
    """

    def __init__(self, app: ASGIApp, metadata_url: str) -> None:
        self.app = app
        self.metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not _header(scope, SUBJECT_HEADER):
            challenge = f'Bearer resource_metadata="{self.metadata_url}"'
            await _answer(send, 401, challenge, {"error": "unauthorized"})
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Read the whole body to see which tool is called, then hand it on.
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        granted = set((_header(scope, SCOPE_HEADER) or "").split())
        for tool in _called_tools(body):
            needed = NOTES_TOOL_SCOPES.get(tool)
            if needed and needed not in granted:
                challenge = (
                    f'Bearer error="insufficient_scope", scope="{needed}", '
                    f'resource_metadata="{self.metadata_url}"'
                )
                await _answer(send, 403, challenge, {"error": "insufficient_scope"})
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def notes_app(issuer: str) -> ASGIApp:
    """Server A: the MCP Python SDK's ``MCPServer``, behind nginx's ``auth_request``."""
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.transport_security import TransportSecuritySettings

    demo = Demo(issuer)
    server = MCPServer("notes", instructions="Team notes: list them or add one (demo).")
    notes: dict[str, list[str]] = {}

    def caller(ctx: Context) -> tuple[str, str, str]:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        return (
            headers.get(SUBJECT_HEADER, ""),
            headers.get(CLIENT_HEADER, ""),
            headers.get(SCOPE_HEADER, ""),
        )

    @server.tool()
    def list_notes(ctx: Context) -> dict[str, Any]:
        """List your notes."""
        subject, client, scope = caller(ctx)
        return {
            "subject": subject,
            "client": client,
            "scope": scope,
            "notes": notes.get(subject, []),
        }

    @server.tool()
    def add_note(text: str, ctx: Context) -> dict[str, Any]:
        """Add a note."""
        subject, client, scope = caller(ctx)
        notes.setdefault(subject, []).append(text)
        return {
            "subject": subject,
            "client": client,
            "scope": scope,
            "notes": notes[subject],
        }

    # DNS-rebinding protection: nginx forwards the public Host (``$http_host``).
    public = urlsplit(issuer)
    security = TransportSecuritySettings(
        allowed_hosts=[public.netloc],
        allowed_origins=[f"{public.scheme}://{public.netloc}"],
    )
    app = server.streamable_http_app(
        streamable_http_path=NOTES_ENDPOINT, transport_security=security
    )
    return ProxyIdentity(app, demo.metadata_url(demo.notes_resource))


def search_app(issuer: str, algorithm: str = "RS256") -> ASGIApp:
    """Server B: FastMCP checking the issuer's tokens itself, with its JWKS."""
    from fastmcp import FastMCP
    from fastmcp.server.auth import RemoteAuthProvider
    from fastmcp.server.auth.providers.jwt import JWTVerifier
    from fastmcp.server.dependencies import get_access_token
    from pydantic import AnyHttpUrl

    demo = Demo(issuer)
    verifier = JWTVerifier(
        jwks_uri=demo.jwks_uri,
        issuer=issuer,
        # The token must be for this server: a token for the notes server (or
        # the issuer's own /mcp) is signed by the same key but refused here.
        audience=demo.search_resource,
        algorithm=algorithm,
    )
    auth = RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(issuer)],
        # Resource URI = base_url + the endpoint path: ISSUER/search/mcp.
        base_url=issuer,
        scopes_supported=list(SEARCH_SCOPES),
        required_scopes=list(SEARCH_SCOPES),
        challenge_scopes=list(SEARCH_SCOPES),
        resource_name=SEARCH_NAME,
    )
    server = FastMCP("search", auth=auth)

    @server.tool
    def search(query: str) -> dict[str, Any]:
        """Search the team's documents."""
        token = get_access_token()
        words = query.lower().split()
        found = [
            doc["title"]
            for doc in DOCUMENTS
            if any(w in (doc["title"] + " " + doc["text"]).lower() for w in words)
        ]
        return {
            "subject": token.claims.get("sub") if token else None,
            "client": token.client_id if token else None,
            "scope": " ".join(token.scopes) if token else "",
            "results": found,
        }

    return server.http_app(path=SEARCH_ENDPOINT)


def serve(app: ASGIApp, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", choices=("notes", "search"))
    parser.add_argument("--issuer", required=True, help="the nginx origin = ISSUER")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--algorithm",
        default="RS256",
        help="the issuer's signing algorithm, the alg of its published keys:"
        " RS256 (the key it makes by default), ES256 or EdDSA",
    )
    args = parser.parse_args(argv)
    issuer = args.issuer.rstrip("/")
    if args.server == "notes":
        serve(notes_app(issuer), args.port)
    else:
        serve(search_app(issuer, args.algorithm), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
