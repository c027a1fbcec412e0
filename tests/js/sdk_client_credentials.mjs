// The MCP TypeScript SDK's own machine-to-machine providers reach an MCP server:
// ClientCredentialsProvider (a client secret) or PrivateKeyJwtProvider (a signed
// assertion), through discovery, the client_credentials grant and MCP over
// Streamable HTTP; then it lists the tools and calls one. No person takes part.
//
// Usage: node sdk_client_credentials.mjs <node_modules folder> <options JSON>
// where options is {"url", "issuer", "client_id", "tool",
//   and either "client_secret" or "private_key" (PKCS#8 PEM) with "algorithm"}.
// Prints one JSON line: {"tools", "result", "is_error", "access_token"};
// on failure {"error"} and exit status 1.
import { pathToFileURL } from "node:url";

const [modules, optionsJson] = process.argv.slice(2);
const dist = `${modules}/@modelcontextprotocol/sdk/dist/esm`;
const load = (path) => import(pathToFileURL(`${dist}/${path}`).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { ClientCredentialsProvider, PrivateKeyJwtProvider } = await load(
  "client/auth-extensions.js",
);

const emit = (value) => console.log(JSON.stringify(value));
const options = JSON.parse(optionsJson);

function provider() {
  if (options.client_secret !== undefined) {
    return new ClientCredentialsProvider({
      clientId: options.client_id,
      clientSecret: options.client_secret,
      expectedIssuer: options.issuer,
    });
  }
  return new PrivateKeyJwtProvider({
    clientId: options.client_id,
    privateKey: options.private_key,
    algorithm: options.algorithm,
    expectedIssuer: options.issuer,
  });
}

try {
  const authProvider = provider();
  const client = new Client({ name: "ts-sdk-service", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(options.url), { authProvider }),
  );
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: options.tool, arguments: {} });
  await client.close();
  emit({
    tools: tools.map((tool) => tool.name),
    result: result.structuredContent ?? null,
    is_error: result.isError ?? false,
    access_token: authProvider.tokens()?.access_token ?? null,
  });
  process.exit(0);
} catch (error) {
  emit({ error: String(error?.stack ?? error) });
  process.exit(1);
}
