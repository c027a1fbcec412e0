"""``BENCH_SCALE``: ``make bench`` against a database the size of a large deployment.

``BENCH_SCALE=large`` fills the bench's database, once migrated and before
anything is measured, the way a deployment looks after a year of open
registration: a million registered clients from many addresses (mostly
public ones, a few offices, NATs and CI runners registering thousands), a
hundred thousand people, a million consents (most withdrawn, each client's
later approvals after its earlier ones), two million refresh-token rows in
chains of realistic length (one head a chain, most rotated out or expired),
two hundred thousand API keys (some revoked or expired), service clients,
metadata-document clients, denied tokens and spent assertions. A few people
have a full account page (500 live consents, 50 keys, 5 service clients),
and a few chains are 1,200 tokens long. ``medium`` is a tenth of it (the
same shape, filled in seconds), ``tiny`` a test's; unset (or ``empty``)
fills nothing.

Everything is made by Postgres itself (``INSERT … SELECT generate_series``)
in one transaction, with every constraint, foreign key and index in place,
and the hashed columns in the formats the app writes (SHA-256 hex of a
secret, one argon2 hash for every password); then ``VACUUM ANALYZE``.

``python tools/bench_scale.py fill DATABASE_URL [SCALE]`` fills a migrated
database outside the bench (to keep one around while developing).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

#: The environment variable naming the scale.
SCALE_VARIABLE = "BENCH_SCALE"
#: The app's own constants, written here as the rows it makes hold them.
DOCUMENT_SOURCE = "client-id-metadata-document"
SERVICE_SOURCE = "service-client"
CLIENT_ID_PREFIX = "lessie"
API_KEY_PREFIX = "lsk_"
#: The length of ``refresh_seal.seal``'s text for a rotation signed with
#: HS256, as the bench's app signs: base64url of a 12-byte nonce, the JSON
#: (refresh token, a 485-character access token, scope, expiry) and the
#: 16-byte tag. (RS256 with a ``kid``, a default deploy's, is about 1,340.)
SEALED_LENGTH = 852
#: REFRESH_TOKEN_TTL's default: a chain ends 30 days after its first token.
CHAIN_DAYS = 30
#: Registered resources besides the built-in ``/mcp`` (a team's MCP servers).
RESOURCES = (
    ("https://notes.example.com/mcp", "Notes"),
    ("https://search.example.com/mcp", "Search"),
)


@dataclass(frozen=True)
class Scale:
    """How many rows of each kind a fill makes."""

    name: str
    users: int
    #: Registered through ``POST /register``.
    clients: int
    #: Of them, those a person approved (the rest were never used).
    authorized: int
    consents: int
    refresh_tokens: int
    api_keys: int
    service_clients: int
    document_clients: int
    denied_tokens: int
    spent_assertions: int
    #: Addresses registering a share of all clients: CI runners, big NATs.
    heavy_addresses: int
    #: Offices and smaller NATs, about 100 clients each at ``large``.
    office_addresses: int
    #: Everyone else registers from one of this many addresses.
    other_addresses: int
    #: People with a full account page.
    heavy_users: int
    heavy_consents: int
    heavy_keys: int
    heavy_services: int
    #: Chains of ``long_chain`` tokens, rotated every 30 minutes, still live.
    long_chains: int
    long_chain: int
    #: The longest of the other chains (the tail of their lengths).
    tail_chain: int = 400


LARGE = Scale(
    "large",
    users=100_000,
    clients=1_000_000,
    authorized=300_000,
    consents=1_000_000,
    refresh_tokens=2_000_000,
    api_keys=200_000,
    service_clients=10_000,
    document_clients=10_000,
    denied_tokens=5_000,
    spent_assertions=1_000,
    heavy_addresses=5,
    office_addresses=500,
    other_addresses=400_000,
    heavy_users=10,
    heavy_consents=500,
    heavy_keys=50,
    heavy_services=5,
    long_chains=20,
    long_chain=1_200,
)
MEDIUM = Scale(
    "medium",
    users=10_000,
    clients=100_000,
    authorized=30_000,
    consents=100_000,
    refresh_tokens=200_000,
    api_keys=20_000,
    service_clients=1_000,
    document_clients=1_000,
    denied_tokens=500,
    spent_assertions=100,
    heavy_addresses=5,
    office_addresses=50,
    other_addresses=40_000,
    heavy_users=5,
    heavy_consents=500,
    heavy_keys=50,
    heavy_services=5,
    long_chains=5,
    long_chain=1_200,
)
TINY = Scale(
    "tiny",
    users=50,
    clients=300,
    authorized=90,
    consents=300,
    refresh_tokens=600,
    api_keys=60,
    service_clients=10,
    document_clients=5,
    denied_tokens=10,
    spent_assertions=4,
    heavy_addresses=2,
    office_addresses=5,
    other_addresses=200,
    heavy_users=1,
    heavy_consents=20,
    heavy_keys=5,
    heavy_services=2,
    long_chains=1,
    long_chain=60,
    tail_chain=40,
)
SCALES = {scale.name: scale for scale in (LARGE, MEDIUM, TINY)}


def from_environment() -> Scale | None:
    """The scale ``BENCH_SCALE`` names; ``None`` when unset or ``empty``."""
    name = os.environ.get(SCALE_VARIABLE, "").strip().lower()
    if name in ("", "empty"):
        return None
    if name not in SCALES:
        choices = ", ".join(["empty", *SCALES])
        raise SystemExit(f"{SCALE_VARIABLE}={name!r}: choose one of {choices}")
    return SCALES[name]


def check(scale: Scale) -> None:
    """Refuse counts the fill cannot honour (each is a bug in a Scale)."""
    problems = []
    if scale.authorized > scale.clients or scale.authorized > scale.consents:
        problems.append("more authorized clients than clients or consents")
    if scale.heavy_users * scale.heavy_consents > scale.authorized:
        problems.append("the heavy users' consents need more authorized clients")
    if scale.heavy_users >= scale.users:
        problems.append("every person is a heavy one")
    if scale.heavy_users * scale.heavy_keys > scale.api_keys:
        problems.append("the heavy users' keys are more than all keys")
    if scale.heavy_users * scale.heavy_services > scale.service_clients:
        problems.append("the heavy users' service clients are more than all")
    if scale.long_chains * scale.long_chain > scale.refresh_tokens:
        problems.append("the long chains are more than all refresh tokens")
    if scale.long_chains > scale.heavy_consents:
        problems.append("the long chains need a heavy user's consent each")
    if scale.long_chain > CHAIN_DAYS * 48 - 48:
        problems.append("a long chain outlasts its 30 days at 30 minutes a rotation")
    if not 36 < scale.tail_chain < min(scale.long_chain, CHAIN_DAYS * 24 - 24):
        problems.append("the tail of chains reaches the long ones, or 30 days hourly")
    if problems:
        raise ValueError(f"scale {scale.name}: " + "; ".join(problems))


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int
    #: Bytes: the table with its TOAST, its indexes.
    table_bytes: int
    index_bytes: int


@dataclass(frozen=True)
class Filled:
    scale: Scale
    fill_seconds: float
    vacuum_seconds: float
    tables: list[TableSize]


@dataclass(frozen=True)
class Landmarks:
    """What the housekeeping EXPLAINs look at (tools/bench_housekeeping.py)."""

    #: The person whose live refresh chain has lasted longest, and its consent.
    heavy_user_id: str
    long_chain_consent_id: str
    long_chain: int
    #: Its first token, from which reuse detection walks to the head.
    long_chain_first_id: str
    #: The address that registered the most clients.
    heavy_address: str


def landmarks(database_url: str) -> Landmarks:
    """Find them in a filled database: the longest live chain, its person
    (at these scales, one with a full account page), and the address of
    the most registrations."""
    with psycopg.connect(psycopg_url(database_url)) as conn:
        chain = conn.execute(
            "SELECT consent_id, min(user_id::text), chain_expires_at"
            " FROM refresh_tokens"
            " WHERE chain_expires_at > now() AND (consent_id, chain_expires_at) IN ("
            "  SELECT consent_id, chain_expires_at FROM refresh_tokens"
            "  WHERE rotated_at IS NULL AND revoked_at IS NULL)"
            " GROUP BY consent_id, chain_expires_at ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        address = conn.execute(
            "SELECT registered_from FROM oauth_clients"
            f" WHERE registered_from NOT IN ('{DOCUMENT_SOURCE}', '{SERVICE_SOURCE}')"
            " GROUP BY registered_from ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        if chain is None or address is None:
            raise SystemExit("the database holds no live refresh chain, or no client")
        first = conn.execute(
            "SELECT count(*), min(id::text) FILTER (WHERE parent_id IS NULL)"
            " FROM refresh_tokens WHERE consent_id = %s AND chain_expires_at = %s",
            (chain[0], chain[2]),
        ).fetchone()
    assert first is not None
    return Landmarks(str(chain[1]), str(chain[0]), first[0], first[1], address[0])


def _literal(value: str) -> str:
    """A SQL string literal of text we made (hex, ISO times, known names)."""
    return "'" + value.replace("'", "''") + "'"


class _Names:
    """SQL expressions naming the fill's rows by their number.

    Ids and hashes are digests of a per-fill salt, a kind and the row's
    number, so that any statement can name the row another one made
    without joining to it: a consent's chains name their consent, a chain's
    token names its parent.
    """

    def __init__(self, salt: str) -> None:
        self.salt = _literal(salt)

    def digest(self, kind: str, n: str) -> str:
        return f"({self.salt} || '{kind}' || ({n})::text)"

    def uuid(self, kind: str, n: str) -> str:
        return f"md5({self.digest(kind, n)})::uuid"

    def sha256(self, kind: str, n: str, encoding: str) -> str:
        return (
            f"encode(sha256(convert_to({self.digest(kind, n)}, 'UTF8')), '{encoding}')"
        )

    def sha256_hex(self, kind: str, n: str) -> str:
        """As the app stores a secret: SHA-256, in hex."""
        return self.sha256(kind, n, "hex")

    def urlsafe(self, kind: str, n: str, length: int) -> str:
        """Like ``secrets.token_urlsafe``: base64url characters."""
        raw = self.sha256(kind, n, "base64")
        return f"translate(substr({raw}, 1, {length}), '+/', '-_')"

    def unit(self, kind: str, n: str) -> str:
        """A number in [0, 1) drawn from the row's number: the same in every
        statement that asks."""
        bits = f"('x' || substr(md5({self.digest(kind, n)}), 1, 8))::bit(32)"
        return f"({bits}::bigint / 4294967296.0)"

    def user(self, n: str) -> str:
        return self.uuid("u", n)

    def client(self, m: str) -> str:
        return f"'{CLIENT_ID_PREFIX}-' || {self.urlsafe('c', m, 24)}"

    def service_client(self, n: str) -> str:
        return f"'{CLIENT_ID_PREFIX}-' || {self.urlsafe('s', n, 24)}"

    def consent(self, i: str) -> str:
        return self.uuid("k", i)

    def token(self, chain: str, k: str) -> str:
        return self.uuid("t", f"{chain} || ':' || {k}")


#: The names MCP clients register under, and where each wants its codes.
CLIENT_NAMES = (
    ("Claude", "https://claude.ai/api/mcp/auth_callback"),
    ("Claude Code", "http://localhost:{port}/callback"),
    ("Cursor", "cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback"),
    ("Visual Studio Code", "http://127.0.0.1:{port}/"),
    ("MCP Inspector", "http://localhost:6274/oauth/callback"),
    ("Windsurf", "windsurf://codeium.windsurf/mcp/callback"),
    ("Zed", "http://127.0.0.1:{port}/mcp/oauth/callback"),
    ("Goose", "http://localhost:{port}/oauth_callback"),
    ("Cline", "vscode://saoudrizwan.claude-dev/mcp-auth/callback"),
    ("ChatGPT", "https://chatgpt.com/connector_platform_oauth_redirect"),
    ("mcp-remote", "http://localhost:{port}/oauth/callback"),
    ("LibreChat", "https://chat.example.org/api/mcp/oauth/callback"),
)


def _sql_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(_literal(v) for v in values) + "]"


def _address(names: _Names, kind: str, n: str) -> str:
    """A public address, as ``client_address`` records it: IPv4, or an
    IPv6 /64 (every fifth), both in their canonical text."""
    b = f"decode(md5({names.digest('a' + kind, n)}), 'hex')"

    def byte(i: int) -> str:
        return f"get_byte({b}, {i})"

    v4 = (
        f"(11 + {byte(0)} % 80)::text || '.' || {byte(1)} || '.' || {byte(2)}"
        f" || '.' || (1 + {byte(3)} % 254)"
    )

    def group(i: int) -> str:
        return f"to_hex(1 + ({byte(i)} * 256 + {byte(i + 1)}) % 65534)"

    v6 = (
        f"'2a0' || (1 + {byte(5)} % 9) || ':' || {group(6)} || ':' || {group(8)}"
        f" || ':' || {group(10)} || '::/64'"
    )
    return f"CASE WHEN {byte(4)} % 5 = 0 THEN {v6} ELSE {v4} END"


def statements(
    scale: Scale, salt: str, now: datetime, builtin: str, password_hash: str
) -> Iterator[tuple[str, str]]:
    """The fill's statements, each with what it makes, in the order to run them."""
    check(scale)
    s = scale
    names = _Names(salt)
    now_sql = f"{_literal(now.isoformat())}::timestamptz"
    resources = [builtin, *(uri for uri, _ in RESOURCES)]
    heavy_clients = s.heavy_users * s.heavy_consents

    # Plans first: each consent's client, person, times and chains, so that
    # every row can be made once, after what it refers to.
    yield (
        "plan of the consents",
        f"""
        CREATE TEMP TABLE plan_consents ON COMMIT DROP AS
        SELECT i, m, g, gens, g = gens - 1 AS newest,
               CASE WHEN m < {heavy_clients} THEN m / {s.heavy_consents}
                    ELSE {s.heavy_users} + floor({names.unit("o", "m")}
                                                 * {s.users - s.heavy_users})::int
               END AS user_n,
               CASE WHEN m % 10 = 5 THEN {_literal(resources[1])}
                    WHEN m % 10 = 7 THEN {_literal(resources[2])}
                    ELSE {_literal(resources[0])} END AS resource,
               CASE WHEN random() < 0.7 THEN 'read write' ELSE 'read' END AS scope,
               random() AS r_live, random() AS r_chains, random() AS r_jitter
        FROM (
          SELECT i, i % {s.authorized} AS m, i / {s.authorized} AS g,
                 ({s.consents} - 1 - i % {s.authorized}) / {s.authorized} + 1 AS gens
          FROM generate_series(0, {s.consents - 1}) AS i
        ) AS numbered
        """,
    )
    # A client's newest consent is live (always a heavy user's), its earlier
    # ones were withdrawn, 90 days apart; a live one was last used recently
    # more often than not. ``slot_end``: withdrawn then, or last used then.
    yield (
        "consents' lives",
        f"""
        ALTER TABLE plan_consents
          ADD COLUMN live boolean, ADD COLUMN long boolean,
          ADD COLUMN slot_end timestamptz, ADD COLUMN chains int,
          ADD COLUMN approved_at timestamptz, ADD COLUMN last_code timestamptz;
        UPDATE plan_consents SET
          live = newest AND (m < {heavy_clients} OR r_live < 0.9),
          long = newest AND m < {s.long_chains},
          slot_end = {now_sql} - interval '90 days' * (gens - 1 - g)
            - CASE WHEN m < {s.long_chains} THEN interval '10 minutes'
                   WHEN newest AND (m < {heavy_clients} OR r_live < 0.9)
                     THEN interval '60 days' * power(r_jitter, 3)
                   ELSE interval '60 days' * r_jitter END,
          chains = CASE WHEN m < {s.long_chains} AND newest THEN 1
                        WHEN r_chains < 0.15 THEN 2
                        WHEN r_chains < 0.85 THEN 1 ELSE 0 END;
        ANALYZE plan_consents
        """,
    )
    # Chains of a consent: the newest one's head just before ``slot_end``,
    # an earlier one's a month before. Lengths: mostly short (a session
    # refreshed a few times), a long tail; rotated hourly (the long ones
    # every 30 minutes). About three times the tokens wanted are drawn, and
    # chains kept in a random order (the long ones first) until the count
    # is reached: about a third of the consents keep one, and the last chain
    # kept is cut to fit (or, should a small scale draw too few, made up).
    yield (
        "plan of the refresh chains",
        f"""
        CREATE TEMP TABLE plan_chains ON COMMIT DROP AS
        WITH chains AS (
          SELECT p.i, j, p.long, p.slot_end,
                 CASE WHEN p.long THEN {s.long_chain}
                      WHEN r < 0.45 THEN 1
                      WHEN r < 0.75 THEN 2 + floor(random() * 3)::int
                      WHEN r < 0.92 THEN 5 + floor(random() * 8)::int
                      WHEN r < 0.995 THEN 13 + floor(random() * 24)::int
                      ELSE 37 + floor(random() * {s.tail_chain - 36})::int
                 END AS wanted,
                 random() AS r_order
          FROM plan_consents AS p
          CROSS JOIN LATERAL generate_series(0, p.chains - 1) AS j
          CROSS JOIN LATERAL (SELECT random() + j * 0 AS r) AS draw
        ), ordered AS (
          SELECT *, sum(wanted) OVER (ORDER BY long DESC, r_order
                                      ROWS UNBOUNDED PRECEDING) - wanted AS before,
                 row_number() OVER (ORDER BY long, r_order DESC) = 1 AS last
          FROM chains
        )
        SELECT row_number() OVER () AS c, i, j, long,
               CASE WHEN last THEN {s.refresh_tokens} - before
                    ELSE least(wanted, {s.refresh_tokens} - before) END::int AS len,
               CASE WHEN long THEN interval '30 minutes' ELSE interval '1 hour' END
                 AS step,
               slot_end - interval '31 days' * j
                 - interval '1 minute' * (1 + floor(random() * 600)) AS head_at
        FROM ordered WHERE before < {s.refresh_tokens};
        ALTER TABLE plan_chains ADD COLUMN start_at timestamptz;
        UPDATE plan_chains SET start_at = head_at - step * (len - 1);
        ANALYZE plan_chains
        """,
    )
    yield (
        "approvals and codes",
        """
        UPDATE plan_consents
        SET approved_at = slot_end - interval '20 days' * random()
                          - interval '1 minute';
        UPDATE plan_consents AS p
        SET approved_at = c.first - interval '2 minutes', last_code = c.last
        FROM (SELECT i, min(start_at) AS first, max(start_at) AS last
              FROM plan_chains GROUP BY i) AS c
        WHERE p.i = c.i;
        CREATE TEMP TABLE plan_clients ON COMMIT DROP AS
        SELECT m, min(approved_at) AS first_approved,
               greatest(max(last_code), max(approved_at)) AS last_code
        FROM plan_consents GROUP BY m;
        CREATE UNIQUE INDEX ON plan_clients (m);
        CREATE TEMP TABLE plan_users ON COMMIT DROP AS
        SELECT user_n, min(approved_at) AS first_approved
        FROM plan_consents GROUP BY user_n;
        CREATE UNIQUE INDEX ON plan_users (user_n);
        ANALYZE plan_consents, plan_clients, plan_users
        """,
    )
    # People: most sign in with a password, every tenth only through an
    # identity provider; one in a hundred disabled (and cut off).
    domains = _sql_array(
        ["example.com", "example.org", "example.net", "mail.example", "corp.example"]
    )
    yield (
        "users",
        f"""
        INSERT INTO users (id, email, password_hash, is_active, created_at,
                           tokens_cut_off_at)
        SELECT {names.user("n")},
               'person' || n || '@' || ({domains})[n % 5 + 1],
               CASE WHEN n % 10 = 9 THEN NULL ELSE {_literal(password_hash)} END,
               n % 100 <> 42, created,
               CASE WHEN n % 100 = 42
                    THEN created + ({now_sql} - created) * random() END
        FROM (
          SELECT n, least({now_sql} - interval '365 days' * random(),
                          pu.first_approved - interval '1 day' * random()
                          - interval '1 minute') AS created
          FROM generate_series(0, {s.users - 1}) AS n
          LEFT JOIN plan_users AS pu ON pu.user_n = n
        ) AS people
        """,
    )
    yield (
        "identities",
        f"""
        INSERT INTO identities (id, user_id, issuer, subject, email, last_used_at,
                                created_at)
        SELECT {names.uuid("i", "u.n")}, {names.user("u.n")},
               CASE WHEN u.n % 20 < 10 THEN 'https://accounts.google.com'
                    ELSE 'https://login.microsoftonline.com/'
                         || '9188040d-6c67-4c5b-b112-36a304b66dad/v2.0' END,
               (100000000000000000000 + u.n)::text,
               users.email,
               users.created_at + ({now_sql} - users.created_at) * random(),
               users.created_at
        FROM generate_series(0, {s.users - 1}) AS u(n)
        JOIN users ON users.id = {names.user("u.n")}
        WHERE u.n % 10 >= 8
        """,
    )
    yield (
        "resources",
        """
        INSERT INTO resources (uri, name, scopes, access_token_ttl, created_at)
        VALUES """
        + ", ".join(
            f"({_literal(uri)}, {_literal(name)},"
            """ '[{"name": "read", "description": "Read", "description_zh": null},"""
            """ {"name": "write", "description": "Write", "description_zh": null}]',"""
            f" NULL, {now_sql} - interval '400 days')"
            for uri, name in RESOURCES
        )
        + " ON CONFLICT DO NOTHING",
    )
    client_names = _sql_array([name for name, _ in CLIENT_NAMES])
    redirects = _sql_array([uri for _, uri in CLIENT_NAMES])
    heavy_share, office_share = 2, 5  # percent of the registered clients
    others = s.other_addresses
    yield (
        "registered clients",
        f"""
        INSERT INTO oauth_clients (
          client_id, client_secret_hash, client_name, redirect_uris, grant_types,
          response_types, token_endpoint_auth_method, scope, registered_from,
          last_authorized_at, created_at, jwks_uri, revoked_at)
        SELECT {names.client("m")},
               CASE WHEN method LIKE 'client_secret%'
                    THEN {names.sha256_hex("cs", "m")} END,
               ({client_names})[kind], ARRAY[replace(({redirects})[kind], '{{port}}',
                                             (1024 + m % 60000)::text)],
               '{{authorization_code,refresh_token}}', '{{code}}', method,
               CASE WHEN r_scope < 0.7 THEN '' ELSE 'read write' END,
               CASE WHEN m % 100 < {heavy_share}
                      THEN {_address(names, "h", f"m % {s.heavy_addresses}")}
                    WHEN m % 100 < {heavy_share + office_share}
                      THEN {_address(names, "o", f"m % {s.office_addresses}")}
                    ELSE {_address(names, "p", f"floor(r_address * {others})")}
               END,
               CASE WHEN last_code IS NOT NULL THEN date_trunc('day', last_code)
                    WHEN r_used < 0.05 THEN date_trunc(
                      'day', created + ({now_sql} - created) * r_used * 20)
               END,
               created,
               CASE WHEN method = 'private_key_jwt'
                    THEN 'https://agent' || m || '.example.com/jwks.json' END,
               CASE WHEN last_code IS NULL AND r_used > 0.999
                    THEN created + ({now_sql} - created) * random() END
        FROM (
          SELECT m, 1 + floor(random() * {len(CLIENT_NAMES)})::int AS kind,
                 CASE WHEN r_method < 0.85 THEN 'none'
                      WHEN r_method < 0.97 THEN 'client_secret_basic'
                      WHEN r_method < 0.99 THEN 'client_secret_post'
                      ELSE 'private_key_jwt' END AS method,
                 random() AS r_scope, random() AS r_address, random() AS r_used,
                 pc.last_code,
                 coalesce(pc.first_approved - interval '3 days' * random()
                          - interval '1 minute',
                          {now_sql} - interval '365 days' * random()) AS created
          FROM generate_series(0, {s.clients - 1}) AS m
          CROSS JOIN LATERAL (SELECT random() + m * 0 AS r_method) AS draw
          LEFT JOIN plan_clients AS pc USING (m)
        ) AS clients
        """,
    )
    # The total registration cap's count of them, as migration 0015 carries
    # a deployment's over: hourly steps of the last year.
    yield (
        "registration counts",
        f"""
        INSERT INTO registration_counts (starts_at, registrations, expires_at)
        SELECT date_trunc('hour', created_at), count(*),
               date_trunc('hour', created_at) + interval '1 hour' + interval '366 days'
        FROM oauth_clients
        WHERE created_at > {now_sql} - interval '366 days'
        GROUP BY 1
        """,
    )
    yield (
        "metadata-document clients",
        f"""
        INSERT INTO oauth_clients (
          client_id, client_secret_hash, client_name, redirect_uris, grant_types,
          response_types, token_endpoint_auth_method, scope, registered_from,
          last_authorized_at, created_at)
        SELECT 'https://app' || n || '.example.net/oauth/client-metadata.json', NULL,
               'App ' || n, ARRAY['https://app' || n || '.example.net/callback'],
               '{{authorization_code,refresh_token}}', '{{code}}', 'none', '',
               {_literal(DOCUMENT_SOURCE)},
               date_trunc('day', created + ({now_sql} - created) * random()), created
        FROM (SELECT n, {now_sql} - interval '365 days' * random() AS created
              FROM generate_series(0, {s.document_clients - 1}) AS n) AS documents
        """,
    )
    # Service clients: the heavy users' first, then people's and operators'.
    heavy_services = s.heavy_users * s.heavy_services
    yield (
        "service clients",
        f"""
        INSERT INTO oauth_clients (
          client_id, client_secret_hash, client_name, redirect_uris, grant_types,
          response_types, token_endpoint_auth_method, scope, registered_from,
          created_at, jwks_uri, service_resource, owner_id, acts_for_owner,
          last_used_at, revoked_at)
        SELECT {names.service_client("n")},
               CASE WHEN n % 10 <> 0 THEN {names.sha256_hex("ss", "n")} END,
               'CI job ' || n, '{{}}', '{{client_credentials}}', '{{}}',
               CASE WHEN n % 10 = 0 THEN 'private_key_jwt'
                    ELSE 'client_secret_basic' END,
               'read write', {_literal(SERVICE_SOURCE)}, created,
               CASE WHEN n % 10 = 0 THEN 'https://ci' || n || '.example.com/jwks' END,
               CASE WHEN n % 7 = 3 THEN {_literal(resources[1])}
                    ELSE {_literal(resources[0])} END,
               owner, owner IS NOT NULL AND n % 3 = 0,
               CASE WHEN random() < 0.6
                    THEN created + ({now_sql} - created) * random() END,
               CASE WHEN n >= {heavy_services} AND n % 10 = 7
                    THEN created + ({now_sql} - created) * random() END
        FROM (
          SELECT n, users.id AS owner,
                 coalesce(users.created_at, {now_sql} - interval '365 days')
                   + ({now_sql} - coalesce(users.created_at,
                                           {now_sql} - interval '365 days'))
                   * random() AS created
          FROM generate_series(0, {s.service_clients - 1}) AS n
          LEFT JOIN users ON users.id = CASE
            WHEN n < {heavy_services} THEN {names.user(f"n / {s.heavy_services}")}
            WHEN n % 5 = 0 THEN NULL
            ELSE {names.user(f"{s.heavy_users} + n * 7919 % {s.users - s.heavy_users}")}
          END
        ) AS services
        """,
    )
    yield (
        "consents",
        f"""
        INSERT INTO consents (id, user_id, client_id, scope, resource, approved_at,
                              revoked_at, created_at)
        SELECT {names.consent("i")}, {names.user("user_n")}, {names.client("m")},
               scope, resource, approved_at,
               CASE WHEN live THEN NULL ELSE slot_end END, approved_at
        FROM plan_consents
        """,
    )
    # Each chain's tokens: the first with its code's jti, each later one
    # naming its parent and sealing its rotation's answer; all rotated out
    # but the head, which withdrawing the consent marked revoked.
    seal_digest = names.digest("z", "c.c || ':' || k")
    sealed = f"rpad('', {SEALED_LENGTH}, md5({seal_digest}))"
    yield (
        "refresh tokens",
        f"""
        INSERT INTO refresh_tokens (
          id, token_hash, consent_id, client_id, user_id, scope, resource, parent_id,
          code_jti, sealed, issued_at, chain_expires_at, last_used_at, rotated_at,
          revoked_at)
        SELECT {names.token("c.c", "k")},
               {names.sha256_hex("r", "c.c || ':' || k")},
               {names.consent("p.i")}, {names.client("p.m")}, {names.user("p.user_n")},
               p.scope, p.resource,
               CASE WHEN k > 0 THEN {names.token("c.c", "k - 1")} END,
               CASE WHEN k = 0 THEN {names.urlsafe("j", "c.c", 22)} END,
               CASE WHEN k > 0 THEN {sealed} END,
               c.start_at + c.step * k,
               c.start_at + interval '{CHAIN_DAYS} days',
               CASE WHEN k < c.len - 1 THEN c.start_at + c.step * (k + 1) END,
               CASE WHEN k < c.len - 1 THEN c.start_at + c.step * (k + 1) END,
               CASE WHEN k = c.len - 1 AND NOT p.live THEN p.slot_end END
        FROM plan_chains AS c
        JOIN plan_consents AS p USING (i)
        CROSS JOIN LATERAL generate_series(0, c.len - 1) AS k
        """,
    )
    # Keys: the heavy users' own first; then two in five made by a client
    # under a consent (they expire, and went with a withdrawn consent), the
    # rest by people on their account page.
    heavy_keys = s.heavy_users * s.heavy_keys
    key_digest = names.sha256_hex("a", "j")
    yield (
        "API keys",
        f"""
        INSERT INTO api_keys (id, user_id, consent_id, name, key_hash, prefix, scopes,
                              resource, expires_at, last_used_at, revoked_at,
                              created_at)
        SELECT {names.uuid("a", "j")}, user_id, consent_id,
               (ARRAY['laptop', 'ci', 'agent', 'scripts', 'notebook'])[j % 5 + 1]
                 || ' ' || j,
               {key_digest}, '{API_KEY_PREFIX}' || {names.urlsafe("ap", "j", 8)},
               CASE WHEN j % 3 = 0 THEN '{{read}}'::varchar[]
                    ELSE '{{read,write}}'::varchar[] END,
               resource,
               CASE WHEN consent_id IS NOT NULL
                      THEN created + interval '90 days'
                    WHEN j < {heavy_keys} OR r_expiry < 0.5 THEN NULL
                    ELSE created + interval '30 days' * (1 + floor(r_expiry * 12)) END,
               CASE WHEN random() < 0.5
                    THEN created + (least(ended, {now_sql}) - created) * random() END,
               ended, created
        FROM (
          SELECT j, coalesce({names.user("p.user_n")}, users.id) AS user_id,
                 CASE WHEN p.i IS NOT NULL THEN {names.consent("p.i")} END
                   AS consent_id,
                 coalesce(p.resource, {_literal(resources[0])}) AS resource,
                 r_expiry,
                 CASE WHEN p.i IS NOT NULL
                        THEN p.approved_at
                             + (coalesce(CASE WHEN NOT p.live THEN p.slot_end END,
                                         {now_sql}) - p.approved_at) * random()
                      ELSE users.created_at
                           + ({now_sql} - users.created_at) * random() END
                   AS created,
                 CASE WHEN p.i IS NOT NULL AND NOT p.live THEN p.slot_end END
                   AS consent_ended,
                 r_revoke
          FROM (
            SELECT j, random() AS r_expiry, random() AS r_revoke,
                   CASE WHEN j >= {heavy_keys} AND j % 5 < 2
                        THEN floor(random() * {s.consents})::int END AS consent_i,
                   CASE WHEN j < {heavy_keys} THEN j / {s.heavy_keys}
                        ELSE {s.heavy_users}
                             + floor(random() * {s.users - s.heavy_users})::int
                   END AS owner_n
            FROM generate_series(0, {s.api_keys - 1}) AS j
          ) AS drawn
          LEFT JOIN plan_consents AS p ON p.i = drawn.consent_i
          LEFT JOIN users ON drawn.consent_i IS NULL
                         AND users.id = {names.user("drawn.owner_n")}
        ) AS keys
        CROSS JOIN LATERAL (
          SELECT coalesce(consent_ended,
                          CASE WHEN j >= {heavy_keys} AND r_revoke < 0.25
                               THEN created + ({now_sql} - created) * r_revoke * 4
                          END) AS ended
        ) AS end_of_key
        """,
    )
    yield (
        "denied tokens",
        f"""
        INSERT INTO denied_tokens (jti, expires_at)
        SELECT {names.urlsafe("d", "n", 22)},
               {now_sql} + interval '1 hour' * (2 * random() - 1)
        FROM generate_series(0, {s.denied_tokens - 1}) AS n
        """,
    )
    yield (
        "spent assertions",
        f"""
        INSERT INTO spent_assertions (digest, expires_at)
        SELECT {names.sha256_hex("x", "n")},
               {now_sql} + interval '5 minutes' * (2 * random() - 1)
        FROM generate_series(0, {s.spent_assertions - 1}) AS n
        """,
    )


