"""Fetching a Client ID Metadata Document without being turned against ourselves.

The resolver is replaced only to choose what a name resolves to; the checks,
the refusal and the connection (or its absence) are real.
"""

from __future__ import annotations

import datetime
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from document_server import DocumentServer

from app.oauth import client_metadata_fetch as fetching
from app.oauth.client_metadata import cache_seconds
from app.oauth.client_metadata_fetch import FetchBusy, FetchPolicy, FetchProblem

DEFAULT = FetchPolicy()
LOOPBACK = FetchPolicy(allow_loopback=True)

#: Addresses no document may be fetched from: loopback, private, link-local,
#: the cloud metadata service, shared, unspecified, documentation, multicast,
#: and IPv6 forms that carry a special IPv4 address.
SPECIAL_ADDRESSES = [
    "127.0.0.1",
    "127.0.0.2",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "192.0.2.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fd00::",
    "fe80::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 around 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo around 127.0.0.1
    # Python's is_global counts all of these as global; none is global unicast.
    "fec0::1",  # deprecated site-local
    "192.0.0.8",  # IPv4 dummy address, in the IETF protocol assignments
    "192.0.0.9",  # PCP anycast
    "192.0.0.10",  # TURN anycast
    "192.31.196.1",  # AS112-v4
    "192.52.193.1",  # AMT
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "192.175.48.1",  # direct delegation AS112
    "3fff::1",  # IPv6 documentation (RFC 9637)
    "2620:4f:8000::1",  # direct delegation AS112
    "5f00::1",  # SRv6 SIDs, outside 2000::/3
    "64:ff9b:1::a00:1",  # local-use NAT64 around 10.0.0.1
    "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
    "::a00:1",  # IPv4-compatible 10.0.0.1
    "::ffff:192.0.0.8",
    "2002:c000:8::",  # 6to4 around 192.0.0.8
    "2002:808:808::1",  # 6to4 around a public address: a relay nobody chose
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo around 8.8.8.8
    "64:ff9b::c000:8",  # NAT64 around 192.0.0.8
    # And what is_global already refuses, held to the same rule.
    "198.51.100.1",
    "203.0.113.1",
    "192.0.0.170",
    "100::1",
    "2001:2::1",
    "2001:20::1",
    "fc00::1",
]
#: Global unicast, also when carried inside IPv6 by NAT64.
PUBLIC_ADDRESSES = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700::1111",
    "2a00:1450:4001:81c::200e",
    "64:ff9b::808:808",
]


def resolving_to(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Make every name resolve to ``answers``; return the names looked up."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(answers)

    monkeypatch.setattr(fetching, "resolve", resolve)
    return asked


def problem_of(url: str, policy: FetchPolicy = DEFAULT) -> FetchProblem:
    with pytest.raises(FetchProblem) as raised:
        fetching.fetch(url, policy)
    return raised.value


# --- The URL itself (draft §3) ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://client.example/meta.json", "url_scheme"),
        ("ftp://client.example/meta.json", "url_scheme"),
        ("https://client.example/meta.json#x", "url_fragment"),
        ("https://user@client.example/meta.json", "url_userinfo"),
        ("https://user:pw@client.example/meta.json", "url_userinfo"),
        ("https://client.example/a/../meta.json", "url_dot_segments"),
        ("https://client.example/./meta.json", "url_dot_segments"),
        ("https://client.example/a/%2E%2e/meta.json", "url_dot_segments"),
        ("https://client.example", "url_path"),
        ("https://client.example/", "url_path"),
        ("https://Client.example/meta.json", "url_form"),
        ("https://client.example:443/meta.json", "url_form"),
        ("https://client.example\\meta.json", "url_form"),
        ("https://client.example/meta json", "url_form"),
        ("https://127.1/meta.json", "url_form"),
        ("https://2130706433/meta.json", "url_form"),
        ("https://0x7f.0.0.1/meta.json", "url_form"),
        ("https://[::ffff:127.0.0.1]/meta.json", "url_form"),
        ("https:///meta.json", "url_path"),  # read as host "meta.json"
    ],
)
def test_malformed_urls_are_refused_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch, url: Any, code: Any
) -> None:
    asked = resolving_to(monkeypatch, "93.184.215.14")

    assert problem_of(url).code == code
    assert asked == []


def test_allowed_hosts_restrict_where_documents_come_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = resolving_to(monkeypatch, "93.184.215.14")
    policy = FetchPolicy(allowed_hosts=frozenset({"vscode.dev"}))

    problem = problem_of("https://client.example/meta.json", policy)

    assert (problem.code, problem.args_) == (
        "host_not_allowed",
        {"host": "client.example"},
    )
    assert asked == []
    assert fetching.check_url("https://vscode.dev/meta.json", policy)


