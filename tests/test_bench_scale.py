"""``make bench BENCH_SCALE=...``: the fill, at a test's scale, and the plan reader.

The fill runs against the test Postgres at ``tiny`` scale, then the rows are
held to what the app itself would have written: the counts asked for, every
constraint and index as the migrations made them, chains with one head
each, the hashed columns in the app's formats, addresses as the app records
them, and times in the order the app makes them. The plan reader is fed a
log Postgres wrote (``auto_explain``, JSON), with a ``Seq Scan`` of a table
of a million rows.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import bench_plans
import bench_scale
import sqlalchemy
from sqlalchemy import text

from app.passwords import hash_password, verify_password

SNIPPET = Path(__file__).with_name("auto_explain_snippet.log")
BUILTIN = "http://127.0.0.1:8000/mcp"


def _schema(connection: sqlalchemy.Connection) -> set[tuple[Any, ...]]:
    """Every index and constraint of the app's tables, as Postgres states them."""
    indexes = connection.execute(
        text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    )
    constraints = connection.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid),"
            " convalidated FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace"
        )
    )
    return {tuple(row) for row in indexes} | {tuple(row) for row in constraints}


def _scalar(connection: sqlalchemy.Connection, sql: str) -> Any:
    return connection.execute(text(sql)).scalar()


def test_tiny_fill_holds_to_what_the_app_writes(
    base_env: dict[str, str], engine: sqlalchemy.Engine
) -> None:
    scale = bench_scale.TINY
    with engine.connect() as connection:
        before = _schema(connection)
    password = "correct horse battery staple"
    filled = bench_scale.fill(
        base_env["DATABASE_URL"], scale, BUILTIN, hash_password(password)
    )

    rows = {table.name: table.rows for table in filled.tables}
    clients = scale.clients + scale.document_clients + scale.service_clients
    assert rows == {
        "users": scale.users,
        "identities": scale.users // 5,
        "oauth_clients": clients,
        "consents": scale.consents,
        "refresh_tokens": scale.refresh_tokens,
        "api_keys": scale.api_keys,
        "denied_tokens": scale.denied_tokens,
        "spent_assertions": scale.spent_assertions,
        "resources": len(bench_scale.RESOURCES),
    }
    assert all(table.table_bytes > 0 for table in filled.tables)
    assert "refresh_tokens" in "\n".join(bench_scale.describe(filled))

    with engine.connect() as connection:
        # The indexes, keys and foreign keys set aside during the fill are
        # back, as the migrations made them, and hold every row.
        assert _schema(connection) == before

        def count(sql: str) -> int:
            return int(_scalar(connection, sql))

        # Most consents were withdrawn; a client's newest may be live.
        live = count("SELECT count(*) FROM consents WHERE revoked_at IS NULL")
        assert 0 < live < scale.consents / 2
        assert (
            count(
                "SELECT count(*) FROM consents c JOIN oauth_clients o USING (client_id)"
                " JOIN users u ON u.id = c.user_id"
                " WHERE c.approved_at < o.created_at OR c.approved_at < u.created_at"
                " OR c.revoked_at < c.approved_at OR c.approved_at > now()"
            )
            == 0
        )

        # Chains: one head each, the rest rotated into their successor,
        # the first with its code's jti, the later ones sealed; all within
        # their consent's life, and by its person and client.
        chains = count(
            "SELECT count(DISTINCT (consent_id, chain_expires_at)) FROM refresh_tokens"
        )
        heads = count("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL")
        firsts = count(
            "SELECT count(*) FROM refresh_tokens"
            " WHERE parent_id IS NULL AND code_jti IS NOT NULL AND sealed IS NULL"
        )
        assert chains == heads == firsts > 0
        assert (
            count(
                "SELECT count(*) FROM refresh_tokens t JOIN refresh_tokens p"
                " ON p.id = t.parent_id"
                " WHERE p.rotated_at IS DISTINCT FROM t.issued_at"
                " OR p.consent_id <> t.consent_id"
                " OR p.chain_expires_at <> t.chain_expires_at OR t.sealed IS NULL"
            )
            == 0
        )
        assert (
            count(
                "SELECT count(*) FROM refresh_tokens t JOIN consents c"
                " ON c.id = t.consent_id"
                " WHERE t.user_id <> c.user_id OR t.client_id <> c.client_id"
                " OR t.resource <> c.resource OR t.issued_at < c.approved_at"
                " OR t.issued_at > coalesce(c.revoked_at, now())"
                " OR (t.rotated_at IS NULL AND c.revoked_at IS NOT NULL"
                "     AND t.revoked_at IS DISTINCT FROM c.revoked_at)"
            )
            == 0
        )
        dead = count(
            "SELECT count(*) FROM refresh_tokens"
            " WHERE rotated_at IS NOT NULL OR chain_expires_at < now()"
        )
        assert dead > scale.refresh_tokens / 2

        # Keys: a client's expire, and went with a withdrawn consent.
        assert (
            count(
                "SELECT count(*) FROM api_keys k JOIN consents c ON c.id = k.consent_id"
                " WHERE k.user_id <> c.user_id OR k.expires_at IS NULL"
                " OR (c.revoked_at IS NOT NULL AND k.revoked_at IS NULL)"
            )
            == 0
        )
        assert count("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL") > 0

        # The hashed columns, as the app writes them.
        hashes = connection.execute(
            text(
                "SELECT token_hash FROM refresh_tokens UNION ALL"
                " SELECT key_hash FROM api_keys UNION ALL"
                " SELECT client_secret_hash FROM oauth_clients"
                " WHERE client_secret_hash IS NOT NULL"
            )
        ).scalars()
        assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in hashes)
        assert (
            count(
                "SELECT count(*) FROM oauth_clients WHERE (client_secret_hash IS NULL)"
                " <> (token_endpoint_auth_method IN ('none', 'private_key_jwt'))"
            )
            == 0
        )
        prefixes = connection.execute(text("SELECT prefix FROM api_keys")).scalars()
        assert all(re.fullmatch(r"lsk_[\w-]{8}", value) for value in prefixes)
        stored = _scalar(
            connection,
            "SELECT password_hash FROM users WHERE password_hash IS NOT NULL",
        )
        assert verify_password(stored, password)
        assert (
            count(
                "SELECT count(*) FROM users u WHERE password_hash IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id)"
            )
            == 0
        )

        # Registrations: their addresses as the app records them (IPv6 by
        # /64), a few addresses with many, most public clients.
        sources = connection.execute(
            text(
                "SELECT registered_from, count(*) FROM oauth_clients"
                " WHERE registered_from NOT IN"
                " ('client-id-metadata-document', 'service-client')"
                " GROUP BY registered_from ORDER BY count(*) DESC"
            )
        ).all()
        for source, _ in sources:
            if "/" in source:  # IPv6: the /64
                network = ipaddress.IPv6Network(source)
                assert str(network) == source and network.prefixlen == 64
                assert network.network_address.is_global
            else:
                address = ipaddress.IPv4Address(source)
                assert str(address) == source and address.is_global
        assert sources[0][1] > 1 and len(sources) > scale.clients / 10
        public = count(
            "SELECT count(*) FROM oauth_clients"
            " WHERE token_endpoint_auth_method = 'none'"
        )
        assert public > scale.clients / 2
        assert (
            count(
                "SELECT count(*) FROM oauth_clients"
                " WHERE last_authorized_at IS NOT NULL AND service_resource IS NULL"
            )
            >= scale.authorized
        )

    marks = bench_scale.landmarks(base_env["DATABASE_URL"])
    assert marks.long_chain == scale.long_chain
    by_source: dict[str, int] = {row[0]: row[1] for row in sources}
    assert by_source[marks.heavy_address] == sources[0][1]


