/** Plain data of the contract, mirroring the WIT records (camelCase). */

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A stored record. `value` and `metadata` are absent in keys-only listings. */
export interface Entry<T = Json> {
  key: string;
  value?: T;
  metadata?: Json | null;
  /** 1 on first write, +1 on every write. */
  revision: number;
  schemaVersion: number | null;
  expiresAtMs: number | null;
  createdAtMs: number;
  updatedAtMs: number;
}

/** Options of one write. `ifAbsent` and `ifRevision` exclude each other. */
export interface PutOptions {
  /** Write only if the key is absent (or expired). */
  ifAbsent?: boolean;
  /** Write only if the key is at exactly this revision. */
  ifRevision?: number;
  /** Time to live in milliseconds. */
  ttlMs?: number;
  /** JSON stored beside the value (≤ 4 KiB). */
  metadata?: Json;
  /** The schema version this code was built for. */
  schemaVersion?: number;
}

/** The outcome of a successful write. */
export interface WriteResult {
  key: string;
  revision: number;
  created: boolean;
}

/** One item of a bulk put. */
export interface BulkItem<T = Json> extends PutOptions {
  key: string;
  value: T;
}

/** A list request. */
export interface ListOptions {
  /** Only keys starting with this string (matched literally). */
  prefix?: string;
  /** Page size (1–1000, default 100). */
  limit?: number;
  /** Return keys and revisions only. */
  keysOnly?: boolean;
  /** Start after this cursor (a previous page's `nextCursor`). */
  cursor?: string;
}

/** One page of a listing. */
export interface Page<T = Json> {
  entries: Entry<T>[];
  nextCursor: string | null;
}

/** Usage against one limit. */
export interface QuotaUsage {
  used: number;
  limit: number;
}

/** The install's usage against its quotas. */
export interface Usage {
  namespaces: QuotaUsage;
  totalBytes: QuotaUsage;
  perNamespace: { namespace: string; keys: QuotaUsage; bytes: number }[];
}

/** A namespace's current JSON Schema. */
export interface NamespaceSchema {
  version: number;
  document: Json;
}
