/**
 * alga-storage for extension iframes.
 *
 * ```ts
 * import { StorageClient } from "@alga/storage-iframe";
 * const storage = new StorageClient({
 *   baseUrl: "https://platform.example.com/api/ext-storage/v1",
 *   getToken: () => askHostPageForToken(), // called again when the token nears expiry
 * });
 * const notes = storage.namespace("notes");
 * await notes.put("n1", { text: "hello" });
 * const entry = await notes.get("n1");
 * ```
 */
export { StorageClient, Namespace } from "./client.js";
export type { ClientOptions, UpdateOptions } from "./client.js";
export * from "./errors.js";
export type * from "./types.js";
