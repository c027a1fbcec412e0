"""A deploy's SIGTERM lets the requests in flight finish before gunicorn exits."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from devservices import free_port
from helpers import start_web


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data, "the connection was closed without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_a_request_in_flight_at_sigterm_gets_its_whole_answer(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    web = start_web(base_env, port, tmp_path / "web.log")
    body = json.dumps(
        {"redirect_uris": ["http://127.0.0.1/callback"], "client_name": "Slow"}
    ).encode()
    half = len(body) // 2
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /register HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{port}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body[:half]
        )
        time.sleep(1)  # the worker is now reading the body, mid-request

        web.send_signal(signal.SIGTERM)
        time.sleep(2)  # a deploy's stop is under way: master and worker saw it
        assert web.poll() is None, "gunicorn quit with a request in flight"
        sock.sendall(body[half:])
        status, answer = read_response(sock)
        sock.close()

        assert status == 201, answer
        assert answer["client_name"] == "Slow"
        assert answer["client_id"].startswith("lessie-")
        assert web.wait(timeout=60) == 0, (tmp_path / "web.log").read_text()
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()
