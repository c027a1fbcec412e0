"""Read and validate the service's settings; the only reader of ``os.environ``."""

from __future__ import annotations

import hashlib
import math
import os.path
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import ada_url
from flask import current_app
from limits import parse_many
from redis.connection import parse_url as parse_redis_url
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .config_keys import GENERATED_ALGORITHMS, load_signing_key, load_verify_keys
from .config_providers import (
    ProviderSettingError,
    ProviderSettings,
    load_providers,
    provider_names,
)
from .config_uris import canonical_resource_uri, is_loopback_host
from .config_values import WEB_SCHEMES, scheme_refused

#: libpq's ``sslmode`` values; a typo would otherwise only fail at first connect.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

#: redis-py's ``ssl_cert_reqs`` values; ``none`` skips certificate verification.
REDIS_CERT_REQS = ("none", "optional", "required")

#: Shortest accepted ``SECRET_KEY`` / ``JWT_SECRET``; HS256 wants >= 256 bits.
MIN_SECRET_LENGTH = 32


class ConfigError(SystemExit):
    """A setting is missing or malformed.

    It derives from ``SystemExit`` so that, left uncaught, the process prints the
    one-line message and exits with status 1 instead of printing a traceback.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"configuration error: {name} {problem}")
        self.name = name


def _database_url(value: str) -> str:
    # PaaS add-ons hand out ``postgres://``, which SQLAlchemy refuses; name the
    # psycopg 3 driver explicitly because SQLAlchemy 2.0 would pick psycopg2.
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://") :]
    try:
        url: URL = make_url(value)
    except ArgumentError:
        raise ValueError("not a database URL") from None
    if url.get_backend_name() != "postgresql":
        raise ValueError("must be a postgresql:// URL")
    if "@" in (url.host or ""):
        # A password's own '@' left as it is: the rest would be read as the
        # host, and quoted (password and all) in every connection error.
        raise ValueError("has an '@' after the password: write it as %40")
    if url.drivername in ("postgresql", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    # The query goes to libpq as is (sslmode, sslrootcert, ...): check it now.
    options = {name: _single(name, value) for name, value in url.query.items()}
    if options.get("sslmode", "prefer") not in SSLMODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}")
    for name in ("sslrootcert", "sslcert", "sslkey"):
        # libpq 16 reads sslrootcert=system as "the system's trusted CAs".
        if name in options and options[name] != "system":
            _readable_file(name, options[name])
    return url.render_as_string(hide_password=False)


#: redis-py's URL options that are a socket's timeout, in seconds above 0.
REDIS_SECONDS_OPTIONS = ("socket_timeout", "socket_connect_timeout")


def _redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    # redis-py turns every query option into a connection argument, unchecked.
    options = {k: _single(k, v) for k, v in parse_qs(parts.query).items()}
    for name in options:
        if name.startswith("ssl_") and parts.scheme != "rediss":
            raise ValueError(f"{name} needs a rediss:// URL")
    if options.get("ssl_cert_reqs", "required") not in REDIS_CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(REDIS_CERT_REQS)}")
    if "ssl_ca_certs" in options:
        _readable_file("ssl_ca_certs", options["ssl_ca_certs"])
    # redis-py's own reading of the URL, so that what it would refuse at the
    # first connection is named now; never in urllib's or redis-py's words,
    # which quote the part they could not read (a password, when it holds a
    # '/', '?' or '#').
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(
            "has no port number where one belongs: write a '/', '?', '#' or '@'"
            " in the password as %2F, %3F, %23 or %40"
        ) from None
    try:
        parsed = parse_redis_url(value)
    except (ValueError, TypeError):
        raise ValueError(
            "has an option that is not a number where one belongs"
        ) from None
    for name in REDIS_SECONDS_OPTIONS:
        if name in parsed and not 0 < parsed[name] < math.inf:
            raise ValueError(f"{name} must be a number of seconds above 0")
    if not 0 <= parsed.get("health_check_interval", 0) < math.inf:
        raise ValueError("health_check_interval must be a number of seconds")
    if str(parsed.get("protocol", 2)) not in ("2", "3"):
        raise ValueError("protocol must be 2 or 3")
    if parts.scheme == "unix" and not parsed.get("path"):
        raise ValueError("a unix:// URL needs the socket's path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("names no host")
    return value


def _single(name: str, value: str | list[str] | tuple[str, ...]) -> str:
    if isinstance(value, str):
        return value
    if len(value) != 1:
        raise ValueError(f"{name} is given more than once")
    return value[0]


def _readable_file(name: str, path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise ValueError(f"{name} {path} is not a readable file")


def _issuer(value: str) -> str:
    value = value.rstrip("/")
    parts = urlsplit(value)
    # Scheme and host are case-insensitive (RFC 3986 §6.2.2.1); settle on
    # lower case so the issuer is one exact string and https is recognised.
    if parts.scheme and parts.netloc:
        value = parts._replace(
            scheme=parts.scheme.lower(), netloc=parts.netloc.lower()
        ).geturl()
        parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.query or parts.fragment or "#" in value or "?" in value:
        raise ValueError("must not have a query or fragment")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    # RFC 8414 §2: the issuer uses https; plain http only for local development.
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must use https unless the host is loopback")
    return value


def _secret(value: str) -> str:
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return value


def _secret_list(value: str) -> tuple[str, ...]:
    """Secrets separated by commas or spaces (none of them holds either)."""
    secrets = tuple(v for v in re.split(r"[,\s]+", value) if v)
    if not secrets:
        raise ValueError("names no secret")
    for secret in secrets:
        _secret(secret)
    return secrets


def _generated_algorithm(value: str) -> str:
    if value not in GENERATED_ALGORITHMS:
        raise ValueError(f"must be one of {', '.join(GENERATED_ALGORITHMS)}")
    return value


def _signing_key(value: str) -> str:
    load_signing_key(value)  # refuse now what could not sign later
    return value


def _verify_keys(value: str) -> str:
    load_verify_keys(value)
    return value


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _rate_limit(value: str) -> str:
    parse_many(value)
    return value


#: Ports a browser leaves out of an ``Origin`` (RFC 6454 §6.1).
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> str:
    """One origin as a browser serialises it: ``scheme://host[:port]``."""
    parts = urlsplit(value.strip().lower())
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value.strip()!r} has a bad port") from None
    if not parts.scheme or not parts.hostname or parts.username is not None:
        raise ValueError(f"{value.strip()!r} is not an origin (scheme://host[:port])")
    if parts.path or parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{value.strip()!r} is not an origin (scheme://host[:port])")
    netloc = parts.netloc
    if port is not None and port == _DEFAULT_PORTS.get(parts.scheme):
        netloc = netloc.removesuffix(f":{port}")
    return f"{parts.scheme}://{netloc}"


def _allowed_origins(value: str) -> tuple[str, ...]:
    # "*" spells the default, any origin, for operators who prefer to say it.
    if value == "*":
        return ()
    origins = tuple(_origin(item) for item in value.split(",") if item.strip())
    if not origins:
        raise ValueError("must list at least one origin")
    return origins


#: Spellings of a switch; anything else is a typo worth stopping for.
SWITCH_VALUES = {
    "on": True,
    "true": True,
    "1": True,
    "off": False,
    "false": False,
    "0": False,
}


def _switch(value: str) -> bool:
    try:
        return SWITCH_VALUES[value.lower()]
    except KeyError:
        raise ValueError("must be on or off") from None


def _host_list(value: str) -> frozenset[str]:
    """Comma-separated hosts, each as a browser writes it (``[::1]`` for IPv6)."""
    hosts = {entry.strip().lower() for entry in value.split(",") if entry.strip()}
    for host in hosts:
        try:
            written = ada_url.URL(f"https://{host}/").hostname
        except ValueError:
            written = None
        if written != host:
            raise ValueError(f"{host!r} is not a host name or address")
    return frozenset(hosts)


class ResourceServerEntry(NamedTuple):
    """One ``RESOURCE_SERVERS`` entry: who may introspect, and for which resources."""

    name: str
    #: SHA-256 of the secret; the secret itself is not kept.
    secret_hash: str
    #: Canonical URIs of the resources it is bound to; empty: the default one.
    resources: tuple[str, ...]


def _resource_servers(value: str) -> tuple[ResourceServerEntry, ...]:
    """``name:secret`` entries, each optionally followed by the URIs of the
    resources it is bound to, separated by spaces."""
    entries: dict[str, ResourceServerEntry] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        credentials, *uris = item.split()
        name, sep, secret = credentials.partition(":")
        if not sep or not name or not secret:
            raise ValueError("must be comma-separated name:secret entries")
        if len(secret) < MIN_SECRET_LENGTH // 2:
            raise ValueError(f"secret of {name} is shorter than 16 characters")
        if name in entries:
            raise ValueError(f"names {name} twice")
        try:
            resources = tuple(dict.fromkeys(canonical_resource_uri(u) for u in uris))
        except ValueError as exc:
            raise ValueError(f"a resource of {name} {exc}") from None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        entries[name] = ResourceServerEntry(name, digest, resources)
    if not entries:
        raise ValueError("must list at least one name:secret entry")
    return tuple(entries.values())


def _resource_uri(value: str) -> str:
    return canonical_resource_uri(value)


def _client_id_prefix(value: str) -> str:
    if not value or not value.replace("_", "").replace(".", "").isalnum():
        raise ValueError("must be letters, digits, '.' or '_'")
    return value


def _redirect_schemes(value: str) -> frozenset[str]:
    """A comma-separated list of private-use URI schemes (RFC 8252 §7.1)."""
    schemes = frozenset(s.strip().lower() for s in value.split(",") if s.strip())
    for scheme in sorted(schemes):
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
            raise ValueError(f"{scheme!r} is not a URI scheme (RFC 3986 §3.1)")
        if scheme in WEB_SCHEMES:
            raise ValueError(f"lists {scheme}, which is not a private-use scheme")
        if scheme_refused(scheme):
            raise ValueError(f"lists {scheme}, which is never accepted")
    if not schemes:
        raise ValueError("names no scheme")
    return schemes


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: str) -> str:
    if value.upper() not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
    return value.upper()


