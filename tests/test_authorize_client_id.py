"""The authorization endpoint reads ``client_id`` as Authlib's request does."""

from __future__ import annotations

from typing import Any

import pytest

from app.blueprints.authorize import _client_id
from app.oauth.server import get_server


@pytest.mark.parametrize(
    ("method", "query", "form"),
    [
        ("GET", "client_id=a&response_type=code", None),
        ("GET", "client_id=a&client_id=b", None),
        ("GET", "response_type=code", None),
        ("POST", "client_id=a", {"client_id": "b", "decision": "approve"}),
        ("POST", "response_type=code", {"client_id": "b"}),
        ("POST", "", {"decision": "deny"}),
    ],
)
def test_the_client_id_is_the_one_authlib_reads(
    app: Any, method: str, query: str, form: dict[str, str] | None
) -> None:
    with app.test_request_context(f"/authorize?{query}", method=method, data=form):
        authlib_reads = get_server().create_oauth2_request(None).payload.client_id
        assert _client_id() == authlib_reads
