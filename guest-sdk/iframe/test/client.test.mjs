// The iframe SDK against the real gateway (and PostgreSQL behind it).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CapabilityDeniedError,
  InternalError,
  InvalidInputError,
  NoRouteError,
  NotFoundError,
  RevisionConflictError,
  SchemaMismatchError,
  StorageClient,
  StorageError,
  UnauthenticatedError,
  UnavailableError,
  ValidationFailedError,
} from "../dist/index.js";
import { freshClient, gatewayUrl, mint } from "./support.mjs";

test("put, get and delete follow revisions", async () => {
  const notes = freshClient().namespace("notes");
  assert.equal(await notes.get("n1"), null);
  const first = await notes.put("n1", { text: "hello" }, { metadata: { by: "node" } });
  assert.deepEqual(first, { key: "n1", revision: 1, created: true });
  const second = await notes.put("n1", { text: "hi" }, { ifRevision: 1 });
  assert.equal(second.revision, 2);
  const entry = await notes.get("n1");
  assert.deepEqual(entry.value, { text: "hi" });
  assert.equal(entry.metadata, null, "an overwrite without metadata clears it");
  assert.equal(entry.revision, 2);

  await assert.rejects(notes.put("n1", 1, { ifAbsent: true }), (error) => {
    assert.ok(error instanceof RevisionConflictError);
    assert.equal(error.code, "revision-conflict");
    assert.equal(error.status, 412);
    assert.equal(error.currentRevision, 2);
    return true;
  });
  await assert.rejects(notes.delete("n1", { ifRevision: 1 }), RevisionConflictError);
  assert.equal(await notes.delete("n1", { ifRevision: 2 }), true);
  assert.equal(await notes.delete("n1"), false);
  assert.equal(await notes.get("n1"), null);
});

test("keys with reserved characters round-trip; '.' and '..' are refused locally", async () => {
  const ns = freshClient().namespace("keys");
  for (const key of ["a/b", "a b?c#d&e", "ünï ✓", "100%", "a+b", "%2e%2e"]) {
    await ns.put(key, key);
    assert.equal((await ns.get(key)).value, key);
  }
  for (const key of [".", ".."]) {
    await assert.rejects(ns.put(key, 1), (error) => error instanceof InvalidInputError && error.field === "key");
  }
});

test("list iterates every page in key order; keys-only omits values", async () => {
  const ns = freshClient().namespace("pages");
  for (let start = 0; start < 250; start += 100) {
    const items = [];
    for (let i = start; i < Math.min(start + 100, 250); i++) {
      items.push({ key: `k${String(i).padStart(3, "0")}`, value: { i } });
    }
    await ns.bulkPut(items);
  }
  const sizes = [];
  const keys = [];
  for await (const page of ns.list({ limit: 100 })) {
    sizes.push(page.entries.length);
    for (const entry of page.entries) {
      assert.equal(entry.value.i, keys.length);
      keys.push(entry.key);
    }
  }
  assert.deepEqual(sizes, [100, 100, 50]);
  const prefixed = await ns.listPage({ prefix: "k24", keysOnly: true });
  assert.deepEqual(prefixed.entries.map((e) => e.key), ["k240", "k241", "k242", "k243", "k244", "k245", "k246", "k247", "k248", "k249"]);
  assert.equal(prefixed.entries[0].value, undefined);
  assert.ok(!("metadata" in prefixed.entries[0]), "keys-only omits metadata");
  assert.equal(prefixed.nextCursor, null);
});

test("bulkPut is atomic and names the failing item", async () => {
  const ns = freshClient().namespace("bulk");
  await ns.put("taken", 0);
  await assert.rejects(
    ns.bulkPut([
      { key: "a", value: 1 },
      { key: "taken", value: 2, ifAbsent: true },
    ]),
    (error) => error instanceof RevisionConflictError && error.item === 1 && error.status === 409,
  );
  assert.equal(await ns.get("a"), null);
  const results = await ns.bulkPut([{ key: "a", value: 1, ttlMs: 60000 }, { key: "taken", value: 3, ifRevision: 1 }]);
  assert.deepEqual(results.map((r) => r.revision), [1, 2]);
  assert.ok((await ns.get("a")).expiresAtMs > Date.now());
});

