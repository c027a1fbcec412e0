"""Fetch a Client ID Metadata Document without letting its URL reach inside.

Anyone can make us fetch any URL by sending it as a ``client_id``, so the
fetch is held to the draft's rules (draft-ietf-oauth-client-id-metadata-document
§3 and §6): ``https`` only, no fragment, user information or dot segments;
the name is resolved here and refused if any answer is not a global unicast
address (:mod:`.addresses`); the connection goes to the address that was
checked (a second DNS answer cannot rebind it), TLS still verifies the
certificate for the name; at most :data:`MAX_BYTES` are read; redirects are
never followed.

One wall-clock limit, :data:`DEADLINE`, covers all of it: name resolution,
connecting, the TLS handshake, sending, the headers and the body. A host that
answers one byte at a time therefore cannot hold a thread longer. That is why
the HTTP/1.1 exchange is driven here with h11 (the sans-IO protocol library
httpx is built on) over a socket whose timeout is set, before every blocking
call, to the time left: an HTTP client's per-read timeouts restart with every
byte that arrives.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import ada_url
import h11

from .addresses import address_is_public
from .constants import LOOPBACK_BROWSER_HOSTS

#: Largest document read; the draft suggests 5 KB (§6.6).
MAX_BYTES = 5 * 1024
#: Seconds the whole fetch may take, from name resolution to the last byte.
DEADLINE = 5.0
#: Largest status line and header block read.
MAX_HEADER_BYTES = 8 * 1024
#: Name lookups per process still running at once. A lookup the deadline gave
#: up on runs on in the background until the resolver answers; this bounds them.
MAX_PENDING_LOOKUPS = 8
#: What TLS trusts: the system's authorities unless set (tests set their own).
TLS_VERIFY: ssl.SSLContext | None = None
_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})
_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


class FetchProblem(Exception):
    """Why a document cannot be used: a short code and the values it names."""

    def __init__(self, code: str, **args: str | int) -> None:
        super().__init__(code)
        self.code = code
        self.args_ = args


class FetchBusy(Exception):
    """This process cannot fetch now; a fact about us, not about the document."""


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetching may go, from the settings."""

    allow_loopback: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    #: The largest body read: a metadata document's by default.
    max_bytes: int = MAX_BYTES


@dataclass(frozen=True)
class Fetched:
    body: bytes
    cache_control: str