def test_scale_names_and_their_counts() -> None:
    for scale in bench_scale.SCALES.values():
        bench_scale.check(scale)
    assert bench_scale.LARGE.clients == 1_000_000
    assert bench_scale.LARGE.refresh_tokens == 2_000_000


def test_plan_reader_flags_a_seq_scan_of_a_big_table() -> None:
    """A log Postgres wrote: a count read the whole table (by three
    processes), and a lookup by primary key."""
    plans = bench_plans.parse(SNIPPET.read_text())
    assert [plan.query for plan in plans] == [
        "SELECT count(*) FROM consents WHERE scope = ?",
        "SELECT client_id FROM consents WHERE id = ?",
    ]
    assert all(plan.database == "large" for plan in plans)
    assert all(plan.application == "bench-test" for plan in plans)
    whole, lookup = plans
    assert whole.buffers == 19732
    assert whole.reads[0].kind == "Seq Scan"
    assert whole.reads[0].rows_read == 3 * 333333
    assert [str(node) for node in lookup.reads] == [
        "Index Scan on consents using pk_consents"
    ]

    found = bench_plans.scans(plans, {"consents": 1_000_000})
    assert [(scan.node.kind, scan.query) for scan in found] == [
        ("Seq Scan", "SELECT count(*) FROM consents WHERE scope = ?")
    ]
    lines, scans = bench_plans.describe(plans, {"consents": 1_000_000})
    assert scans == found
    assert "plans: 2 statements, 1 scan(s) of a big table:" in lines
    # A small table may be read whole.
    assert bench_plans.scans(plans, {"consents": 5_000}) == []
    lines, _ = bench_plans.describe(plans, {"consents": 5_000})
    assert lines[-1] == "plans: 2 statements, no scans"


def test_plan_reader_counts_what_an_index_reads() -> None:
    def node(kind: str, rows: float, fetches: float = 0.0) -> bench_plans.Node:
        return bench_plans.Node(kind, "t", "ix", rows, fetches)

    assert not node("Index Scan", 1_000).scans
    assert node("Index Scan", 1_001).scans
    assert node("Bitmap Heap Scan", 50_000).scans
    # An index-only scan reads entries, not rows, until it fetches many.
    assert not node("Index Only Scan", 5_000).scans
    assert node("Index Only Scan", 5_000, fetches=2_000).scans
    assert node("Index Only Scan", 20_000).scans
    assert node("Seq Scan", 1).scans


def test_normalize_reads_runs_of_one_statement_as_one() -> None:
    query = "SELECT *\n  FROM t WHERE a = $1 AND b IN ($2, $3) AND c = 'x''y' LIMIT 20"
    expected = "SELECT * FROM t WHERE a = ? AND b IN (?, ...) AND c = ? LIMIT ?"
    assert bench_plans.normalize(query) == expected