test("update retries conflicts up to its bound and loses no increment", async () => {
  const counter = freshClient().namespace("counters");
  const writers = 8;
  await Promise.all(
    Array.from({ length: writers }, () => counter.update("c", (n) => (n ?? 0) + 1, { maxAttempts: writers })),
  );
  const entry = await counter.get("c");
  assert.equal(entry.value, writers);
  assert.equal(entry.revision, writers);

  // A change function that always races: the bound is reached and the conflict thrown.
  let calls = 0;
  await assert.rejects(
    counter.update(
      "c",
      async (n) => {
        calls += 1;
        await counter.put("c", -1);
        return n + 1;
      },
      { maxAttempts: 3 },
    ),
    RevisionConflictError,
  );
  assert.equal(calls, 3);
});

test("update keeps the record's metadata and expiry unless told otherwise", async () => {
  const ns = freshClient().namespace("leases");
  await ns.put("l", 1, { ttlMs: 600000, metadata: { by: "node" } });
  const before = await ns.get("l");
  await ns.update("l", (n) => n + 1);
  const kept = await ns.get("l");
  assert.deepEqual([kept.value, kept.metadata, kept.revision], [2, { by: "node" }, 2]);
  const moved = kept.expiresAtMs - before.expiresAtMs;
  assert.ok(Math.abs(moved) <= 1500, `the expiry moved by ${moved} ms`);

  await ns.update("l", (n) => n + 1, { ttlMs: 1000000, metadata: { by: "other" } });
  const replaced = await ns.get("l");
  assert.deepEqual(replaced.metadata, { by: "other" });
  assert.ok(replaced.expiresAtMs - before.expiresAtMs > 300000);
  await ns.update("l", (n) => n + 1, { metadata: null });
  assert.equal((await ns.get("l")).metadata, null, "null removes the metadata");

  await ns.put("forever", 1);
  await ns.update("forever", (n) => n + 1);
  const forever = await ns.get("forever");
  assert.deepEqual([forever.value, forever.expiresAtMs, forever.metadata], [2, null, null]);
});

test("an empty key or namespace is refused locally; a wrong base URL is not an empty store", async () => {
  const client = freshClient();
  await assert.rejects(client.namespace("ns").get(""), (error) => error instanceof InvalidInputError && error.field === "key");
  await assert.rejects(client.namespace("ns").put("", 1), (error) => error instanceof InvalidInputError && error.field === "key");
  await assert.rejects(client.namespace("").get("k"), (error) => error instanceof InvalidInputError && error.field === "namespace");

  const wrongBase = new StorageClient({ baseUrl: gatewayUrl().replace(/\/v1$/, ""), getToken: () => mint() });
  await assert.rejects(wrongBase.namespace("ns").get("k"), (error) => {
    assert.ok(error instanceof NoRouteError, `${error}`);
    assert.equal(error.status, 404);
    return true;
  });
  await assert.rejects(wrongBase.namespace("ns").schema(), NoRouteError);
});

test("answers that are not the gateway's are errors, not data", async () => {
  const answering = (response) =>
    new StorageClient({ baseUrl: "https://app.example/api", getToken: () => mint(), fetch: async () => response() });
  const page = answering(() => new Response("<!doctype html><p>app</p>", { status: 200 }));
  await assert.rejects(page.namespace("ns").get("k"), (error) => {
    assert.ok(error instanceof InternalError, `${error}`);
    assert.match(error.message, /not JSON/);
    return true;
  });
  const cut = answering(
    () => new Response(new ReadableStream({ start: (controller) => controller.error(new Error("reset")) }), { status: 200 }),
  );
  await assert.rejects(cut.namespace("ns").get("k"), (error) => error instanceof UnavailableError && error.status === 0);
});

test("errors are typed like the WIT variant", async () => {
  const client = freshClient();
  await assert.rejects(client.namespace("Bad!").get("k"), (error) => {
    assert.ok(error instanceof InvalidInputError);
    assert.ok(error instanceof StorageError);
    assert.equal(error.field, "namespace");
    assert.equal(error.status, 400);
    return true;
  });
  await assert.rejects(client.namespace("ns").put("k", 1, { ttlMs: 0 }), InvalidInputError);
  const typedInstall = process.env.ALGA_TYPED_INSTALL;
  const typed = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: () => mint({ install: typedInstall }),
  }).namespace("typed");
  await assert.rejects(typed.put("k", { n: "one" }), (error) => {
    assert.ok(error instanceof ValidationFailedError);
    assert.equal(error.status, 422);
    assert.deepEqual(error.violations.map((v) => v.instancePath), ["/n"]);
    return true;
  });
  await assert.rejects(typed.put("k", { n: 1 }, { schemaVersion: 9 }), (error) => {
    assert.ok(error instanceof SchemaMismatchError);
    assert.equal(error.expected, 9);
    assert.equal(error.current, 1);
    return true;
  });
  assert.equal((await typed.schema()).version, 1);
  assert.equal(await client.namespace("untyped").schema(), null);
});

