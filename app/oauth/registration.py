"""Dynamic client registration (RFC 7591), strict where it matters.

The request is reduced to the fields this service stores before Authlib's
claims validation sees it: redirect URIs are held to the contract's rules,
grant and response types the service does not offer are dropped (RFC 7591 §2
lets the server replace requested values), and every other field is ignored.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from authlib.oauth2.rfc6749.requests import JsonPayload
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7591.errors import (
    InvalidClientMetadataError,
    InvalidRedirectURIError,
)
from confusable_homoglyphs import categories as confusable_categories

from ..config import current_settings
from ..models import utcnow
from ..rate_limits import client_address
from .clients import (
    Client,
    ClientRow,
    generate_client_id,
    generate_client_secret,
    hash_secret,
)
from .constants import (
    AUTH_METHODS,
    DEFAULT_GRANT_TYPES,
    DEFAULT_RESPONSE_TYPES,
    SCOPES,
)
from .metadata import authorization_server_metadata
from .redirect_uris import redirect_uri_problem
from .registration_caps import insert_within_caps

DEFAULT_CLIENT_NAME = "MCP Client"
MAX_CLIENT_NAME_LENGTH = 200
MAX_REDIRECT_URIS = 20
#: Invisible or non-text: controls, formats (bidi overrides), surrogates,
#: private use, unassigned, line and paragraph separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Letters and marks that render blank: Unicode's Default_Ignorable_Code_Point
#: outside the C categories (Hangul fillers, variation selectors ...), the
#: Braille blank and the musical null notehead.
BLANK_CHARACTERS = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, 0x1D159}
    | set(range(0x180B, 0x1810))
    | set(range(0xFE00, 0xFE10))
    | set(range(0xE0100, 0xE01F0))
)
#: Combining marks one letter may carry: Hebrew points with a cantillation
#: mark or a Tibetan stack need four; more is "Zalgo" text.
MAX_COMBINING_RUN = 4
#: Script values any word may contain (digits, punctuation, combining marks).
SHARED_SCRIPTS = frozenset({"COMMON", "INHERITED"})
#: Scripts one word may combine: UTS #39 §5.2, "Highly Restrictive".
SCRIPT_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


class _Payload(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


def _string_list(data: dict[str, Any], name: str, default: list[str]) -> list[str]:
    value = data.get(name)
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadataError(f"'{name}' must be a list of strings.")
    return value


def _redirect_uris(data: dict[str, Any]) -> list[str]:
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise InvalidRedirectURIError("'redirect_uris' must be a non-empty list.")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectURIError("Too many redirect URIs.")
    allowed_schemes = current_settings().allowed_redirect_schemes
    for uri in uris:
        problem = redirect_uri_problem(uri, allowed_schemes)
        if problem:
            raise InvalidRedirectURIError(f"Each redirect URI {problem}.")
    return list(dict.fromkeys(uris))


def _offered(requested: list[str], offered: tuple[str, ...], name: str) -> list[str]:
    kept = [value for value in offered if value in requested]
    if offered[0] not in kept:
        raise InvalidClientMetadataError(f"'{name}' must include '{offered[0]}'.")
    return kept


def _client_name(data: dict[str, Any]) -> str:
    """The name the consent page will show, normalised; raise if it deceives.

    UTS #39 §5 and UAX #15: compatibility look-alikes (full-width
    ``ＣＬＡＵＤＥ``, mathematical ``𝐂𝐥𝐚𝐮𝐝𝐞``) are folded by NFKC, every run
    of spaces (no-break, ideographic, figure ...) becomes one space, and the
    result is what is judged, stored and shown.
    """
    name = data.get("client_name")
    if name is None or (isinstance(name, str) and not name.strip()):
        return DEFAULT_CLIENT_NAME
    if not isinstance(name, str) or len(name) > MAX_CLIENT_NAME_LENGTH:
        raise _name_error(
            f"must be a string of at most {MAX_CLIENT_NAME_LENGTH} characters"
        )
    if any(_hidden(c) for c in name):
        raise _name_error("must not contain invisible or formatting characters")
    name = " ".join(unicodedata.normalize("NFKC", name).split())
    if not name:
        return DEFAULT_CLIENT_NAME
    if len(name) > MAX_CLIENT_NAME_LENGTH or any(_hidden(c) for c in name):
        raise _name_error("must not expand into hidden or overlong text")
    if any(_marks_deceive(word) for word in name.split()):
        raise _name_error(
            "must not contain marks that strike through, enclose or pile up on letters"
        )
    if any(_mixes_scripts(word) for word in name.split()):
        raise _name_error("must not mix look-alike scripts within a word")
    return name


def _name_error(problem: str) -> InvalidClientMetadataError:
    return InvalidClientMetadataError(f"'client_name' {problem}.")


def _marks_deceive(word: str) -> bool:
    """True if combining marks could make ``word`` read as other text.

    Overlays (canonical combining class 1: U+0338 after ``Claude`` strikes
    the e through) and enclosing marks (category Me, such as U+20E0) draw
    across letters; a mark with no letter before it, or a pile of more than
    :data:`MAX_COMBINING_RUN`, spills over its neighbours on the page.
    """
    if unicodedata.category(word[0]).startswith("M"):
        return True  # a mark with no letter to sit on
    run = 0
    for char in word:
        category = unicodedata.category(char)
        run = run + 1 if category.startswith("M") else 0
        if category == "Me" or unicodedata.combining(char) == 1:
            return True
        if run > MAX_COMBINING_RUN:
            return True
    return False


def _hidden(char: str) -> bool:
    """True for characters that render as nothing or are not text at all."""
    return (
        unicodedata.category(char) in HIDDEN_CATEGORIES or ord(char) in BLANK_CHARACTERS
    )


def _mixes_scripts(word: str) -> bool:
    """True if one word mixes scripts beyond UTS #39's Highly Restrictive level."""
    scripts = {confusable_categories.alias(c) for c in word} - SHARED_SCRIPTS
    return len(scripts) > 1 and not any(scripts <= mix for mix in SCRIPT_MIXES)


