// Test support: the gateway under test (started by the Rust test `iframe_sdk.rs`, which passes
// its address and signing key in the environment) and HS256 tokens minted with node:crypto, as
// a platform would mint them.
import { createHmac, randomUUID } from "node:crypto";
import { StorageClient } from "../dist/index.js";

function need(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run from the Rust test iframe_sdk.rs (scripts/test.sh)`);
  }
  return value;
}

export const gatewayUrl = () => need("ALGA_GATEWAY_URL");
const keyId = () => need("ALGA_TOKEN_KEY_ID");
const keySecret = () => Buffer.from(need("ALGA_TOKEN_KEY_SECRET"), "base64url");
const audience = () => need("ALGA_AUDIENCE");

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A signed session token; `overrides` replace claims. */
export function mint(overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    aud: audience(),
    sub: "node-user",
    tenant: "node-tenant",
    install: `install-${randomUUID()}`,
    extension: "node-ext",
    caps: ["alga.storage"],
    iat: now,
    exp: now + 300,
    ...overrides,
  };
  const input = `${b64({ alg: "HS256", typ: "JWT", kid: keyId() })}.${b64(claims)}`;
  const signature = createHmac("sha256", keySecret()).update(input).digest("base64url");
  return `${input}.${signature}`;
}

/** A client for a fresh install (its own data), with an optional claim override. */
export function freshClient(overrides = {}) {
  const install = `install-${randomUUID()}`;
  const token = mint({ install, ...overrides });
  return new StorageClient({ baseUrl: gatewayUrl(), getToken: () => token });
}
