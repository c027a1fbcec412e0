// Discovery exactly as the MCP TypeScript SDK's auth() does it, printed as JSON.
//
// Usage: node sdk_discovery.mjs <node_modules folder> <MCP endpoint URL>
// The SDK is imported from the folder the test set-up installed it into.
import { pathToFileURL } from "node:url";

const [modules, serverUrl] = process.argv.slice(2);
const sdk = `${modules}/@modelcontextprotocol/sdk/dist/esm/client/auth.js`;
const { discoverOAuthServerInfo, extractResourceMetadataUrl } = await import(
  pathToFileURL(sdk).href
);

const fetched = [];
const recordingFetch = async (url, init) => {
  const response = await fetch(url, init);
  fetched.push([String(url), response.status]);
  return response;
};

// An unauthenticated call names the resource metadata (RFC 9728 §5.1).
const challenge = await fetch(serverUrl, {
  method: "POST",
  headers: { "Content-Type": "application/json", Accept: "application/json" },
  body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize" }),
});
const resourceMetadataUrl = extractResourceMetadataUrl(challenge);

try {
  const info = await discoverOAuthServerInfo(serverUrl, {
    resourceMetadataUrl,
    fetchFn: recordingFetch,
  });
  console.log(JSON.stringify({ ok: true, fetched, ...info }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, fetched, error: String(error) }));
}