test("read-only sessions read and cannot write", async () => {
  const install = "install-read-only-" + Date.now();
  const writer = new StorageClient({ baseUrl: gatewayUrl(), getToken: () => mint({ install }) });
  await writer.namespace("ns").put("k", "v");
  const reader = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: () => mint({ install, caps: ["alga.storage.read"] }),
  }).namespace("ns");
  assert.equal((await reader.get("k")).value, "v");
  await assert.rejects(reader.put("k", "w"), (error) => error instanceof CapabilityDeniedError && error.status === 403);
  await assert.rejects(reader.delete("k"), CapabilityDeniedError);
  const usage = await writer.usage();
  assert.equal(usage.namespaces.used, 1);
  assert.equal(usage.perNamespace[0].namespace, "ns");
});

test("tokens are refreshed through the host page's callback", async () => {
  const install = "install-refresh-" + Date.now();
  let calls = 0;
  // First a token that looks fresh to the client but that the gateway refuses (its lifetime is
  // longer than allowed), then good ones: one 401 → one refresh → success.
  const client = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: () => {
      calls += 1;
      const now = Math.floor(Date.now() / 1000);
      return calls === 1 ? mint({ install, exp: now + 7200 }) : mint({ install });
    },
  });
  await client.namespace("ns").put("k", 1);
  assert.equal(calls, 2);
  await client.namespace("ns").get("k");
  assert.equal(calls, 2, "a valid token is reused");

  // A callback that throws (synchronously) fails that call only: the next one asks again.
  let throwing = 0;
  const flaky = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: () => {
      throwing += 1;
      if (throwing === 1) throw new Error("host page not ready");
      return mint({ install });
    },
  });
  await assert.rejects(flaky.namespace("ns").get("k"), /host page not ready/);
  assert.equal((await flaky.namespace("ns").get("k")).value, 1);
  assert.equal(throwing, 2);

  // Calls made together before any token is known ask the host page once.
  let together = 0;
  const starting = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: async () => {
      together += 1;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return mint({ install });
    },
  });
  const values = await Promise.all(["k", "k", "k", "k"].map((key) => starting.namespace("ns").get(key)));
  assert.deepEqual(values.map((entry) => entry.value), [1, 1, 1, 1]);
  assert.equal(together, 1);

  // A token about to expire is replaced before use.
  let soon = 0;
  const expiring = new StorageClient({
    baseUrl: gatewayUrl(),
    getToken: () => {
      soon += 1;
      const now = Math.floor(Date.now() / 1000);
      return mint({ install, exp: now + 10 });
    },
  });
  await expiring.namespace("ns").get("k");
  await expiring.namespace("ns").get("k");
  assert.equal(soon, 2);

  // A callback that keeps failing ends in UnauthenticatedError after one retry.
  let bad = 0;
  const refused = new StorageClient({ baseUrl: gatewayUrl(), getToken: () => (bad += 1, "not-a-token") });
  await assert.rejects(refused.namespace("ns").get("k"), UnauthenticatedError);
  assert.equal(bad, 2);
});

test("another tenant's token never reaches this tenant's data", async () => {
  const install = "install-shared-id";
  const a = new StorageClient({ baseUrl: gatewayUrl(), getToken: () => mint({ tenant: "tenant-a", install }) });
  const b = new StorageClient({ baseUrl: gatewayUrl(), getToken: () => mint({ tenant: "tenant-b", install }) });
  await a.namespace("ns").put("secret", "a's");
  assert.equal(await b.namespace("ns").get("secret"), null);
  assert.deepEqual((await b.namespace("ns").listPage()).entries, []);
  await assert.rejects(
    new StorageClient({ baseUrl: gatewayUrl(), getToken: () => mint({ tenant: "tenant-a", install, aud: "other" }) })
      .namespace("ns")
      .get("secret"),
    UnauthenticatedError,
  );
  assert.ok(NotFoundError);
});
