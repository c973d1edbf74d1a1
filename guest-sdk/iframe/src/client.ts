/**
 * The client: one `StorageClient` per iframe session, `namespace(name)` for the calls. Every call
 * is one HTTP request to the gateway; semantics (revisions, limits, errors) are the gateway's.
 */
import {
  InternalError,
  InvalidInputError,
  RevisionConflictError,
  StorageError,
  UnavailableError,
  errorFromProblem,
  type Problem,
} from "./errors.js";
import type {
  BulkItem,
  Entry,
  Json,
  ListOptions,
  NamespaceSchema,
  Page,
  PutOptions,
  Usage,
  WriteResult,
} from "./types.js";

/** How the client reaches the gateway and gets its session token. */
export interface ClientOptions {
  /** The gateway's API base, e.g. `https://platform.example.com/api/ext-storage/v1`. */
  baseUrl: string;
  /**
   * Returns a fresh session token. Supplied by the host page (typically a `postMessage` round
   * trip to the platform); called at first use, when the token is about to expire, and once
   * more after a 401.
   */
  getToken: () => string | Promise<string>;
  /** A `fetch` implementation (defaults to the global one). */
  fetch?: typeof fetch;
  /** Refresh the token this many seconds before it expires (default 30). */
  refreshBeforeExpirySecs?: number;
}

/** Options of `Namespace.update` (the precondition is set by `update`). */
export interface UpdateOptions {
  /** Attempts before the last conflict is thrown (default 5). */
  maxAttempts?: number;
  /**
   * A new time to live. Without it the record keeps its expiry, to within about half a second
   * either way: the time left is reckoned on the gateway's clock (its `Date` header, which has
   * whole seconds), or on this browser's clock when the header cannot be read. Pass `ttlMs`
   * for an exact time to live.
   */
  ttlMs?: number;
  /** New metadata, `null` to remove it. Without it the record keeps its metadata. */
  metadata?: Json;
  /** The schema version this code was built for. */
  schemaVersion?: number;
}

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
}

/** A session's storage client. */
export class StorageClient {
  readonly #baseUrl: string;
  readonly #getToken: ClientOptions["getToken"];
  readonly #fetch: typeof fetch;
  readonly #refreshBeforeMs: number;
  #token: string | null = null;
  #tokenExpiresAtMs = 0;
  #tokenRequest: Promise<string> | null = null;

  constructor(options: ClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#getToken = options.getToken;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#refreshBeforeMs = (options.refreshBeforeExpirySecs ?? 30) * 1000;
  }

  /** The calls on one namespace. */
  namespace(name: string): Namespace {
    return new Namespace(this, name);
  }

  /** The install's usage against its quotas. */
  async usage(): Promise<Usage> {
    return (await this.request("GET", "/usage")).body as Usage;
  }

  /** @internal One request, with the token attached and refreshed once on a 401. */
  async request(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<Reply> {
    let reply = await this.#send(method, path, init, false);
    if (reply.status === 401) {
      reply = await this.#send(method, path, init, true);
    }
    if (reply.status >= 400) {
      throw toError(reply);
    }
    return reply;
  }

  async #send(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string> },
    forceRefresh: boolean,
  ): Promise<Reply> {
    const token = await this.#currentToken(forceRefresh);
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...init.headers };
    const request: RequestInit = { method, headers };
    if (init.body !== undefined) {
      headers["content-type"] = "application/json";
      request.body = JSON.stringify(init.body);
    }
    let response: Response;
    try {
      response = await this.#fetch(`${this.#baseUrl}${path}`, request);
    } catch (cause) {
      throw new UnavailableError("unavailable", `the gateway is unreachable: ${String(cause)}`, 0);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (cause) {
      throw new UnavailableError("unavailable", `the answer was cut off: ${String(cause)}`, 0);
    }
    let body: unknown = null;
    if (text.length > 0) {
      try {
        body = JSON.parse(text);
      } catch {
        if (response.status < 400) {
          // A web server answering for a path that is not the API (an app's catch-all page).
          throw new InternalError(
            "internal",
            `${method} ${path} was answered with a body that is not JSON: is ${this.#baseUrl} the gateway's API base?`,
            response.status,
          );
        }
        body = { code: response.status >= 500 ? "unavailable" : "internal", detail: text };
      }
    }
    return { status: response.status, headers: response.headers, body };
  }

