"""The tools this MCP server offers, each with the scopes a caller needs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..denylist import is_user_denied, process_cache
from ..users import get_active_user

Claims = Mapping[str, Any]


class ScopeRequired(Exception):
    """The token lacks a scope the tool needs (answered 403 insufficient_scope)."""

    def __init__(self, scopes: tuple[str, ...]) -> None:
        super().__init__(" ".join(scopes))
        self.scopes = scopes


class UnknownCaller(Exception):
    """The token's subject is no longer an enabled account (answered 401)."""


class ToolInputError(Exception):
    """Arguments the tool cannot use; reported as a tool execution error."""


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    #: OAuth scopes the access token must carry to call the tool.
    scopes: tuple[str, ...]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    run: Callable[[Claims, dict[str, Any]], dict[str, Any]]

    def describe(self) -> dict[str, Any]:
        """The tool as ``tools/list`` shows it (MCP server/tools §Tool)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
            "annotations": {"readOnlyHint": True, "openWorldHint": False},
        }

    def call(self, claims: Claims, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the tool for the token's owner; return a ``CallToolResult``."""
        granted = set(str(claims.get("scope", "")).split())
        if not granted.issuperset(self.scopes):
            raise ScopeRequired(self.scopes)
        try:
            output = self.run(claims, arguments)
        except ToolInputError as exc:
            # MCP 2025-11-25 server/tools §Error Handling: input problems are
            # tool execution errors, so a model can read them and correct itself.
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        return {
            "content": [{"type": "text", "text": json.dumps(output)}],
            "structuredContent": output,
            "isError": False,
        }


#: The process cache of accounts' emails (app/process_cache.py): user id ->
#: email. Accounts are disabled, never deleted (the denylist check below),
#: but an email may change, say when an upstream identity reports a new
#: one: an entry is trusted for a few minutes only.
EMAIL_CACHE = "emails"
#: Accounts whose email this process remembers; beyond that the oldest go.
EMAIL_CACHE_SIZE = 10_000
#: Seconds an email is remembered.
EMAIL_CACHE_SECONDS = 300


def email_of(user_id: str) -> str | None:
    """The enabled account's email, remembered so a token check needs no query.

    A disabled account's tokens are refused before any tool runs (its
    denylist marker); while that marker lives the account is read afresh, so
    a token issued after the cutoff still meets the database.
    """
    cache = process_cache(EMAIL_CACHE, EMAIL_CACHE_SIZE)
    email = None
    if cache is not None and not is_user_denied(user_id):
        email = cache.get(user_id)
    if email is None:
        user = get_active_user(user_id)
        if user is None:
            return None
        email = user.email
        if cache is not None:
            cache.put(user_id, email, until=time.time() + EMAIL_CACHE_SECONDS)
    return email


def whoami(claims: Claims, arguments: dict[str, Any]) -> dict[str, Any]:
    """Describe the caller: account and email (none for a service client
    acting for itself), client or API key, and scope."""
    if arguments:
        raise ToolInputError("whoami takes no arguments.")
    sub = str(claims.get("sub"))
    output: dict[str, Any] = {"sub": sub}
    # A service client acting for itself is its own subject: no person, no
    # email (a person's subject is a UUID, never a client_id).
    if sub != claims.get("client_id"):
        email = email_of(sub)
        if email is None:
            raise UnknownCaller
        output["email"] = email
    if claims.get("api_key_id"):
        output["api_key_id"] = str(claims["api_key_id"])
    else:
        output["client_id"] = str(claims.get("client_id", ""))
    output["scope"] = str(claims.get("scope", ""))
    return output


WHOAMI = Tool(
    name="whoami",
    title="Who am I",
    description=(
        "Return who is behind this access token: the subject (a user id, or a "
        "service client's own id), a person's email, the OAuth client_id or API "
        "key id, and the granted scope."
    ),
    scopes=("read",),
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    output_schema={
        "type": "object",
        "properties": {
            "sub": {
                "type": "string",
                "description": "The user id, or a service client's own id.",
            },
            "email": {"type": "string"},
            "client_id": {"type": "string"},
            "api_key_id": {"type": "string"},
            "scope": {"type": "string", "description": "Space-separated scopes."},
        },
        "required": ["sub", "scope"],
    },
    run=whoami,
)

#: Every tool, by name.
TOOLS: dict[str, Tool] = {tool.name: tool for tool in (WHOAMI,)}
