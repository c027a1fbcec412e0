// The MCP TypeScript SDK's own client connects to MCP servers one after the other,
// each with its own OAuth client (as a client keeps one registration a server),
// and calls one tool on each. The person is played by the test: for each server
// this prints {"authorize": URL}, then reads the redirect URL it was sent back to.
//
// Usage: node sdk_two_servers.mjs <node_modules folder> <calls JSON>
// where calls is [{"url": ..., "tool": ..., "arguments": {...}}, ...].
// Prints one JSON line a server: {"server", "tools", "result", "client_id",
// "access_token"}; on failure {"error"} and exit status 1.
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [modules, callsJson] = process.argv.slice(2);
const dist = `${modules}/@modelcontextprotocol/sdk/dist/esm`;
const load = (path) => import(pathToFileURL(`${dist}/${path}`).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { UnauthorizedError } = await load("client/auth.js");

const REDIRECT = "http://127.0.0.1:33419/callback";
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (value) => console.log(JSON.stringify(value));

// The SDK's OAuthClientProvider interface, kept in memory.
class MemoryProvider {
  constructor() {
    this.client = undefined;
    this.stored = undefined;
    this.verifier = undefined;
    this.authorizationUrl = undefined;
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "MCP TypeScript SDK test client",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    return crypto.randomUUID();
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(information) {
    this.client = information;
  }
  tokens() {
    return this.stored;
  }
  saveTokens(tokens) {
    this.stored = tokens;
  }
  redirectToAuthorization(url) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

async function connected(url, provider) {
  const client = new Client({ name: "ts-sdk-test", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(url), { authProvider: provider }),
  );
  return client;
}

async function session(url, provider) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    authProvider: provider,
  });
  try {
    const client = new Client({ name: "ts-sdk-test", version: "1.0.0" });
    await client.connect(transport);
    return client; // already authorized
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  // The 401 sent the SDK through discovery, registration and PKCE to the
  // authorization URL; the person approves, and the browser lands on REDIRECT.
  emit({ authorize: String(provider.authorizationUrl) });
  const { value: landed } = await lines.next();
  const code = new URL(landed.trim()).searchParams.get("code");
  await transport.finishAuth(code);
  return connected(url, provider);
}

try {
  for (const call of JSON.parse(callsJson)) {
    const provider = new MemoryProvider();
    const client = await session(call.url, provider);
    const { tools } = await client.listTools();
    const result = await client.callTool({
      name: call.tool,
      arguments: call.arguments,
    });
    await client.close();
    emit({
      server: call.url,
      tools: tools.map((tool) => tool.name),
      result: result.structuredContent ?? null,
      is_error: result.isError ?? false,
      client_id: provider.client.client_id,
      access_token: provider.stored.access_token,
    });
  }
  process.exit(0);
} catch (error) {
  emit({ error: String(error?.stack ?? error) });
  process.exit(1);
}
