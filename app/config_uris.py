"""Resource URIs (RFC 8707 §2): their one canonical spelling, and how a
request's URI finds a registered one.

Clients differ in how they write the same server: ``HTTPS://Host:443/x/``
and ``https://host/x`` name one resource. Scheme and host are compared in
lower case (RFC 3986 §6.2.2.1), a default port is dropped (§6.2.3) and so is
a trailing slash. The path stays case-sensitive. A registered URI also
covers the paths below it, on a segment boundary: ``/github`` covers
``/github/mcp`` but not ``/github2``.

Only paths with one reading are accepted: no dot segments, no empty
segments, no percent-escapes, no backslash. A proxy routes a request by the
path it normalised, while ``X-Forwarded-Uri`` carries the raw one;
``/github/../notes/mcp`` must not pass as ``/github``'s.

Imports nothing from the app but plain values, so that settings can use it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from .config_values import LOOPBACK_HOSTS

#: The default port of each scheme a resource may use.
DEFAULT_PORTS = {"https": 443, "http": 80}
#: RFC 3986 ``pchar`` less percent-escapes, and ``/``.
PATH_PATTERN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
#: The longest URI kept; a resource's is an identifier, not a document.
MAX_URI_LENGTH = 2000
#: ``host[:port]``: a DNS name or IPv4 address, or an IPv6 literal in brackets.
#: Nothing else may stand in the authority: a quote would break the
#: challenge that names the resource, a slash would move the path.
HOST_PORT = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def split_resource_uri(value: str) -> tuple[str, str]:
    """The canonical origin and path of ``value``; raise ``ValueError`` if it
    cannot be a resource: absolute ``https``, or ``http`` on a loopback host,
    with no userinfo, query or fragment and a path of one reading."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URI_LENGTH:
        raise ValueError("must be an absolute URI")
    if "?" in value or "#" in value:
        raise ValueError("must not have a query or fragment")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in value):
        raise ValueError("must be plain ASCII without spaces")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc or not parts.hostname:
        raise ValueError("must be an absolute https URI")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials")
    if not HOST_PORT.fullmatch(parts.netloc):
        raise ValueError("must name a plain host name or address")
    host = parts.hostname.lower()
    if scheme == "http" and not is_loopback_host(host):
        raise ValueError("must use https unless the host is loopback")
    port = parts.port  # raises ValueError for a port that is not a number
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    return origin, _path(parts.path)


def is_loopback_host(host: str | None) -> bool:
    """Tell whether ``host`` (as ``urlsplit().hostname`` gives it) is loopback.

    Wider than the redirect URI rule: any loopback address will do for an
    ``http`` issuer or resource (development and tests), not only RFC 8252's
    names, so the built-in resource of any such issuer is a resource URI.
    """
    if not host:
        return False
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path(path: str) -> str:
    path = path.rstrip("/")
    if not PATH_PATTERN.fullmatch(path):
        raise ValueError("path must be plain characters, without percent-escapes")
    segments = path.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("path must not have empty or dot segments")
    return path


def canonical_resource_uri(value: str) -> str:
    """``value`` in its one canonical spelling; raise ``ValueError`` if not a
    resource URI."""
    origin, path = split_resource_uri(value)
    return origin + path


def covers(registered_path: str, path: str) -> bool:
    """Whether a resource at ``registered_path`` covers ``path`` (same origin)."""
    return path == registered_path or path.startswith(registered_path + "/")