#: The tables a fill writes, in the order their counts are printed.
TABLES = (
    "users",
    "identities",
    "oauth_clients",
    "consents",
    "refresh_tokens",
    "api_keys",
    "denied_tokens",
    "spent_assertions",
    "resources",
)


def psycopg_url(database_url: str) -> str:
    """A libpq URL for the app's SQLAlchemy one."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


#: The tables of a million rows or more. Their indexes, keys and foreign keys
#: are dropped while they are filled, then made again: one sort per index,
#: and one join per foreign key that checks every row, in place of an index
#: insertion and a lookup per row (three times faster in all).
BULK_TABLES = ("oauth_clients", "consents", "refresh_tokens", "api_keys")


def _set_aside(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[str]:
    """Drop the indexes, primary and unique keys and foreign keys of
    ``tables``; return the statements that make them again, in order.

    Only what these tables declare: every foreign key that refers to their
    keys must be among them (a foreign key of another table would be left
    without its key), which is checked.
    """
    names = list(tables)
    outside = conn.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f'"
        " AND confrelid = ANY(%s::regclass[]) AND NOT conrelid = ANY(%s::regclass[])",
        (names, names),
    ).fetchall()
    if outside:
        raise RuntimeError(f"foreign keys into the bulk tables from others: {outside}")
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, contype,"
        " pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('p', 'u', 'f')"
        " ORDER BY contype = 'f' DESC, conname",
        (names,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = ANY(%s::regclass[]) AND NOT EXISTS (SELECT 1"
        "  FROM pg_constraint WHERE conindid = indexrelid AND contype IN ('p', 'u'))"
        " ORDER BY 1",
        (names,),
    ).fetchall()
    for table, name, _, _ in constraints:  # foreign keys first
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    keys = [c for c in constraints if c[2] != "f"]
    foreign = [c for c in constraints if c[2] == "f"]
    return [
        *(f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, _, d in keys),
        *(definition for _, definition in indexes),
        *(f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, _, d in foreign),
    ]


def fill(
    database_url: str,
    scale: Scale,
    builtin_resource: str,
    password_hash: str,
    log: Callable[[str], None] | None = None,
) -> Filled:
    """Fill the migrated database at ``database_url``; ``VACUUM ANALYZE`` it."""
    salt = secrets.token_hex(8)
    now = datetime.now(UTC)
    started = time.monotonic()
    with psycopg.connect(psycopg_url(database_url)) as conn:
        conn.execute("SET LOCAL work_mem = '64MB'")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute("SET LOCAL temp_buffers = '256MB'")
        conn.execute("SET LOCAL jit = off")
        rebuilt = _set_aside(conn, BULK_TABLES)
        for what, statement in statements(
            scale, salt, now, builtin_resource, password_hash
        ):
            step = time.monotonic()
            conn.execute(statement)
            if log is not None:
                log(f"{what}: {time.monotonic() - step:.1f} s")
        step = time.monotonic()
        for statement in rebuilt:
            conn.execute(statement)
        if log is not None:
            log(f"indexes, keys and foreign keys: {time.monotonic() - step:.1f} s")
    filled = time.monotonic()
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        vacuumed = time.monotonic()
        tables = sizes(conn)
    return Filled(scale, filled - started, vacuumed - filled, tables)


def sizes(conn: psycopg.Connection) -> list[TableSize]:
    found = []
    for table in TABLES:
        row = conn.execute(
            f"SELECT count(*), pg_table_size('{table}'), pg_indexes_size('{table}')"
            f" FROM {table}"
        ).fetchone()
        assert row is not None
        found.append(TableSize(table, *row))
    return found


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def describe(filled: Filled) -> list[str]:
    """The fill's report: its time, each table's rows and size."""
    lines = [
        f"database filled at scale {filled.scale.name} in"
        f" {filled.fill_seconds:.0f} s, then VACUUM ANALYZE in"
        f" {filled.vacuum_seconds:.0f} s",
        f"  {'table':<17} {'rows':>11} {'table':>12} {'indexes':>12}",
    ]
    for t in filled.tables:
        lines.append(
            f"  {t.name:<17} {t.rows:>11,} {_mb(t.table_bytes):>12}"
            f" {_mb(t.index_bytes):>12}"
        )
    total = sum(t.table_bytes + t.index_bytes for t in filled.tables)
    lines.append(f"  {'total':<17} {'':>11} {_mb(total):>25}")
    return lines


class Run:
    """What ``BENCH_SCALE`` adds to a ``make bench`` run; nothing when unset.

    ``tools/bench.py`` calls it at four points: the Postgres options it
    starts with, :meth:`prepare` before measuring, :meth:`explaining` around
    each count of statements, :meth:`finish` after the timed rows; then
    :meth:`report` prints what was found and says whether a scan fails the run.
    """

    def __init__(self, scale: Scale | None) -> None:
        self.scale = scale
        self.env: dict[str, str] = {}
        self.filled: Filled | None = None
        self.capture: Any = None
        self.rows: dict[str, int] = {}
        self.marks: Landmarks | None = None
        self.unread: list[tuple[str, int]] = []
        self.housekeeping: Any = None

    @classmethod
    def from_environment(cls) -> Run:
        return cls(from_environment())

    @property
    def postgres_options(self) -> tuple[str, ...]:
        """``auto_explain`` preloaded (after the bench's own options, whose
        ``shared_preload_libraries`` these replace), idle until asked."""
        if self.scale is None:
            return ()
        import bench_plans

        return bench_plans.POSTGRES_OPTIONS

    def prepare(self, env: dict[str, str], log: Callable[[str], None]) -> None:
        """Fill the migrated database the app at ``env`` serves."""
        if self.scale is None:
            return
        import bench_plans

        from app.config import settings_from_environment
        from app.oauth.resources import builtin_resource
        from app.passwords import hash_password

        self.env = env
        self.capture = bench_plans.Capture(env["DATABASE_URL"])
        log(f"filling the database at scale {self.scale.name}")
        settings = settings_from_environment(env)
        self.filled = fill(
            env["DATABASE_URL"],
            self.scale,
            builtin_resource(settings).uri,
            hash_password(secrets.token_urlsafe(12)),
            log=lambda message: log(f"  {message}"),
        )
        log(f"filled in {self.filled.fill_seconds:.0f} s")
        # Found now: the bench's own person and chains would outgrow them.
        self.marks = landmarks(env["DATABASE_URL"])
        # What a plan is judged against: the tables as the requests find them.
        self.rows = bench_plans.table_rows(env["DATABASE_URL"])
        _forget_resources(env)
        # From here, index use is the requests' (see :func:`unread_indexes`).
        with psycopg.connect(psycopg_url(env["DATABASE_URL"])) as conn:
            conn.execute("SELECT pg_stat_reset()")

    def explaining(self) -> contextlib.AbstractContextManager[None]:
        """Every statement's plan logged, for the duration of the block."""
        if self.capture is None:
            return contextlib.nullcontext()
        return self.capture.explaining()

    def finish(self, directory: Path, log: Callable[[str], None]) -> None:
        """Explain what no request reaches, then run ``prune`` once."""
        if self.scale is None:
            return
        import bench_housekeeping

        self.unread = unread_indexes(self.env["DATABASE_URL"])
        log("explaining housekeeping and account statements, then pruning")
        assert self.marks is not None
        self.housekeeping = bench_housekeeping.run(self.env, self.marks, directory)

    def report(self) -> bool:
        """Print the fill, the plans and the housekeeping; whether any
        request's statement scanned a big table (or prune failed)."""
        if self.scale is None or self.filled is None:
            return False
        import bench_housekeeping
        import bench_plans

        lines = ["", *describe(self.filled), ""]
        plan_lines, scans = bench_plans.describe(self.capture.plans, self.rows)
        lines += ["plans of the statements counted (auto_explain):", *plan_lines]
        unread = ", ".join(f"{name} ({_mb(size)})" for name, size in self.unread)
        lines.append(f"indexes no request of the run read: {unread or 'none'}")
        failed = bool(scans) or not self.capture.plans
        if self.housekeeping is not None:
            lines += ["", *bench_housekeeping.describe(self.housekeeping)]
            failed = failed or self.housekeeping.failed
        print("\n".join(lines))
        return failed

    def as_json(self) -> dict[str, Any] | None:
        if self.scale is None or self.filled is None:
            return None
        prune = self.housekeeping.prune if self.housekeeping is not None else None
        return {
            "scale": self.scale.name,
            "fill_seconds": self.filled.fill_seconds,
            "vacuum_seconds": self.filled.vacuum_seconds,
            "tables": [asdict(table) for table in self.filled.tables],
            "plans": len(self.capture.plans),
            "unread_indexes": dict(self.unread),
            "prune": asdict(prune) if prune is not None else None,
        }