class _Clock:
    """The time left before :data:`DEADLINE`; a timeout once there is none."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise FetchProblem("timeout")
        return remaining


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to; tests replace this to pick answers."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in answers]


def check_url(url: str, policy: FetchPolicy) -> ada_url.URL:
    """Refuse a URL the draft (§3) or the settings rule out; return it parsed."""
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise FetchProblem("url_form")
    if "#" in url:
        raise FetchProblem("url_fragment")
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        raise FetchProblem("url_form") from None
    parts = url.split("?", 1)[0].split("/", 3) + ["", "", ""]
    authority, path = parts[2], parts[3]
    if parsed.username or parsed.password or "@" in authority:
        raise FetchProblem("url_userinfo")
    if any(segment.lower() in _DOT_SEGMENTS for segment in path.split("/")):
        raise FetchProblem("url_dot_segments")
    # The client_id is compared byte for byte; a spelling a browser would
    # rewrite (``127.1``, ``HOST``, ``:443``, ``\\``) names something else.
    if parsed.pathname in ("", "/"):
        raise FetchProblem("url_path")
    if parsed.href != url:
        raise FetchProblem("url_form")
    loopback_http = policy.allow_loopback and parsed.hostname in LOOPBACK_BROWSER_HOSTS
    if parsed.protocol != "https:" and not (
        parsed.protocol == "http:" and loopback_http
    ):
        raise FetchProblem("url_scheme")
    if policy.allowed_hosts and parsed.hostname not in policy.allowed_hosts:
        raise FetchProblem("host_not_allowed", host=parsed.hostname)
    return parsed


def _resolve_within(name: str, port: int, clock: _Clock) -> list[str]:
    """:func:`resolve`, given up on when the clock runs out.

    ``getaddrinfo`` takes no timeout, so it runs in a thread of its own that
    the fetch stops waiting for.
    """
    if not _lookups.acquire(blocking=False):
        raise FetchBusy()
    outcome: list[list[str] | Exception] = []

    def look_up() -> None:
        try:
            outcome.append(resolve(name, port))
        except (OSError, UnicodeError) as error:
            outcome.append(error)
        finally:
            _lookups.release()

    lookup = threading.Thread(target=look_up, name="cimd-resolve", daemon=True)
    lookup.start()
    lookup.join(clock.left())
    if not outcome:
        raise FetchProblem("timeout")
    answers = outcome[0]
    if isinstance(answers, Exception):
        raise FetchProblem("resolve", host=name)
    return answers


def checked_addresses(
    host: str, port: int, policy: FetchPolicy, clock: _Clock
) -> list[str]:
    """Resolve ``host`` once; refuse if ANY answer is not public (§6.5)."""
    name = host[1:-1] if host.startswith("[") else host
    answers = _resolve_within(name, port, clock)
    if not answers:
        raise FetchProblem("resolve", host=host)
    for answer in answers:
        if not address_is_public(answer, policy.allow_loopback):
            raise FetchProblem("address", host=host, address=answer)
    return list(dict.fromkeys(answers))


def fetch(url: str, policy: FetchPolicy) -> Fetched:
    """GET ``url`` under every rule above; raise :class:`FetchProblem`.

    :class:`FetchBusy` when too many name lookups are pending in this process.
    """
    parsed = check_url(url, policy)
    clock = _Clock(DEADLINE)
    https = parsed.protocol == "https:"
    port = int(parsed.port) if parsed.port else (443 if https else 80)
    for address in checked_addresses(parsed.hostname, port, policy, clock):
        try:
            sock = _connect(address, port, clock)
        except TimeoutError:
            raise FetchProblem("timeout") from None
        except OSError:
            continue  # another checked address of the same name may answer
        try:
            with sock:
                return _fetch_over(sock, parsed, https, clock, policy.max_bytes)
        except TimeoutError:
            raise FetchProblem("timeout") from None
        except (OSError, h11.ProtocolError, ValueError):
            # Whatever else goes wrong on the wire is the host's problem, not a 500.
            raise FetchProblem("connect", host=parsed.hostname) from None
    raise FetchProblem("connect", host=parsed.hostname)


def _connect(address: str, port: int, clock: _Clock) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(clock.left())
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


@functools.cache
def _system_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _fetch_over(
    sock: socket.socket, parsed: ada_url.URL, https: bool, clock: _Clock, limit: int
) -> Fetched:
    """Speak TLS if asked (verified for the name, not the address), then HTTP."""
    if not https:
        return _exchange(sock, parsed, clock, limit)
    name = parsed.hostname.strip("[]")
    tls = (TLS_VERIFY or _system_tls()).wrap_socket(
        sock, server_hostname=name, do_handshake_on_connect=False
    )
    with tls:
        # Since Python 3.5 the timeout bounds the whole handshake, not each read.
        tls.settimeout(clock.left())
        tls.do_handshake()
        return _exchange(tls, parsed, clock, limit)


def _exchange(
    sock: socket.socket, parsed: ada_url.URL, clock: _Clock, limit: int
) -> Fetched:
    """One GET over HTTP/1.1, reading at most the cap, within the clock."""
    http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    request = h11.Request(
        method="GET",
        target=parsed.pathname + parsed.search,
        headers=[
            ("Host", parsed.host),
            ("Accept", "application/json"),
            # Compressed bodies could expand far past the cap before we count them.
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
        ],
    )
    sock.settimeout(clock.left())
    sock.sendall(http.send(request) + (http.send(h11.EndOfMessage()) or b""))
    response = _next_event(http, sock, clock)
    while isinstance(response, h11.InformationalResponse):
        response = _next_event(http, sock, clock)
    if not isinstance(response, h11.Response):
        raise FetchProblem("connect", host=parsed.hostname)
    _check_head(response, limit)
    body = _read_body(http, sock, clock, limit)
    return Fetched(body, _header(response, b"cache-control"))


def _read_body(
    http: h11.Connection, sock: socket.socket, clock: _Clock, limit: int
) -> bytes:
    body = bytearray()
    while not isinstance(event := _next_event(http, sock, clock), h11.EndOfMessage):
        if not isinstance(event, h11.Data):
            raise h11.RemoteProtocolError("the answer ended early")
        body += event.data
        if len(body) > limit:
            raise FetchProblem("too_large", limit=limit)
    return bytes(body)


def _next_event(http: h11.Connection, sock: socket.socket, clock: _Clock) -> object:
    """h11's next event, reading from the socket no longer than the clock allows."""
    while (event := http.next_event()) is h11.NEED_DATA:
        sock.settimeout(clock.left())
        http.receive_data(sock.recv(4096))
    return event


def _header(response: h11.Response, name: bytes) -> str:
    values = [value for key, value in response.headers if key == name]
    return b", ".join(values).decode("latin-1")


def _check_head(response: h11.Response, limit: int) -> None:
    """Refuse a redirect, another status, compression or a declared excess."""
    if 300 <= response.status_code < 400:
        raise FetchProblem("redirect", status=response.status_code)
    if response.status_code != 200:
        raise FetchProblem("status", status=response.status_code)
    if _header(response, b"content-encoding").lower() not in ("", "identity"):
        raise FetchProblem("encoding")
    declared = _header(response, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise FetchProblem("too_large", limit=limit)
