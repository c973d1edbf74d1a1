//! Plain data types of the storage contract, shared by the service, the backends and the
//! entry points (wasm, HTTP, CLI).

use std::time::{Duration, SystemTime};

/// The condition a write requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Write unconditionally.
    #[default]
    None,
    /// The key must be absent (or expired).
    Absent,
    /// The key must exist at exactly this revision.
    Revision(u64),
}

/// Options of one write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The condition the key must meet.
    pub precondition: Precondition,
    /// Time to live from the write; `None` keeps the record until deleted.
    pub ttl: Option<Duration>,
    /// JSON metadata stored beside the value.
    pub metadata: Option<String>,
    /// The schema version the writer was built for.
    pub schema_version: Option<u32>,
}

/// One item of a bulk put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem {
    /// The key.
    pub key: String,
    /// The JSON value as text.
    pub value: String,
    /// The item's options.
    pub options: PutOptions,
}

/// A stored record as returned by reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The JSON value; `None` in keys-only listings.
    pub value: Option<String>,
    /// The JSON metadata, if any (`None` in keys-only listings).
    pub metadata: Option<String>,
    /// 1 on first write, +1 on every write.
    pub revision: u64,
    /// The schema version the value was validated against.
    pub schema_version: Option<u32>,
    /// When the record expires.
    pub expires_at: Option<SystemTime>,
    /// When the record was first written.
    pub created_at: SystemTime,
    /// When the record was last written.
    pub updated_at: SystemTime,
}

/// The outcome of one successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// The key written.
    pub key: String,
    /// Its new revision.
    pub revision: u64,
    /// Whether the write created the key.
    pub created: bool,
}

/// A `list` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this string (matched literally).
    pub prefix: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size; `None` is the default.
    pub limit: Option<u32>,
    /// Return keys and revisions only.
    pub keys_only: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Records in byte order of keys.
    pub entries: Vec<Record>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Usage against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// What is used.
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

/// Usage of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// The namespace.
    pub namespace: String,
    /// Stored keys against the per-namespace key quota.
    pub keys: QuotaUsage,
    /// Bytes stored in the namespace.
    pub bytes: u64,
}

/// An install's usage against its quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Namespaces holding records.
    pub namespaces: QuotaUsage,
    /// Bytes stored by the install.
    pub total_bytes: QuotaUsage,
    /// Per-namespace usage in namespace order.
    pub per_namespace: Vec<NamespaceUsage>,
}

/// One audit row: a committed mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row id, unique within the tenant (with `occurred_at`, the paging order).
    pub id: i64,
    /// The tenant.
    pub tenant_id: String,
    /// The install.
    pub install_id: String,
    /// The install's extension.
    pub extension_id: String,
    /// The namespace (`None` for install-wide rows such as a counter repair).
    pub namespace: Option<String>,
    /// The key (`None` for namespace-wide rows such as a schema registration).
    pub key: Option<String>,
    /// `put`, `delete`, `expire`, `schema-register` or `counter-repair`.
    pub operation: String,
    /// Who acted: a user, `system:ttl`, `operator:…`, or the install.
    pub actor: String,
    /// The record's revision after the mutation (the schema version for registrations).
    pub revision: Option<u64>,
    /// Bytes written, freed or corrected.
    pub bytes: Option<i64>,
    /// The request the mutation belonged to.
    pub request_id: Option<String>,
    /// When the host accepted the operation, by its clock (taken before the write commits, so
    /// rows do not commit in this order; see "Audit trail" in `docs/operations.md`).
    pub occurred_at: SystemTime,
}

/// Which audit rows of an install to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Rows at or after this time.
    pub since: Option<SystemTime>,
    /// Rows before this time.
    pub until: Option<SystemTime>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size; `None` is the default.
    pub limit: Option<u32>,
}

/// A page of audit rows in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The rows, oldest first.
    pub records: Vec<AuditRecord>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}