  async #currentToken(forceRefresh: boolean): Promise<string> {
    const stale = Date.now() >= this.#tokenExpiresAtMs - this.#refreshBeforeMs;
    if (this.#token === null || forceRefresh || stale) {
      // Calls that need a token at the same time share one request to the host page; a failed
      // request is not kept, so the next call asks again.
      const request = (this.#tokenRequest ??= this.#fetchToken());
      try {
        return await request;
      } finally {
        if (this.#tokenRequest === request) this.#tokenRequest = null;
      }
    }
    return this.#token;
  }

  async #fetchToken(): Promise<string> {
    const token = await this.#getToken();
    this.#token = token;
    this.#tokenExpiresAtMs = tokenExpiryMs(token);
    return token;
  }
}

/** The calls on one namespace, mirroring the WIT functions. */
export class Namespace {
  readonly #client: StorageClient;
  /** The namespace's name. */
  readonly name: string;

  constructor(client: StorageClient, name: string) {
    this.#client = client;
    this.name = name;
  }

  /** The record at `key`, or `null` when absent or expired. */
  async get<T = Json>(key: string): Promise<Entry<T> | null> {
    return (await this.#read<T>(key))?.entry ?? null;
  }

  /** Writes `value` at `key` if the precondition in `options` holds. */
  async put<T = Json>(key: string, value: T, options: PutOptions = {}): Promise<WriteResult> {
    const headers: Record<string, string> = {};
    if (options.ifAbsent && options.ifRevision !== undefined) {
      throw new InvalidInputError("ifAbsent and ifRevision exclude each other", 0, undefined, "precondition");
    }
    if (options.ifAbsent) headers["if-none-match"] = "*";
    if (options.ifRevision !== undefined) headers["if-match"] = `"${options.ifRevision}"`;
    const body: Record<string, unknown> = { value };
    if (options.metadata !== undefined) body["metadata"] = options.metadata;
    if (options.ttlMs !== undefined) body["ttlMs"] = options.ttlMs;
    if (options.schemaVersion !== undefined) body["schemaVersion"] = options.schemaVersion;
    return (await this.#client.request("PUT", this.#record(key), { body, headers }))
      .body as WriteResult;
  }

  /** Deletes `key`; `true` when a record was deleted. With `ifRevision`, conflicts like a write. */
  async delete(key: string, options: { ifRevision?: number } = {}): Promise<boolean> {
    const headers: Record<string, string> = {};
    if (options.ifRevision !== undefined) headers["if-match"] = `"${options.ifRevision}"`;
    const reply = await this.#client.request("DELETE", this.#record(key), { headers });
    return (reply.body as { deleted: boolean }).deleted;
  }

  /** One page of records in key byte order. */
  async listPage<T = Json>(options: ListOptions = {}): Promise<Page<T>> {
    const query = new URLSearchParams();
    if (options.prefix !== undefined) query.set("prefix", options.prefix);
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.keysOnly) query.set("keysOnly", "true");
    const text = query.toString();
    const suffix = text.length > 0 ? `?${text}` : "";
    return (await this.#client.request("GET", `${this.#base()}/records${suffix}`)).body as Page<T>;
  }

  /** Every page of a listing, following cursors: `for await (const page of ns.list()) …`. */
  async *list<T = Json>(options: ListOptions = {}): AsyncGenerator<Page<T>, void, undefined> {
    let cursor = options.cursor;
    do {
      const page: Page<T> = await this.listPage<T>(
        cursor === undefined ? { ...options } : { ...options, cursor },
      );
      yield page;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** Writes every item atomically, or none; a failure's `item` names the failing item. */
  async bulkPut<T = Json>(items: BulkItem<T>[]): Promise<WriteResult[]> {
    const reply = await this.#client.request("POST", `${this.#base()}/bulk`, { body: { items } });
    return (reply.body as { results: WriteResult[] }).results;
  }

  /**
   * Read-modify-write with revisions: calls `change` with the current value (`undefined` when
   * absent) and writes its result on the condition that nobody wrote in between; on a conflict
   * it reads again and retries, at most `maxAttempts` times, then throws the last conflict. The
   * record keeps its metadata and expiry unless `options` gives new ones.
   */
  async update<T = Json>(
    key: string,
    change: (current: T | undefined) => T | Promise<T>,
    options: UpdateOptions = {},
  ): Promise<WriteResult> {
    const attempts = Math.max(1, options.maxAttempts ?? 5);
    let lastConflict: RevisionConflictError | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const read = await this.#read<T>(key);
      const current = read?.entry ?? null;
      const next = await change(current?.value);
      const put: PutOptions = current === null ? { ifAbsent: true } : { ifRevision: current.revision };
      if (options.ttlMs !== undefined) {
        put.ttlMs = options.ttlMs;
      } else if (read !== null && read.entry.expiresAtMs !== null) {
        // The time left now, after `change`: a record updated often does not drift later.
        put.ttlMs = Math.max(1, Math.round(read.entry.expiresAtMs - read.gatewayNowMs()));
      }
      if (options.metadata !== undefined) {
        put.metadata = options.metadata;
      } else if (current?.metadata != null) {
        put.metadata = current.metadata;
      }
      if (options.schemaVersion !== undefined) put.schemaVersion = options.schemaVersion;
      try {
        return await this.put(key, next, put);
      } catch (error) {
        if (!(error instanceof RevisionConflictError)) throw error;
        lastConflict = error;
      }
    }
    throw lastConflict;
  }

  /** The namespace's current JSON Schema, or `null` without one. */
  async schema(): Promise<NamespaceSchema | null> {
    try {
      return (await this.#client.request("GET", `${this.#base()}/schema`)).body as NamespaceSchema;
    } catch (error) {
      if (error instanceof StorageError && error.code === "not-found") return null;
      throw error;
    }
  }

  /**
   * The record at `key` and a reckoning of the gateway's clock from its answer on, or `null`
   * when absent or expired. The answer's `Date` header has whole seconds: the middle of that
   * second is taken, so kept expiries err by at most half a second, either way. Without the
   * header, this browser's clock is taken.
   */
  async #read<T>(key: string): Promise<{ entry: Entry<T>; gatewayNowMs: () => number } | null> {
    try {
      const reply = await this.#client.request("GET", this.#record(key));
      const answeredAt = performance.now();
      const date = Date.parse(reply.headers.get("date") ?? "");
      const then = Number.isNaN(date) ? Date.now() : date + 500;
      return { entry: reply.body as Entry<T>, gatewayNowMs: () => then + performance.now() - answeredAt };
    } catch (error) {
      if (error instanceof StorageError && error.code === "not-found") return null;
      throw error;
    }
  }

  #base(): string {
    return `/namespaces/${encodeSegment(this.name, "namespace")}`;
  }

  #record(key: string): string {
    return `${this.#base()}/records/${encodeSegment(key, "key")}`;
  }
}

/**
 * Percent-encodes one path segment. URLs normalise the segments `.` and `..` (even encoded), so
 * those two keys cannot be addressed by a record URL: refused here rather than sent elsewhere.
 */
function encodeSegment(text: string, field: string): string {
  if (text.length === 0) {
    // An empty segment matches no route: refused here with the error the WIT call gives.
    throw new InvalidInputError(`the ${field} is empty`, 0, undefined, field);
  }
  if (text === "." || text === "..") {
    throw new InvalidInputError(`the ${field} ${JSON.stringify(text)} cannot be addressed in a URL`, 0, undefined, field);
  }
  try {
    return encodeURIComponent(text);
  } catch {
    throw new InvalidInputError(`the ${field} is not valid UTF-16 text`, 0, undefined, field);
  }
}

/** The `exp` of a JWT in milliseconds (0 when unreadable: refresh on every call). */
function tokenExpiryMs(token: string): number {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

function toError(reply: Reply): StorageError {
  const body = reply.body as Partial<Problem> | null;
  if (body && typeof body.code === "string") {
    return errorFromProblem(body as Problem, reply.status);
  }
  const code = reply.status >= 500 ? "unavailable" : "internal";
  const problem: Problem = {
    type: "about:blank",
    title: `HTTP ${reply.status}`,
    status: reply.status,
    code,
    detail: `unexpected HTTP ${reply.status} without a problem document`,
  };
  return errorFromProblem(problem, reply.status);
}