def test_loopback_mode_opens_http_only_on_loopback_hosts() -> None:
    for url in (
        "http://127.0.0.1:9/meta.json",
        "http://localhost:9/meta.json",
        "http://[::1]:9/meta.json",
    ):
        assert fetching.check_url(url, LOOPBACK)
        assert problem_of(url).code == "url_scheme"
    with pytest.raises(FetchProblem, match="url_scheme"):
        fetching.check_url("http://client.example/meta.json", LOOPBACK)


# --- Addresses (draft §6.5) ------------------------------------------------------


@pytest.mark.parametrize("address", SPECIAL_ADDRESSES)
def test_special_addresses_are_not_public(address: Any) -> None:
    assert not fetching.address_is_public(address)


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are(address: Any) -> None:
    assert fetching.address_is_public(address)


@pytest.mark.parametrize("address", SPECIAL_ADDRESSES)
def test_a_name_resolving_to_a_special_address_is_refused_unconnected(
    monkeypatch: pytest.MonkeyPatch, documents: DocumentServer, address: Any
) -> None:
    # The name resolves to the address; were it connected to, the document
    # server would count it (loopback) or the fetch would hang (the rest).
    resolving_to(monkeypatch, address)
    started = time.monotonic()

    problem = problem_of(f"https://metadata.example:{documents.port}/meta.json")

    assert (problem.code, problem.args_["address"]) == ("address", address)
    assert time.monotonic() - started < 1
    assert documents.connections == 0


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "169.254.169.254",
        "[fd00::]",
        "[::ffff:7f00:1]",
        "100.64.0.1",
        "0.0.0.0",
    ],
)
def test_special_literals_and_real_names_are_refused_unconnected(
    documents: DocumentServer, host: str
) -> None:
    problem = problem_of(f"https://{host}:{documents.port}/meta.json")

    assert problem.code == "address"
    assert documents.connections == 0


def test_one_special_answer_among_public_ones_is_enough(
    monkeypatch: pytest.MonkeyPatch, documents: DocumentServer
) -> None:
    resolving_to(monkeypatch, "93.184.215.14", "127.0.0.1")

    assert problem_of(f"https://two.example:{documents.port}/m.json").code == "address"
    assert documents.connections == 0


def test_the_connection_goes_to_the_address_checked(
    monkeypatch: pytest.MonkeyPatch, documents: DocumentServer
) -> None:
    # A rebinding resolver would answer differently the second time; there is
    # no second time, and the request still names the host.
    url = f"http://localhost:{documents.port}/meta.json"
    documents.respond("/meta.json", "{}")
    asked = resolving_to(monkeypatch, "127.0.0.1")

    fetched = fetching.fetch(url, LOOPBACK)

    assert fetched.body == b"{}"
    assert asked == ["localhost"]
    assert documents.hosts == [f"localhost:{documents.port}"]


