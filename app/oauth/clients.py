"""Registered clients: lookup, secrets, redirect URI rules, pruning.

Every client lookup goes through :func:`query_client`, so a future source of
clients (Client ID Metadata Documents) slots in at one place.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from urllib.parse import SplitResult, urlsplit

import ada_url
import idna
from authlib.oauth2.rfc6749 import ClientMixin
from rfc3986_validator import validate_rfc3986
from sqlalchemy import delete, exists, func, select, update

from ..config import current_settings
from ..db import db, is_storable
from ..models import Consent, OAuthClient, utcnow

#: Scopes this service knows; a client may ask for any of them.
SCOPES = ("read", "write")
#: OpenID's scope for refresh tokens: accepted and ignored, since refresh
#: tokens do not depend on it (CONTRACT §10); never granted as a scope.
OFFLINE_ACCESS = "offline_access"
#: Client authentication methods at the token endpoint (CONTRACT §2).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
#: Hosts that RFC 8252 §7.3 treats as loopback for redirect URIs.
LOOPBACK_REDIRECT_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: The same hosts as a browser writes them (IPv6 in brackets).
LOOPBACK_BROWSER_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
#: Web schemes a redirect URI may use, with their default ports.
WEB_PORTS = {"https": 443, "http": 80}
#: Schemes that leave the device; any other registered scheme is private-use.
WEB_SCHEMES = ("http", "https")

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


def hash_secret(secret: str) -> str:
    """SHA-256 suffices: secrets are 256 random bits, not guessable passwords."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def generate_client_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def generate_client_secret() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def redirect_uri_problem(uri: object) -> str | None:
    """Say what is wrong with a redirect URI offered at registration, or ``None``."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        return "must be a non-empty string"
    # RFC 3986: a URI is printable ASCII; anything else (spaces, controls,
    # look-alike Unicode) would be shown to people differently from where it goes.
    if any(not 0x21 <= ord(c) <= 0x7E for c in uri):
        return "must be printable ASCII with no spaces"
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
    return "must use https, or http on a loopback address"


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


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Compare the raw strings exactly, except that a loopback port may vary.

    RFC 8252 §7.3 lets only the port differ. Parsing first would let
    ``urlsplit``'s clean-up (it drops tabs and newlines, strips leading
    controls) turn a different string into a match.
    """
    if requested == registered:
        return True
    loopback = _LOOPBACK_URI.fullmatch(registered)
    if loopback is None:
        return False
    origin, rest = loopback["origin"], loopback["rest"] or ""
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
    Loopback and private-use-scheme URIs (RFC 8252 §7.1) stay on the device.
    """
    if _LOOPBACK_URI.fullmatch(uri):
        return True
    scheme = _SCHEME.match(uri)
    return scheme is not None and scheme[1].lower() not in WEB_SCHEMES


class Client(ClientMixin):
    """Authlib's view of a registered client row."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def client_name(self) -> str:
        return self.row.client_name

    @property
    def is_public(self) -> bool:
        return self.row.token_endpoint_auth_method == "none"

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Only an unambiguous default; with several URIs the client must choose.
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """Return the scope to grant, or ``None`` (``invalid_scope``) if not allowed."""
        allowed = self.row.scope.split()
        if not scope:
            return " ".join(allowed)
        requested = [s for s in scope.split() if s != OFFLINE_ACCESS]
        if not requested:
            return " ".join(allowed) if OFFLINE_ACCESS in scope.split() else None
        if any(s not in allowed for s in requested):
            return None
        return " ".join(s for s in allowed if s in requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(
            redirect_uri_matches(r, redirect_uri) for r in self.row.redirect_uris
        )

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.client_secret_hash
        if stored is None:
            return False
        return hmac.compare_digest(stored, hash_secret(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A client uses the one method it registered, at every endpoint.
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.row.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        # A client registered while REFRESH_TOKENS was on gets none once it is off.
        if grant_type == "refresh_token" and not current_settings().refresh_tokens:
            return False
        return grant_type in self.row.grant_types


def query_client(client_id: str | None) -> Client | None:
    """Find a client by ``client_id``; the one lookup every endpoint uses."""
    # Text Postgres cannot hold could never have been registered.
    if not client_id or len(client_id) > 128 or not is_storable(client_id):
        return None
    row = db.session.get(OAuthClient, client_id)
    return Client(row) if row is not None else None


def count_clients(registered_from: str | None = None) -> int:
    query = select(func.count()).select_from(OAuthClient)
    if registered_from is not None:
        query = query.where(OAuthClient.registered_from == registered_from)
    return db.session.scalar(query) or 0


def mark_authorized(client: Client) -> None:
    """Record, once, that a client completed an authorization (it is in use)."""
    if client.row.last_authorized_at is not None:
        return  # only whether it was ever used matters, not when it last was
    db.session.execute(
        update(OAuthClient)
        .where(
            OAuthClient.client_id == client.client_id,
            OAuthClient.last_authorized_at.is_(None),
        )
        .values(last_authorized_at=utcnow())
    )


def prune_unused_clients(registered_before: datetime) -> int:
    """Delete clients registered before a time that never completed an authorization."""
    has_consent = exists().where(Consent.client_id == OAuthClient.client_id)
    result = db.session.execute(
        delete(OAuthClient).where(
            OAuthClient.created_at < registered_before,
            OAuthClient.last_authorized_at.is_(None),
            ~has_consent,
        )
    )
    return result.rowcount or 0
