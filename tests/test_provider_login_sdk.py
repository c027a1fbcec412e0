"""The MCP Python SDK's whole flow, for a person who signs in only upstream.

The SDK discovers, registers and sends the person to ``/authorize``; the
person (driven over HTTP) continues with the identity provider, a real
node-oidc-provider started by the test set-up, signs in on its page and
approves on this service's consent page; the SDK then calls ``/mcp``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import anyio
from conftest import LiveServer
from mcp_sdk_client import Person, oauth_provider, run_session
from oidc_upstream import sign_in_at_provider, start_at_provider


class UpstreamPerson(Person):
    """Signs in by continuing with the provider, as ``login`` there."""

    def sign_in(self, login_url: str) -> str:
        target = parse_qs(urlsplit(login_url).query)["next"][0]
        at_provider = start_at_provider(self.browser, next_path=target)
        callback = sign_in_at_provider(self.browser, at_provider, self.user["login"])
        signed_in = self.browser.get(callback)
        assert signed_in.status_code == 302, signed_in.text
        return str(signed_in.headers["Location"])


def test_sdk_client_reaches_mcp_for_a_person_known_only_upstream(
    provider_server: LiveServer,
) -> None:
    person = UpstreamPerson(provider_server.browser(), {"login": "ada"})
    provider = oauth_provider(provider_server, person)

    outcome = anyio.run(run_session, provider_server, provider)

    assert len(person.authorization_urls) == 1
    assert outcome["whoami"]["email"] == "ada@acme.test"
    assert [tool.name for tool in outcome["tools"].tools] == ["whoami"]
