"""Read and validate the service's settings; the only reader of ``os.environ``."""

from __future__ import annotations

import hashlib
import ipaddress
import os.path
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any
from urllib.parse import parse_qs, urlsplit

from limits import parse_many
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

#: Hosts for which an ``http`` issuer is acceptable (development and tests).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

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


def is_loopback_host(host: str | None) -> bool:
    """Tell whether ``host`` (as ``urlsplit().hostname`` gives it) is loopback."""
    if not host:
        return False
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _switch(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be on or off")


def _resource_servers(value: str) -> tuple[tuple[str, str], ...]:
    """``name:secret`` pairs; each secret is kept only as its SHA-256."""
    pairs: dict[str, str] = {}
    for item in value.split(","):
        name, sep, secret = item.strip().partition(":")
        if not item.strip():
            continue
        if not sep or not name or not secret:
            raise ValueError("must be comma-separated name:secret pairs")
        if len(secret) < MIN_SECRET_LENGTH // 2:
            raise ValueError(f"secret of {name} is shorter than 16 characters")
        if name in pairs:
            raise ValueError(f"names {name} twice")
        pairs[name] = hashlib.sha256(secret.encode()).hexdigest()
    if not pairs:
        raise ValueError("must list at least one name:secret pair")
    return tuple(pairs.items())


def _client_id_prefix(value: str) -> str:
    if not value or not value.replace("_", "").replace(".", "").isalnum():
        raise ValueError("must be letters, digits, '.' or '_'")
    return value


@dataclass(frozen=True)
class Settings:
    """Validated settings; field names are the environment variables, lowered."""

    database_url: str
    redis_url: str
    secret_key: str
    jwt_secret: str
    issuer: str
    port: int = 8000
    web_concurrency: int = 2
    trusted_proxy_hops: int = 0
    access_token_ttl: int = 3600
    auth_code_ttl: int = 600
    registration_rate_limit: str = "20 per hour"
    max_clients_per_address: int = 100
    max_clients: int = 100000
    login_rate_limit: str = "10 per minute"
    client_id_prefix: str = "lessie"
    api_key_rate_limit: str = "60 per minute"
    max_api_keys_per_user: int = 50
    #: Longest lifetime, in days, of a key an application creates (CONTRACT §7).
    api_key_max_days: int = 90
    log_level: str = "INFO"
    #: Origins that may call ``/mcp`` (MCP transports, DNS rebinding); empty: any.
    allowed_origins: tuple[str, ...] = ()
    #: Issue refresh tokens to clients that register the grant (CONTRACT §10).
    refresh_tokens: bool = True
    #: Absolute lifetime of one consent's refresh chain, seconds (30 days).
    refresh_token_ttl: int = 2592000
    #: A refresh token unused this long dies, seconds (14 days).
    refresh_token_idle_ttl: int = 1209600
    #: Seconds after a rotation in which the old token still gets the successor.
    refresh_grace_seconds: int = 30
    #: Resource servers allowed at ``/introspect``: (name, SHA-256 of secret).
    resource_servers: tuple[tuple[str, str], ...] = ()

    @property
    def mcp_resource(self) -> str:
        """The RFC 8707 resource indicator of the ``/mcp`` endpoint."""
        return self.issuer + "/mcp"

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")


#: How each variable is parsed; a parser raises ``ValueError`` on bad input.
PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _database_url,
    "redis_url": _redis_url,
    "secret_key": _secret,
    "jwt_secret": _secret,
    "issuer": _issuer,
    "port": _int(1, 65535),
    "web_concurrency": _int(1, 256),
    "trusted_proxy_hops": _int(0, 10),
    # CONTRACT §9: any whole number of seconds from 1, so expiry can be watched.
    "access_token_ttl": _int(1, 86400),
    "auth_code_ttl": _int(1, 600),
    "registration_rate_limit": _rate_limit,
    "max_clients_per_address": _int(1, 10**9),
    "max_clients": _int(1, 10**9),
    "login_rate_limit": _rate_limit,
    "client_id_prefix": _client_id_prefix,
    "api_key_rate_limit": _rate_limit,
    "max_api_keys_per_user": _int(1, 10000),
    "api_key_max_days": _int(1, 3650),
    "log_level": lambda v: v.upper() if v.upper() in _LOG_LEVELS else _bad_level(),
    "allowed_origins": _allowed_origins,
    "refresh_tokens": _switch,
    "refresh_token_ttl": _int(1, 366 * 86400),
    "refresh_token_idle_ttl": _int(1, 366 * 86400),
    "refresh_grace_seconds": _int(0, 3600),
    "resource_servers": _resource_servers,
}

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _bad_level() -> str:
    raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from ``environ``; raise :class:`ConfigError`."""
    values: dict[str, Any] = {}
    for field in fields(Settings):
        name = field.name.upper()
        raw = environ.get(name, "").strip()
        if not raw:
            if field.default is MISSING:
                raise ConfigError(name, "is required but not set")
            continue
        try:
            values[field.name] = PARSERS[field.name](raw)
        except ValueError as exc:
            raise ConfigError(name, f"is malformed: {exc}") from None
    return Settings(**values)


def current_settings() -> Settings:
    """The settings of the app handling the current request or command."""
    from flask import current_app

    return current_app.config["SETTINGS"]


def settings_from_environment(overrides: Mapping[str, str] | None = None) -> Settings:
    """Load settings from ``os.environ``, with ``overrides`` layered on top."""
    import os

    return load_settings({**os.environ, **(overrides or {})})
