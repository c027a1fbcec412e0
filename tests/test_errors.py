"""Errors: JSON for programs, an HTML page for people, never a traceback."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import LiveServer
from helpers import LOOPBACK_REDIRECT, Browser


def test_unknown_api_route_is_json_404(browser: Browser) -> None:
    response = browser.get("/no-such-route", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_unknown_route_is_an_html_page_for_browsers(browser: Browser) -> None:
    response = browser.get("/no-such-page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<h1>" in response.text


def test_wrong_method_on_an_api_route_is_json_405(browser: Browser) -> None:
    response = browser.get("/token")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_oversized_body_is_refused_with_413(browser: Browser) -> None:
    response = browser.post(
        "/register",
        data=b"{" + b" " * (1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"


def test_a_generated_request_id_is_returned(browser: Browser) -> None:
    first = browser.get("/healthz").headers["X-Request-ID"]
    second = browser.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_a_sane_incoming_request_id_is_kept(browser: Browser) -> None:
    response = browser.get("/healthz", headers={"X-Request-ID": "abc-123.def"})
    assert response.headers["X-Request-ID"] == "abc-123.def"


@pytest.mark.parametrize("hostile", ["x" * 500, "a b", "id\u00e9", "<script>"])
def test_a_hostile_request_id_is_replaced(browser: Browser, hostile: str) -> None:
    response = browser.get("/healthz", headers={"X-Request-ID": hostile.encode()})
    assert response.headers["X-Request-ID"] != hostile
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_logs_are_json_lines_with_the_request_id(
    make_server: Callable[..., LiveServer], capfd: pytest.CaptureFixture[str]
) -> None:

    live = make_server(LOG_LEVEL="INFO")
    browser = live.browser()
    browser.get("/healthz", headers={"X-Request-ID": "trace-me-42"})
    # Request lines are flushed within REQUEST_LINE_DELAY (0.1 s), not at once.
    lines: list[str] = []
    deadline = time.monotonic() + 2
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
        out = capfd.readouterr().out
        lines = [line for line in out.splitlines() if "trace-me-42" in line]
    records = [json.loads(line) for line in lines]
    request_log = [r for r in records if r.get("message") == "request"]
    assert request_log, lines
    assert request_log[0]["request_id"] == "trace-me-42"
    assert request_log[0]["status"] == 200
    assert request_log[0]["path"] == "/healthz"


@pytest.mark.parametrize(
    "path", ["/.well-known//oauth-authorization-server", "/auth//token", "//token"]
)
def test_doubled_slashes_never_redirect_to_the_host_header(
    browser: Browser, path: str
) -> None:
    response = browser.post(path, headers={"Host": "evil.example"})
    assert "evil.example" not in response.headers.get("Location", "")
    assert response.status_code in (400, 404, 405)


def test_retry_after_is_only_on_429(browser: Browser, user: dict[str, str]) -> None:
    # RFC 9110 §10.2.3: Retry-After on a redirect asks the client to wait
    # before following it; rate-limit counters belong in X-RateLimit-*.
    answers = {
        201: browser.post("/register", json={"redirect_uris": [LOOPBACK_REDIRECT]}),
        401: browser.post("/auth/token", json={"apiKey": "lsk_unknown"}),
        302: browser.login(user["email"], user["password"]),
    }

    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert "Retry-After" not in response.headers, status
        assert int(response.headers["X-RateLimit-Remaining"]) >= 0


def chunked(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """Yield ``body`` in pieces: requests then sends it chunked, with no length."""
    return (body[i : i + size] for i in range(0, len(body), size))


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/register", "application/json", b'{"client_name": "' + b"x" * 70000 + b'"}'),
        ("/auth/token", "application/json", b'{"apiKey": "' + b"x" * 70000 + b'"}'),
        ("/token", "application/x-www-form-urlencoded", b"code=" + b"c" * 70000),
    ],
)
def test_an_oversized_chunked_body_is_refused_with_413(
    browser: Browser, path: str, content_type: str, body: bytes
) -> None:
    # Without a Content-Length, werkzeug would read up to the limit and hand
    # the view a silently cut-off body.
    response = browser.post(
        path, data=chunked(body), headers={"Content-Type": content_type}
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "request_entity_too_large"


def test_a_chunked_body_within_the_limit_is_read_whole(browser: Browser) -> None:
    body = b'{"redirect_uris": ["' + LOOPBACK_REDIRECT.encode() + b'"]}'

    response = browser.post(
        "/register", data=chunked(body, 7), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text


def test_request_lines_are_held_briefly_and_never_after_other_records() -> None:
    import io
    import logging

    from app.logs import REQUEST_LINE_DELAY, JsonLinesHandler

    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    logger = logging.getLogger("test.held-lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        handler.write_request("GET", "/first", 200, 1.0, None, "r1")
        # Held, so that a busy worker writes many lines with one system call...
        assert stream.getvalue() == ""
        # ...but a record of any other kind goes out at once, after them.
        logger.warning("something happened")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["message"] for line in lines] == ["request", "something happened"]
        assert lines[0]["path"] == "/first"

        handler.write_request("GET", "/second", 200, 1.0, None, "r2")
        deadline = time.monotonic() + 20 * REQUEST_LINE_DELAY
        while "/second" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(REQUEST_LINE_DELAY / 4)
        assert "/second" in stream.getvalue()
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("method", "path", "status", "duration_ms", "remote_addr", "request_id"),
    [
        ("GET", "/healthz", 200, 0.12, "127.0.0.1", "0123456789abcdef" * 2),
        ("POST", "/mcp", 413, 1234.5, None, "abc-123.def"),
        (None, '/caf\u00e9/"quoted"\\\n\t\u2603', None, 0.0, "::1", "trace:me_42"),
        ("DELETE", "", 503, 1e16, "10.0.0.1", "x" * 128),
    ],
)
def test_the_request_line_is_the_encoders_text(
    method: str | None,
    path: str,
    status: int | None,
    duration_ms: float,
    remote_addr: str | None,
    request_id: str,
) -> None:
    # write_request spells the request line out; it must stay the text the
    # JSON encoder makes of the same fields, as the formatter writes any
    # other record's.
    import io

    from app.logs import JsonLinesHandler, log

    spelled = JsonLinesHandler(io.StringIO())
    spelled.write_request(method, path, status, duration_ms, remote_addr, request_id)
    spelled.flush()
    text = spelled.stream.getvalue()
    expected = json.dumps(
        {
            "time": "",
            "level": "INFO",
            "name": log.name,
            "message": "request",
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "remote_addr": remote_addr,
            "request_id": request_id,
        }
    )
    # The time is taken for each; the rest must match byte for byte.
    assert text.partition(", ")[2] == expected.partition(", ")[2] + "\n"
    assert text.count("\n") == 1


def test_security_headers_follow_the_answers_own_and_keep_any_it_set() -> None:
    from app.security import SECURITY_HEADERS, add_security_headers

    plain = [("Content-Type", "application/json"), ("X-Request-ID", "r1")]
    add_security_headers(plain)
    assert plain == [
        ("Content-Type", "application/json"),
        ("X-Request-ID", "r1"),
        *SECURITY_HEADERS,
    ]

    # An answer that set one itself keeps it, and gets the others in order.
    own = [("content-security-policy", "default-src 'self'")]
    add_security_headers(own)
    assert own == [("content-security-policy", "default-src 'self'")] + [
        header for header in SECURITY_HEADERS if header[0] != "Content-Security-Policy"
    ]
