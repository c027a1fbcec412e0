"""Fetch a Client ID Metadata Document without letting its URL reach inside.

Anyone can make us fetch any URL by sending it as a ``client_id``, so the
fetch is held to the draft's rules (draft-ietf-oauth-client-id-metadata-document
§3 and §6): ``https`` only, no fragment, user information or dot segments;
the name is resolved here and refused if any answer is not a public address;
the connection goes to the address that was checked (a second DNS answer
cannot rebind it), TLS still verifies the certificate for the name; at most
:data:`MAX_BYTES` are read, within a deadline; redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field

import ada_url
import httpx

from .constants import LOOPBACK_BROWSER_HOSTS

#: Largest document read; the draft suggests 5 KB (§6.6).
MAX_BYTES = 5 * 1024
#: Seconds to connect, to wait for each chunk, and for the whole fetch.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 3.0
DEADLINE = 5.0
#: NAT64 (RFC 6052 §2.1) carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: What TLS trusts: the system's authorities (tests substitute their own).
TLS_VERIFY: ssl.SSLContext | bool = True
_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchProblem(Exception):
    """Why a document cannot be used: a short code and the values it names."""

    def __init__(self, code: str, **args: str | int) -> None:
        super().__init__(code)
        self.code = code
        self.args_ = args


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetching may go, from the settings."""

    allow_loopback: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Fetched:
    body: bytes
    cache_control: str


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


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries to, if it carries one."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client it tunnels to
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_is_public(text: str, allow_loopback: bool = False) -> bool:
    """Whether we may connect to ``text``: a global unicast address.

    ``is_global`` alone lets multicast through and, on Python 3.11, checks
    neither 6to4 nor NAT64 payloads; so unwrap first and test each property.
    """
    try:
        address = _unwrap(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return False
    if allow_loopback and address.is_loopback:
        return True
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_link_local
        or address.is_loopback
        or address.is_private
    )


def checked_addresses(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """Resolve ``host`` once; refuse if ANY answer is not public (§6.5)."""
    name = host[1:-1] if host.startswith("[") else host
    try:
        answers = resolve(name, port)
    except (OSError, UnicodeError):
        raise FetchProblem("resolve", host=host) from None
    if not answers:
        raise FetchProblem("resolve", host=host)
    for answer in answers:
        if not address_is_public(answer, policy.allow_loopback):
            raise FetchProblem("address", host=host, address=answer)
    return list(dict.fromkeys(answers))


def fetch(url: str, policy: FetchPolicy) -> Fetched:
    """GET ``url`` under every rule above; raise :class:`FetchProblem`."""
    parsed = check_url(url, policy)
    scheme = parsed.protocol[:-1]
    port = int(parsed.port) if parsed.port else (443 if scheme == "https" else 80)
    addresses = checked_addresses(parsed.hostname, port, policy)
    deadline = time.monotonic() + DEADLINE
    for address in addresses:
        try:
            return _fetch_from(address, parsed, scheme, port, deadline)
        except httpx.ConnectError:
            continue  # another checked address of the same name may answer
    raise FetchProblem("connect", host=parsed.hostname)


def _fetch_from(
    address: str, parsed: ada_url.URL, scheme: str, port: int, deadline: float
) -> Fetched:
    literal = f"[{address}]" if ":" in address else address
    target = f"{scheme}://{literal}:{port}{parsed.pathname}{parsed.search}"
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
    headers = {
        "Host": parsed.host,
        "Accept": "application/json",
        # Compressed bodies could expand far past the cap before we count them.
        "Accept-Encoding": "identity",
    }
    # trust_env=False: a proxy from the environment would undo the pinning.
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=TLS_VERIFY
    ) as c:
        try:
            with c.stream(
                "GET",
                target,
                headers=headers,
                extensions={"sni_hostname": parsed.hostname},
            ) as response:
                return _read(response, deadline)
        except httpx.ConnectError:
            raise
        except httpx.TimeoutException:
            raise FetchProblem("timeout") from None
        except (httpx.HTTPError, OSError, ValueError):
            # Whatever else goes wrong on the wire is the host's problem, not a 500.
            raise FetchProblem("connect", host=parsed.hostname) from None


def _read(response: httpx.Response, deadline: float) -> Fetched:
    """Read the body as it arrives, stopping at the cap or the deadline."""
    if response.is_redirect or 300 <= response.status_code < 400:
        raise FetchProblem("redirect", status=response.status_code)
    if response.status_code != 200:
        raise FetchProblem("status", status=response.status_code)
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if encoding != "identity":
        raise FetchProblem("encoding")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise FetchProblem("too_large", limit=MAX_BYTES)
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > MAX_BYTES:
            raise FetchProblem("too_large", limit=MAX_BYTES)
        if time.monotonic() > deadline:
            raise FetchProblem("timeout")
    return Fetched(bytes(body), response.headers.get("Cache-Control", ""))