def test_loopback_mode_still_refuses_private_addresses(
    monkeypatch: pytest.MonkeyPatch, documents: DocumentServer
) -> None:
    resolving_to(monkeypatch, "10.0.0.1")

    assert problem_of(f"http://localhost:{documents.port}/m", LOOPBACK).code == (
        "address"
    )


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.DNSName(name)])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def tls_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DocumentServer]:
    """A document server with a certificate for ``docs.example`` from a test CA
    that the fetcher is told to trust."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = _certificate("Test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("docs.example", key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    chain, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain, key_file)
    client_context = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    monkeypatch.setattr(fetching, "TLS_VERIFY", client_context)
    served = DocumentServer(tls=server_context)
    yield served
    served.stop()


def test_tls_is_verified_for_the_name_while_connecting_to_the_address(
    monkeypatch: pytest.MonkeyPatch, tls_documents: DocumentServer
) -> None:
    tls_documents.respond("/meta.json", "{}")
    resolving_to(monkeypatch, "127.0.0.1")
    port = tls_documents.port

    fetched = fetching.fetch(f"https://docs.example:{port}/meta.json", LOOPBACK)
    problem = problem_of(f"https://other.example:{port}/meta.json", LOOPBACK)

    assert fetched.body == b"{}"
    assert tls_documents.hosts == [f"docs.example:{port}"]
    # The certificate names docs.example, not the name asked for: refused.
    assert problem.code == "connect"
    assert tls_documents.requests == {"/meta.json": 1}


# --- The answer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [(301, "redirect"), (302, "redirect"), (307, "redirect")]
)
def test_redirects_are_not_followed(
    documents: DocumentServer, status: Any, code: Any
) -> None:
    documents.respond("/m", status=status, headers={"Location": documents.url("/x")})

    problem = problem_of(documents.url("/m"), LOOPBACK)

    assert (problem.code, problem.args_) == (code, {"status": status})
    assert documents.requests == {"/m": 1}


def test_an_error_status_is_a_failure(documents: DocumentServer) -> None:
    assert problem_of(documents.url("/missing"), LOOPBACK).args_ == {"status": 404}


def test_a_body_over_five_kilobytes_is_refused(documents: DocumentServer) -> None:
    documents.respond("/big", b" " * (5 * 1024 + 1), headers={"Content-Length": None})

    assert problem_of(documents.url("/big"), LOOPBACK).code == "too_large"


def test_a_declared_length_over_the_cap_is_refused_unread(
    documents: DocumentServer,
) -> None:
    documents.respond("/big", b" " * 6000)

    assert problem_of(documents.url("/big"), LOOPBACK).code == "too_large"


def test_an_endless_body_stops_at_the_cap(documents: DocumentServer) -> None:
    documents.endless("/endless")
    started = time.monotonic()

    assert problem_of(documents.url("/endless"), LOOPBACK).code == "too_large"
    # 1 KB every 50 ms: the cap is passed after a few chunks, long before
    # any timeout would end it.
    assert time.monotonic() - started < 2


def test_a_trickling_body_stops_at_the_deadline(
    documents: DocumentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetching, "DEADLINE", 0.5)
    documents.endless("/trickle", chunk=b" ", every=0.1)
    started = time.monotonic()

    assert problem_of(documents.url("/trickle"), LOOPBACK).code == "timeout"
    assert time.monotonic() - started < 2


def test_headers_sent_a_byte_at_a_time_stop_at_the_deadline(
    documents: DocumentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every byte arrives well within any per-read timeout; only the one
    # limit over the whole fetch ends it.
    monkeypatch.setattr(fetching, "DEADLINE", 1.0)
    documents.dribble("/dribble", every=0.2)
    started = time.monotonic()

    assert problem_of(documents.url("/dribble"), LOOPBACK).code == "timeout"
    assert time.monotonic() - started < 3


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A resolver that answers only when the test ends: a name server that
    never replies. Yields the names it was asked."""
    released, asked = threading.Event(), []

    def hang(host: str, port: int) -> list[str]:
        asked.append(host)
        released.wait(60)
        return ["127.0.0.1"]

    monkeypatch.setattr(fetching, "resolve", hang)
    yield asked
    released.set()
    # The lookups end now; wait, so the next test finds every slot free.
    for thread in threading.enumerate():
        if thread.name == "cimd-resolve":
            thread.join()


def test_a_name_lookup_that_hangs_is_given_up_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
    documents: DocumentServer,
    hanging_resolver: list[str],
) -> None:
    monkeypatch.setattr(fetching, "DEADLINE", 0.5)
    started = time.monotonic()

    assert problem_of(f"http://localhost:{documents.port}/m", LOOPBACK).code == (
        "timeout"
    )
    assert time.monotonic() - started < 2
    assert hanging_resolver == ["localhost"]
    assert documents.connections == 0


def test_lookups_left_hanging_are_bounded(
    monkeypatch: pytest.MonkeyPatch, hanging_resolver: list[str]
) -> None:
    monkeypatch.setattr(fetching, "DEADLINE", 0.05)
    url = "https://hangs.example/m"
    for _ in range(fetching.MAX_PENDING_LOOKUPS):
        assert problem_of(url).code == "timeout"

    with pytest.raises(FetchBusy):
        fetching.fetch(url, DEFAULT)
    assert len(hanging_resolver) == fetching.MAX_PENDING_LOOKUPS


def test_a_server_that_does_not_answer_times_out(documents: DocumentServer) -> None:
    documents.respond("/slow", "{}", delay=fetching.DEADLINE + 2)
    started = time.monotonic()

    assert problem_of(documents.url("/slow"), LOOPBACK).code == "timeout"
    assert time.monotonic() - started < fetching.DEADLINE + 1


def test_a_compressed_body_is_refused(documents: DocumentServer) -> None:
    documents.respond("/gz", b"\x1f\x8b", headers={"Content-Encoding": "gzip"})

    assert problem_of(documents.url("/gz"), LOOPBACK).code == "encoding"


def test_nothing_listening_is_a_connect_failure(documents: DocumentServer) -> None:
    url = documents.url("/m")
    documents.stop()

    assert problem_of(url, LOOPBACK).code == "connect"


# --- How long a verdict lasts ----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("", 300),
        ("no-store", 300),
        ("max-age=10", 300),
        ("public, max-age=3600", 3600),
        ('max-age="7200"', 7200),
        ("max-age=999999", 86400),
        ("s-maxage=9000", 300),
        ("max-age=abc", 300),
    ],
)
def test_cache_control_is_honoured_within_bounds(header: Any, seconds: Any) -> None:
    assert cache_seconds(header) == seconds
