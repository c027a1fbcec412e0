// A real, certified OpenID provider for the tests: node-oidc-provider 8.x.
//
// Usage: node oidc_provider.mjs <node_modules folder> <config JSON>
// The config names the clients (native, so any loopback port may receive the
// redirect, RFC 8252 §7.3) and the accounts, by the id typed on the login page.
// Sign-in is the package's own development interactions ("devInteractions":
// any password); consent is remembered for the configured clients, as a
// company's provider does for its own applications, so that the service's
// own consent page is the only one the person sees.
//
// Once listening, it prints one JSON line: {"issuer": "http://127.0.0.1:<port>"}.
//
// One addition for the tests of a misbehaving provider: POST /test/tamper
// with {"claims": {...}, "foreign_key": bool} makes the next token response
// carry an ID token with those claims changed, signed with the provider's key
// (or, with foreign_key, with a key the provider does not publish, under a
// key id it does not know). With {"rotate": true} the provider starts
// signing with a new key, which /jwks publishes from then on.
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modules, configJson] = process.argv.slice(2);
const config = JSON.parse(configJson);
const require = createRequire(`${modules}/`);
const load = async (name) => import(pathToFileURL(require.resolve(name)).href);
const { default: Provider, interactionPolicy } = await load("oidc-provider");
const jose = await load("jose");

const signingKey = await jose.generateKeyPair("RS256", { extractable: true });
const foreignKey = await jose.generateKeyPair("RS256", { extractable: true });
const nextKey = await jose.generateKeyPair("RS256", { extractable: true });
const kid = "test-key-1";
const nextKid = "test-key-2";
// Set once the provider has rotated to nextKey: /jwks then publishes it too.
let rotated = false;
const privateJwk = { ...(await jose.exportJWK(signingKey.privateKey)), kid, alg: "RS256", use: "sig" };

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// The client is registered as native only so that any loopback port matches;
// its consent is remembered like any first-party application's.
const policy = interactionPolicy.base();
policy.get("consent").checks.remove("native_client_prompt");

const provider = new Provider(issuer, {
  interactions: { policy },
  clients: config.clients.map((client) => ({
    application_type: "native",
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...client,
  })),
  jwks: { keys: [privateJwk] },
  cookies: { keys: ["a test provider's cookie key"] },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  // A provider's own applications need no consent of the person's: remember it.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid email profile");
    await grant.save();
    return grant;
  },
});

let tamper = null;

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString() || "{}");
}

provider.use(async (ctx, next) => {
  if (ctx.path === "/test/tamper" && ctx.method === "POST") {
    const asked = await readJson(ctx.req);
    if (asked.rotate) rotated = true;
    else tamper = asked;
    ctx.status = 204;
    return;
  }
  await next();
  if (rotated && ctx.path === "/jwks" && ctx.body?.keys) {
    const published = { ...(await jose.exportJWK(nextKey.publicKey)), kid: nextKid, alg: "RS256", use: "sig" };
    ctx.body = { keys: [...ctx.body.keys, published] };
  }
  if ((tamper || rotated) && ctx.path === "/token" && ctx.body?.id_token) {
    const claims = { ...jose.decodeJwt(ctx.body.id_token), ...tamper?.claims };
    let [key, keyId] = rotated ? [nextKey.privateKey, nextKid] : [signingKey.privateKey, kid];
    if (tamper?.foreign_key) [key, keyId] = [foreignKey.privateKey, "not-published"];
    ctx.body = {
      ...ctx.body,
      id_token: await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: "RS256", kid: keyId, typ: "JWT" })
        .sign(key),
    };
    tamper = null;
  }
});

server.on("request", provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