def setting(
    parse: Callable[[str], Any], default: Any = MISSING, *, secret: bool = False
) -> Any:
    """Declare a setting: its parser (raising ``ValueError``) and its default.

    No default means required. A secret stays out of the dataclass's ``repr``.
    """
    return field(default=default, repr=not secret, metadata={"parse": parse})


@dataclass(frozen=True)
class Settings:
    """Validated settings; field names are the environment variables, lowered."""

    database_url: str = setting(_database_url)
    redis_url: str = setting(_redis_url)
    secret_key: str = setting(_secret)
    issuer: str = setting(_issuer)
    #: Earlier values of ``secret_key``, still accepted while it is rotated:
    #: sessions signed and signing keys sealed under them stay readable.
    secret_key_fallbacks: tuple[str, ...] = setting(_secret_list, (), secret=True)
    #: HS256 key, set on purpose; unused when ``jwt_signing_key`` is set.
    jwt_secret: str | None = setting(_secret, None, secret=True)
    #: PEM private key (RSA, EC P-256 or Ed25519): RS256, ES256 or EdDSA.
    jwt_signing_key: str | None = setting(_signing_key, None, secret=True)
    #: PEM keys of retired (or upcoming) signing keys, still published and accepted.
    jwt_verify_keys: str | None = setting(_verify_keys, None)
    #: The algorithm of the keys the service makes itself (neither key set).
    signing_key_algorithm: str = setting(_generated_algorithm, "RS256")
    port: int = setting(_int(1, 65535), 8000)
    web_concurrency: int = setting(_int(1, 256), 2)
    trusted_proxy_hops: int = setting(_int(0, 10), 0)
    # Any whole number of seconds from 1, so tests and operators can watch expiry.
    access_token_ttl: int = setting(_int(1, 86400), 3600)
    auth_code_ttl: int = setting(_int(1, 600), 600)
    #: Lifetime of a device flow's codes (RFC 8628 §3.2 ``expires_in``), seconds.
    device_code_ttl: int = setting(_int(1, 1800), 600)
    #: Device codes requested per address at ``/device_authorization``.
    device_authorization_rate_limit: str = setting(_rate_limit, "30 per minute")
    #: Wrong user codes entered at ``/device``, per address and per account.
    user_code_rate_limit: str = setting(_rate_limit, "10 per 15 minutes")
    registration_rate_limit: str = setting(_rate_limit, "20 per hour")
    #: Clients registered from one address within the window; beyond: 403.
    max_clients_per_address: int = setting(_int(1, 10**9), 100)
    #: Clients registered from all addresses within the window (a flood guard).
    max_clients: int = setting(_int(1, 10**9), 100000)
    #: The window both caps count registrations in, seconds (a day).
    registration_cap_window: int = setting(_int(60, 366 * 86400), 86400)
    login_rate_limit: str = setting(_rate_limit, "10 per minute")
    client_id_prefix: str = setting(_client_id_prefix, "lessie")
    api_key_rate_limit: str = setting(_rate_limit, "60 per minute")
    #: Live keys a person makes on the account page; applications' keys apart.
    max_api_keys_per_user: int = setting(_int(1, 10000), 50)
    #: Live keys each application may hold for a person, made through /api-keys.
    api_key_max_per_app: int = setting(_int(1, 1000), 5)
    #: Longest lifetime, in days, of a key an application creates (docs/settings.md).
    api_key_max_days: int = setting(_int(1, 3650), 90)
    log_level: str = setting(_log_level, "INFO")
    #: Origins that may call ``/mcp`` (MCP transports, DNS rebinding); empty: any.
    allowed_origins: tuple[str, ...] = setting(_allowed_origins, ())

    #: Client ID Metadata Documents: URL client_ids fetched and cached.
    client_metadata_documents: bool = setting(_switch, True)
    cimd_allowed_hosts: frozenset[str] = setting(_host_list, frozenset())
    cimd_allow_loopback: bool = setting(_switch, False)
    #: Requests per source address that may make us fetch a document.
    cimd_fetch_rate_limit: str = setting(_rate_limit, "10 per minute")

    allowed_redirect_schemes: frozenset[str] | None = setting(_redirect_schemes, None)
    loopback_aliases: bool = setting(_switch, False)
    #: Off only for a provider whose rediss:// certificate nothing can verify.
    redis_tls_verify: bool = setting(_switch, True)

    @property
    def redis_client_url(self) -> str:
        """``REDIS_URL`` as the clients use it, with ``REDIS_TLS_VERIFY`` applied.

        Some add-ons (Heroku's Key-Value Store) manage ``REDIS_URL`` themselves
        and serve a self-signed certificate, so the URL cannot carry
        ``ssl_cert_reqs=none``; the setting adds it. The connection is still
        encrypted, but no longer proves who answers.
        """
        tls = self.redis_url.startswith("rediss://")
        if self.redis_tls_verify or not tls or "ssl_cert_reqs=" in self.redis_url:
            return self.redis_url
        separator = "&" if "?" in self.redis_url else "?"
        return f"{self.redis_url}{separator}ssl_cert_reqs=none"

    #: Issue refresh tokens to clients that register the grant (RFC 6749 §6).
    refresh_tokens: bool = setting(_switch, True)
    #: Absolute lifetime of one consent's refresh chain, seconds (30 days).
    refresh_token_ttl: int = setting(_int(1, 366 * 86400), 2592000)
    #: A refresh token unused this long dies, seconds (14 days).
    refresh_token_idle_ttl: int = setting(_int(1, 366 * 86400), 1209600)
    #: Seconds after a rotation in which the old token still gets the successor.
    refresh_grace_seconds: int = setting(_int(0, 3600), 30)
    #: Resource servers allowed at ``/introspect``, with their resources.
    resource_servers: tuple[ResourceServerEntry, ...] = setting(_resource_servers, ())
    #: The registered resource of a request that names none; unset: ``/mcp``.
    default_resource: str | None = setting(_resource_uri, None)
    #: ``/auth/verify`` believes the proxy's X-MCP-Resource and X-Forwarded-*
    #: (every proxy check sets them); off: every check is for ``/mcp``.
    verify_resource_headers: bool = setting(_switch, False)

    #: Identity providers people may sign in with, each from its ``N_*``
    #: variables (``load_settings`` reads them once the names are known).
    sign_in_providers: tuple[ProviderSettings, ...] = setting(provider_names, ())
    #: The email and password form on the sign-in page.
    password_sign_in: bool = setting(_switch, True)

    @property
    def managed_keys(self) -> bool:
        """Neither key is configured: the service makes and keeps its own
        signing keys (app/signing_keys.py)."""
        return not self.jwt_signing_key and not self.jwt_secret

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from ``environ``; raise :class:`ConfigError`."""
    values: dict[str, Any] = {}
    for declared in fields(Settings):
        name = declared.name.upper()
        raw = environ.get(name, "").strip()
        if not raw:
            if declared.default is MISSING:
                raise ConfigError(name, "is required but not set")
            continue
        try:
            values[declared.name] = declared.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(name, f"is malformed: {exc}") from None
    _check_token_keys(values)
    _read_providers(values, environ)
    return Settings(**values)


def _read_providers(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    try:
        providers = load_providers(values.get("sign_in_providers", ()), environ)
    except ProviderSettingError as exc:
        raise ConfigError(exc.name, exc.problem) from None
    values["sign_in_providers"] = providers
    # Nobody could sign in at all: surely not what was meant.
    if not providers and values.get("password_sign_in") is False:
        raise ConfigError(
            "PASSWORD_SIGN_IN", "is off but SIGN_IN_PROVIDERS names no provider"
        )


def _check_token_keys(values: dict[str, Any]) -> None:
    # docs/settings.md: JWT_SIGNING_KEY, else HS256 under JWT_SECRET, else
    # keys the service makes itself.
    if values.get("jwt_verify_keys") and not values.get("jwt_signing_key"):
        raise ConfigError("JWT_VERIFY_KEYS", "is set but JWT_SIGNING_KEY is not")


def current_settings() -> Settings:
    """The settings of the app handling the current request or command."""
    return current_app.config["SETTINGS"]


def settings_from_environment(overrides: Mapping[str, str] | None = None) -> Settings:
    """Load settings from ``os.environ``, with ``overrides`` layered on top."""
    import os

    return load_settings({**os.environ, **(overrides or {})})