def unread_indexes(database_url: str) -> list[tuple[str, int]]:
    """The indexes of the big tables not read since the statistics were
    reset (after the fill), with their sizes: dead weight, if the run's
    requests are all the deployment's."""
    with psycopg.connect(psycopg_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT indexrelname, pg_relation_size(indexrelid)"
            " FROM pg_stat_user_indexes WHERE idx_scan = 0 AND relname = ANY(%s)"
            " ORDER BY 2 DESC",
            (list(BULK_TABLES) + ["users"],),
        ).fetchall()
    return [(str(name), int(size)) for name, size in rows]


def _forget_resources(env: dict[str, str]) -> None:
    """Tell the app's processes the registry changed (the fill added
    resources), as ``flask --app app resources add`` would."""
    from bench_servers import app_for

    from app.denylist import evict
    from app.oauth.resources import REGISTRY_CACHE, REGISTRY_KEY

    with app_for(env) as app, app.app_context():
        evict(REGISTRY_CACHE, [REGISTRY_KEY])


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] != "fill":
        print(__doc__, file=sys.stderr)
        return 2
    scale = SCALES[argv[2]] if len(argv) == 3 else LARGE
    from app.passwords import hash_password

    started = fill(
        argv[1],
        scale,
        "http://127.0.0.1:8000/mcp",
        hash_password(secrets.token_urlsafe(12)),
        log=lambda message: print(f"[scale] {message}", file=sys.stderr, flush=True),
    )
    print("\n".join(describe(started)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
