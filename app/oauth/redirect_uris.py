"""Redirect URIs: what registration accepts, how a request matches, what is trusted.

Web URIs must read the same to RFC 3986 and to browsers (WHATWG URL Standard);
native apps may use loopback ``http`` (RFC 8252 §7.3) or a private-use scheme
(RFC 8252 §7.1). Matching compares raw strings.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

import ada_url
import idna
from rfc3986_validator import validate_rfc3986

from ..config_values import WEB_SCHEMES, scheme_refused
from .constants import LOOPBACK_BROWSER_HOSTS

#: Loopback origins one another's aliases when ``LOOPBACK_ALIASES`` is on.
LOOPBACK_ORIGINS = tuple(f"http://{host}" for host in sorted(LOOPBACK_BROWSER_HOSTS))
#: Web schemes a redirect URI may use, with their default ports.
WEB_PORTS = {"https": 443, "http": 80}
#: A loopback ``http`` URI split where RFC 8252 §7.3 lets it vary: scheme and
#: host as spelled, then an optional port, then the rest (path and query).
_LOOPBACK_URI = re.compile(
    r"(?P<origin>http://(?:127\.0\.0\.1|localhost|\[::1\]))"
    r"(?::[0-9]*)?"
    r"(?P<rest>[/?].*)?",
    re.IGNORECASE,
)
_PORT = re.compile(r":[0-9]*")
#: RFC 3986 §3.1.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def redirect_uri_problem(
    uri: object, allowed_schemes: frozenset[str] | None = None
) -> str | None:
    """Say what is wrong with a redirect URI offered at registration, or ``None``.

    ``allowed_schemes``, when given, narrows the private-use schemes accepted.
    """
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        return "must be a non-empty string"
    # RFC 3986: a URI is printable ASCII; anything else (spaces, controls,
    # look-alike Unicode) would be shown to people differently from where it goes.
    if any(not 0x21 <= ord(c) <= 0x7E for c in uri):
        return "must be printable ASCII with no spaces"
    # Named first, so the answer says what matters, whatever else is wrong.
    scheme_match = _SCHEME.match(uri)
    if scheme_match and scheme_refused(scheme_match[1]):
        return f"must not use the '{scheme_match[1].lower()}' scheme"
    if "#" in uri:
        return "must not contain a fragment"
    if "*" in uri:
        return "must not contain a wildcard"
    # RFC 3986 Appendix A grammar: refuses backslashes, " < > ^ ` { | } and
    # other characters that browsers repair in their own ways.
    if not validate_rfc3986(uri, rule="URI"):
        return "is not a valid URI (RFC 3986)"
    scheme = uri.split(":", 1)[0].lower()
    if scheme in WEB_PORTS:
        return _web_redirect_problem(uri, scheme)
    return _private_use_problem(uri, scheme, allowed_schemes)


def private_scheme_refused(
    scheme: str, allowed_schemes: frozenset[str] | None = None
) -> bool:
    """Whether a non-web scheme may never carry a redirect here."""
    scheme = scheme.lower()
    if scheme_refused(scheme):
        return True
    return allowed_schemes is not None and scheme not in allowed_schemes


def _private_use_problem(
    uri: str, scheme: str, allowed_schemes: frozenset[str] | None
) -> str | None:
    """Check a native app's redirect URI (RFC 8252 §7.1), matched exactly later.

    Any scheme not refused is accepted, with or without the reverse-domain
    dot §7.1 recommends: Cursor registers ``cursor://``.
    """
    if private_scheme_refused(scheme, allowed_schemes):
        return f"uses the '{scheme}' scheme, which this server does not accept"
    if not uri[len(scheme) + 1 :].strip("/"):
        return "must have a path after the scheme"
    try:
        netloc = urlsplit(uri).netloc
        href = ada_url.URL(uri).href
    except ValueError:
        return "is not a valid URL"
    if "@" in netloc:
        return "must not contain user information"
    # The browser hands the OS what it parsed: dot segments resolved, ports
    # checked. Only the scheme's case is an equivalent spelling (RFC 3986 §3.1).
    if href != scheme + uri[len(scheme) :]:
        return "must be written as a browser reads it (WHATWG URL Standard)"
    return None


def _web_redirect_problem(uri: str, scheme: str) -> str | None:
    """Check an ``http``/``https`` redirect URI that is valid RFC 3986 syntax."""
    try:
        parts = urlsplit(uri)
        port = parts.port
        url = ada_url.URL(uri)
    except ValueError:
        return "is not a valid URL"
    if "@" in parts.netloc:
        return "must not contain user information"
    if not parts.hostname:
        return "must be an absolute URI with a host"
    if port == 0:
        return "must not use port 0"
    if url.href != _as_browsers_write(uri, parts, scheme, port):
        return "must be written as a browser reads it (WHATWG URL Standard)"
    problem = _host_problem(url)
    if problem:
        return problem
    if scheme == "http" and url.hostname not in LOOPBACK_BROWSER_HOSTS:
        return "must use https, or http on a loopback address"
    return None


def _as_browsers_write(
    uri: str, parts: SplitResult, scheme: str, port: int | None
) -> str:
    """Serialise an RFC 3986 reading of a URI as the WHATWG URL Standard does.

    Only the differences RFC 3986 §6.2.2.1 and §6.2.3 call equivalent are
    applied (case of scheme and host, default port, empty path); any other
    difference means a browser would go somewhere the text does not say:
    ``\\`` read as ``/``, ``0x7f.1`` read as ``127.0.0.1``, ``%2e%2e`` segments
    removed, percent-encoded hosts decoded.
    """
    netloc = parts.netloc
    # Only an IPv6 literal holds colons before the port's.
    end = netloc.index("]") + 1 if netloc.startswith("[") else netloc.find(":")
    host = (netloc[:end] if end >= 0 else netloc).lower()
    shown_port = "" if port in (None, WEB_PORTS[scheme]) else f":{port}"
    query = "?" + uri.split("?", 1)[1] if "?" in uri else ""
    return f"{scheme}://{host}{shown_port}{parts.path or '/'}{query}"


def _host_problem(url: ada_url.URL) -> str | None:
    """Hosts are DNS names of LDH labels, dotted-quad IPv4 or bracketed IPv6."""
    if url.host_type != ada_url.HostType.DEFAULT:
        return None  # ada accepted an IPv4 or IPv6 address, written canonically
    host = url.hostname
    if host.endswith(".") or len(host) > 253:
        return "must name a valid host"
    try:
        # RFC 5891 §4: LDH labels of 1-63 characters, no hyphen at either
        # end, and any xn-- label a valid A-label.
        idna.encode(host)
    except UnicodeError:
        return "must name a valid host"
    return None


def browser_host(uri: str) -> str:
    """The host (and non-default port) a browser goes to for ``uri``.

    This is what the consent page names: the WHATWG URL Standard's reading,
    not Python's, so a client cannot show one host and send people to another.
    """
    try:
        return ada_url.URL(uri).host
    except ValueError:
        # A browser cannot follow it either; show the text, never a guess.
        return urlsplit(uri).netloc


def redirect_uri_matches(
    registered: str, requested: str, loopback_aliases: bool = False
) -> bool:
    """Compare the raw strings exactly, except that a loopback port may vary.

    RFC 8252 §7.3 lets only the port differ; with ``loopback_aliases`` the
    host may also be any other loopback spelling. Parsing first would let
    ``urlsplit``'s clean-up (it drops tabs and newlines, strips leading
    controls) turn a different string into a match.
    """
    if requested == registered:
        return True
    loopback = _LOOPBACK_URI.fullmatch(registered)
    if loopback is None:
        return False
    origins = {loopback["origin"], *(LOOPBACK_ORIGINS if loopback_aliases else ())}
    rest = loopback["rest"] or ""
    return any(_only_port_differs(requested, o, rest) for o in origins)


def _only_port_differs(requested: str, origin: str, rest: str) -> bool:
    """Whether ``requested`` is ``origin``, an optional port, then ``rest``."""
    if len(requested) < len(origin) + len(rest):
        return False
    if not (requested.startswith(origin) and requested.endswith(rest)):
        return False
    port = requested[len(origin) : len(requested) - len(rest)]
    return port == "" or _is_port(port)


def _is_port(spelling: str) -> bool:
    """Accept ``:`` and ``:1``-``:65535``, leading zeros allowed (RFC 3986 §3.2.3)."""
    if _PORT.fullmatch(spelling) is None:
        return False
    digits = spelling[1:].lstrip("0")
    if not digits:
        # ":" alone is an empty port, RFC 3986's other spelling of none; ":0" is not.
        return spelling == ":"
    return len(digits) <= 5 and int(digits) <= 65535


def redirect_uri_is_trusted(uri: str) -> bool:
    """Whether an error may be redirected to this registered URI unasked.

    RFC 9700 §4.11.2: anyone can register an https URI, so sending people there
    before they have approved the client would make us an open redirector.
    Only loopback URIs (RFC 8252 §7.3) stay on the device. A private-use
    scheme does not: whichever app claims it gets the URL, and several hand
    it on to a web browser or an OS handler.
    """
    return _LOOPBACK_URI.fullmatch(uri) is not None


def app_scheme(uri: str) -> str | None:
    """``cursor://`` or ``com.example.app:`` for a private-use URI, else ``None``.

    The consent page names the scheme: its host part means nothing to people,
    and the OS hands the code to whichever app claims the scheme.
    """
    scheme = _SCHEME.match(uri)
    if scheme is None or scheme[1].lower() in WEB_SCHEMES:
        return None
    slashes = "//" if uri[scheme.end() :].startswith("//") else ""
    return scheme[0].lower() + slashes


def registered_scheme_allowed(uri: str, allowed: frozenset[str] | None) -> bool:
    """Whether a registered URI's scheme is still accepted (settings may narrow)."""
    scheme = _SCHEME.match(uri)
    if scheme is None or scheme[1].lower() in WEB_SCHEMES:
        return True
    return not private_scheme_refused(scheme[1], allowed)