def _auth_method(data: dict[str, Any]) -> str:
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidClientMetadataError(
            "'token_endpoint_auth_method' must be one of "
            + ", ".join(AUTH_METHODS)
            + "."
        )
    return method


def _scope(data: dict[str, Any]) -> str:
    scope = data.get("scope")
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        return " ".join(SCOPES)
    if not isinstance(scope, str):
        raise InvalidClientMetadataError("'scope' must be a space-separated string.")
    # Unknown scopes are dropped (RFC 7591 §2), but never replaced by wider ones.
    requested = scope.split()
    kept = [s for s in SCOPES if s in requested]
    if not kept:
        raise InvalidClientMetadataError(
            "'scope' must include at least one of: " + ", ".join(SCOPES) + "."
        )
    return " ".join(kept)


def clean_metadata(
    data: Any, grant_types: tuple[str, ...], response_types: tuple[str, ...]
) -> dict[str, Any]:
    """Reduce a registration request to what is registered, or raise.

    ``grant_types`` and ``response_types`` are those the server offers.
    """
    if not isinstance(data, dict):
        raise InvalidClientMetadataError("The request body must be a JSON object.")
    return {
        "redirect_uris": _redirect_uris(data),
        "token_endpoint_auth_method": _auth_method(data),
        "grant_types": _offered(
            _string_list(data, "grant_types", list(DEFAULT_GRANT_TYPES)),
            grant_types,
            "grant_types",
        ),
        "response_types": _offered(
            _string_list(data, "response_types", list(DEFAULT_RESPONSE_TYPES)),
            response_types,
            "response_types",
        ),
        "client_name": _client_name(data),
        "scope": _scope(data),
    }


class RegistrationClaims(ClientMetadataClaims):
    """Authlib's RFC 7591 claims, with our redirect URI rules in place of its own."""

    def validate_redirect_uris(self) -> None:
        # Authlib wants a host, which a private-use URI such as
        # ``com.example.app:/cb`` lacks (RFC 8252 §7.1); :func:`clean_metadata`
        # has already held every URI to :func:`redirect_uri_problem`.
        return None


class RegistrationEndpoint(ClientRegistrationEndpoint):
    """RFC 7591 with open registration, capped per source address and in total."""

    def __init__(self, server: Any = None) -> None:
        super().__init__(server, claims_classes=[RegistrationClaims])

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration, as MCP clients expect; limits apply instead

    def get_server_metadata(self) -> dict[str, Any]:
        return authorization_server_metadata(current_settings(), self.server)

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        cleaned = clean_metadata(
            request.payload.data, self.server.grant_types, self.server.response_types
        )
        request.payload = _Payload(cleaned)
        return super().extract_client_metadata(request)

    def generate_client_id(self, request: Any) -> str:
        return generate_client_id(current_settings().client_id_prefix)

    def generate_client_secret(self, request: Any) -> str:
        return generate_client_secret()

    def create_registration_response(self, request: Any) -> tuple[int, dict, list]:
        status, body, headers = super().create_registration_response(request)
        if body["token_endpoint_auth_method"] == "none":
            body.pop("client_secret", None)  # public clients get no secret
        return status, body, headers

    def save_client(
        self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any
    ) -> Client:
        settings = current_settings()
        source = client_address()
        public = client_metadata["token_endpoint_auth_method"] == "none"
        values = {
            "client_id": client_info["client_id"],
            "client_secret_hash": None
            if public
            else hash_secret(client_info["client_secret"]),
            "client_name": client_metadata["client_name"],
            "redirect_uris": client_metadata["redirect_uris"],
            "grant_types": client_metadata["grant_types"],
            "response_types": client_metadata["response_types"],
            "token_endpoint_auth_method": client_metadata["token_endpoint_auth_method"],
            "scope": client_metadata["scope"],
            "registered_from": source,
            "created_at": utcnow(),
            "last_authorized_at": None,
        }
        insert_within_caps(values, settings)
        return Client(ClientRow(**values))
