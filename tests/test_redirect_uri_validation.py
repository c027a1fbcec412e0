"""Redirect URIs at registration: RFC 3986, read the same by browsers.

Every refused URI is one where a browser's WHATWG URL parsing and RFC 3986
disagree, or one whose host is not a DNS name, an IPv4 or an IPv6 address.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from helpers import Browser

REFUSED = {
    # The finding: a backslash is "/" to a browser, so the host is attacker.example.
    "backslash in the host": "https://attacker.example\\.claude.ai/cb",
    "backslash in the path": "https://client.example.com\\cb",
    "double quote": 'https://client.example.com/"cb"',
    "less and greater than": "https://client.example.com/<cb>",
    "caret": "https://client.example.com/c^b",
    "backtick": "https://client.example.com/c`b",
    "braces": "https://client.example.com/{cb}",
    "pipe": "https://client.example.com/c|b",
    "bad percent-encoding": "https://client.example.com/%zz",
    "tab": "https://client.example.com/\tcb",
    "newline in the host": "https://client.\nexample.com/cb",
    "hyphen-only host": "https://-/",
    "empty label": "https://a..b/",
    "label starting with a hyphen": "https://-client.example.com/cb",
    "label ending with a hyphen": "https://client-.example.com/cb",
    "underscore in the host": "https://client_app.example.com/cb",
    "label over 63 characters": f"https://{'a' * 64}.example.com/cb",
    "invalid A-label": "https://xn--zz.example.com/cb",
    "trailing dot": "https://client.example.com./cb",
    "percent-encoded host": "https://%63lient.example.com/cb",
    "hexadecimal IPv4": "https://0x7f.1/",
    "short IPv4": "https://127.1/cb",
    "octal IPv4": "https://0177.0.0.1/cb",
    "single-number IPv4": "https://2130706433/cb",
    "IPv4 with a trailing dot": "https://192.0.2.1./cb",
    "IPv4 out of range": "https://192.0.2.256/cb",
    "name ending in a number": "https://client.123/cb",
    "loopback http as a short IPv4": "http://127.1/cb",
    "non-canonical IPv6": "https://[2001:db8:0:0::1]/cb",
    "IPv4-mapped IPv6": "https://[::ffff:127.0.0.1]/cb",
    "IPv6 zone": "https://[fe80::1%25eth0]/cb",
    "IPvFuture": "https://[v1.x]/cb",
    "unclosed IPv6": "https://[::1/cb",
    "dot segment": "https://client.example.com/a/../cb",
    "single-dot segment": "https://client.example.com/./cb",
    "percent-encoded dot segment": "https://client.example.com/a/%2e%2e/cb",
    "apostrophe a browser encodes in the query": "https://client.example.com/cb?a='",
    "port out of range": "https://client.example.com:65536/cb",
    "port zero": "https://client.example.com:0/cb",
    "non-numeric port": "https://client.example.com:https/cb",
    "missing slashes": "https:client.example.com/cb",
    "one slash": "https:/client.example.com/cb",
}

ACCEPTED = {
    "https": "https://client.example.com/cb",
    "https with a port and a query": "https://client.example.com:8443/cb?tenant=a",
    "upper-case host (RFC 3986 §6.2.2.1)": "https://Client.Example.COM/cb",
    "default port (RFC 3986 §6.2.3)": "https://client.example.com:443/cb",
    "empty port (RFC 3986 §6.2.3)": "https://client.example.com:/cb",
    "no path": "https://client.example.com",
    "percent-encoded slash": "https://client.example.com/a%2Fb?next=%2F",
    "sub-delimiters in the path": "https://client.example.com/a;b,c!$&()+=:@",
    "double slash in the path": "https://client.example.com//cb",
    "A-label host": "https://xn--bcher-kva.example/cb",
    "hyphens inside labels": "https://my-client.example-app.com/cb",
    "digits-only label that is not last": "https://123.example.com/cb",
    "IPv4": "https://192.0.2.1/cb",
    "IPv6": "https://[2001:db8::1]:8443/cb",
    "loopback IPv4": "http://127.0.0.1:33418/callback",
    "loopback name": "http://localhost/callback",
    "loopback IPv6": "http://[::1]/callback",
}


@pytest.mark.parametrize("uri", REFUSED.values(), ids=REFUSED.keys())
def test_uris_browsers_read_differently_are_refused(
    browser: Browser, engine: sqlalchemy.Engine, uri: Any
) -> None:
    response = browser.post("/register", json={"redirect_uris": [uri]})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_redirect_uri"
    with engine.connect() as connection:
        count = connection.scalar(sqlalchemy.text("SELECT count(*) FROM oauth_clients"))
    assert count == 0


@pytest.mark.parametrize("uri", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_uris_read_alike_are_accepted_as_given(browser: Browser, uri: Any) -> None:
    response = browser.post("/register", json={"redirect_uris": [uri]})

    assert response.status_code == 201, response.text
    assert response.json()["redirect_uris"] == [uri]
