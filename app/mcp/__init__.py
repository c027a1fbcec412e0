"""A minimal MCP server: JSON-RPC 2.0 dispatch and the tools it offers.

Nothing here knows about HTTP or OAuth. :mod:`app.blueprints.mcp_endpoint` carries the
Streamable HTTP transport and the bearer-token check; it hands each message to
:func:`app.mcp.protocol.handle` with the verified token claims.
"""
