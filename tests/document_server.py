"""A local web server that plays a client's metadata-document host.

Each path answers as configured (a document, a status, a slow or endless
body, headers a byte at a time); the server counts the connections it
accepts and the requests per path.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: DocumentServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.owner.lock:
            self.owner.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner = self.server.owner
        with owner.lock:
            owner.requests[self.path] += 1
            owner.hosts.append(self.headers.get("Host", ""))
        responder = owner.routes.get(self.path)
        try:
            if responder is None:
                self.send_error(404)
            else:
                responder(self)
        except OSError:
            pass  # the client hung up, as it should on a refused answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DocumentServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, Responder] = {}
        self.requests: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.connections = 0
        self.stopping = threading.Event()
        self.httpd = _Server(self)
        self.port = self.httpd.server_address[1]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(
        self,
        path: str,
        body: bytes | str = b"",
        status: int = 200,
        headers: dict[str, str | None] | None = None,
        delay: float = 0,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body

        def answer(handler: BaseHTTPRequestHandler) -> None:
            if delay:
                self.stopping.wait(delay)
            handler.send_response(status)
            for name, value in {
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
                **(headers or {}),
            }.items():
                if value is not None:  # None leaves a header out
                    handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = answer

    def document(self, path: str, **fields: Any) -> str:
        """Serve a good document at ``path`` (``fields`` override); return its URL."""
        url = self.url(path)
        headers = fields.pop("headers", None)
        delay = fields.pop("delay", 0)
        document = {
            "client_id": url,
            "client_name": "Document Client",
            "redirect_uris": ["http://127.0.0.1/callback"],
            **fields,
        }
        document = {k: v for k, v in document.items() if v is not None}
        self.respond(path, json.dumps(document), headers=headers, delay=delay)
        return url

    def endless(
        self, path: str, chunk: bytes = b" " * 1024, every: float = 0.05
    ) -> None:
        """Serve a body that never ends, without a Content-Length."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"client_id": "')
            while not self.stopping.is_set():
                handler.wfile.write(chunk)
                handler.wfile.flush()
                time.sleep(every)

        self.routes[path] = answer

    def dribble(self, path: str, every: float = 2.0) -> None:
        """Answer with response headers that never end, one byte every ``every``
        seconds: no per-read timeout ever fires."""
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: "

        def answer(handler: BaseHTTPRequestHandler) -> None:
            for byte in itertools.chain(head, itertools.repeat(ord("a"))):
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                if self.stopping.wait(every):
                    return

        self.routes[path] = answer

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
