//! The seam between the storage service and a storage engine. A backend owns its SQL and the
//! atomicity of each operation, and nothing else: every rule (validation, capability, quotas to
//! apply, TTL arithmetic) is decided by the service before a backend is called.

pub mod postgres;
pub mod sqlite;

use std::time::SystemTime;

use async_trait::async_trait;

use crate::context::CallContext;
use crate::error::{BulkError, StorageError};
use crate::limits::Limits;
use crate::model::{AuditRecord, Precondition, Record, WriteResult};

/// One record to write, already validated by the service.
#[derive(Debug, Clone)]
pub struct WriteItem<'a> {
    /// The key.
    pub key: &'a str,
    /// The JSON value as text.
    pub value: &'a str,
    /// JSON metadata as text.
    pub metadata: Option<&'a str>,
    /// The condition on the key's current state.
    pub precondition: Precondition,
    /// When the record expires.
    pub expires_at: Option<SystemTime>,
    /// Bytes charged to the quotas: key + value + metadata.
    pub size_bytes: u64,
}

/// Writes into one namespace that must commit together or not at all.
#[derive(Debug, Clone)]
pub struct WriteBatch<'a> {
    /// The namespace written.
    pub namespace: &'a str,
    /// The items, in the caller's order; keys are distinct.
    pub items: Vec<WriteItem<'a>>,
    /// The time of the write (records' timestamps, TTL comparisons).
    pub now: SystemTime,
    /// The install's limits; the backend enforces the quotas in the write's transaction.
    pub limits: Limits,
    /// Expired records of the namespace to delete in the same transaction, at most.
    pub sweep_limit: u32,
    /// The schema version every value was validated against (`None`: the namespace had none).
    /// The backend refuses the write with `schema-mismatch` if the namespace's current version
    /// differs, so a stale cache can never let a write bypass the current schema.
    pub schema_version: Option<u32>,
}

/// A registered schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// Its version (1 for a namespace's first).
    pub version: u32,
    /// The JSON Schema document, as text.
    pub document: String,
}

/// The bytes a record is charged against the quotas: key, value and metadata text (what the
/// service charges a write; restores charge the same).
pub fn record_size(record: &Record) -> usize {
    record.key.len()
        + record.value.as_ref().map_or(0, String::len)
        + record.metadata.as_ref().map_or(0, String::len)
}

/// A page request of an install's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRange {
    /// Rows at or after this time.
    pub since: Option<SystemTime>,
    /// Rows before this time.
    pub until: Option<SystemTime>,
    /// Rows strictly after this `(occurred_at, id)` position.
    pub after: Option<(SystemTime, i64)>,
    /// Most rows to return.
    pub limit: u32,
}

/// A connection pool's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections the pool opens.
    pub max_size: usize,
    /// Connections open.
    pub size: usize,
    /// Connections open and idle.
    pub available: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// How a write moved the install's counters (after the write, and by how much).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterChange {
    /// Records in the written namespace.
    pub namespace_keys: u64,
    /// Change of `namespace_keys`.
    pub namespace_keys_delta: i64,
    /// Bytes across the install.
    pub total_bytes: u64,
    /// Change of `total_bytes`.
    pub total_bytes_delta: i64,
    /// Namespaces holding records.
    pub namespaces: u64,
    /// Change of `namespaces`.
    pub namespaces_delta: i64,
}

/// The outcome of an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// One result per item, in item order.
    pub results: Vec<WriteResult>,
    /// The counters after the write; `None` when the write changed none (same-size overwrite).
    pub counters: Option<CounterChange>,
}

/// Which counter a drift concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftScope {
    /// A namespace's keys and bytes.
    Namespace(String),
    /// The install's totals: "keys" are namespaces holding records, "bytes" all bytes.
    Install,
}

/// A counter that differs from what the records give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDrift {
    /// Which counter.
    pub scope: DriftScope,
    /// Keys (namespaces for the install) as counted.
    pub counted_keys: i64,
    /// Keys (namespaces for the install) as stored.
    pub actual_keys: i64,
    /// Bytes as counted.
    pub counted_bytes: i64,
    /// Bytes as stored.
    pub actual_bytes: i64,
}

/// A page request with the key range already computed by the service.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// The namespace listed.
    pub namespace: &'a str,
    /// Only keys strictly after this one (from the cursor).
    pub after: Option<&'a str>,
    /// Only keys `>=` this one (the prefix).
    pub from: Option<&'a str>,
    /// Only keys `<` this one (the prefix's successor).
    pub until: Option<&'a str>,
    /// Rows to fetch.
    pub limit: u32,
    /// Fetch keys and revisions only.
    pub keys_only: bool,
    /// Records that expired by this time are skipped.
    pub now: SystemTime,
}

/// Stored counters of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceCounters {
    /// The namespace.
    pub namespace: String,
    /// Stored records.
    pub keys: u64,
    /// Stored bytes.
    pub bytes: u64,
}

/// A storage engine. Every method is scoped by `ctx.tenant_id` and `ctx.install_id`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The record at `key`, unless absent or expired at `now`.
    async fn get(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Record>, StorageError>;

    /// Applies every item of `batch` atomically, with its precondition, the quotas, counters,
    /// audit rows and a TTL sweep of the namespace.
    async fn put(
        &self,
        ctx: &CallContext,
        batch: &WriteBatch<'_>,
    ) -> Result<WriteOutcome, BulkError>;

    /// Deletes `key` if `precondition` holds, and sweeps up to `sweep_limit` expired records of
    /// the namespace; true when a live record was deleted.
    async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
        now: SystemTime,
        sweep_limit: u32,
    ) -> Result<bool, StorageError>;

    /// Up to `query.limit` live records in key byte order.
    async fn list(
        &self,
        ctx: &CallContext,
        query: &ListQuery<'_>,
    ) -> Result<Vec<Record>, StorageError>;

    /// The install's live usage (records expired by `now` excluded, swept or not), per namespace
    /// holding live records, in namespace order.
    async fn usage(
        &self,
        ctx: &CallContext,
        now: SystemTime,
    ) -> Result<Vec<NamespaceCounters>, StorageError>;

    /// The namespace's current (highest) schema version, if it has one.
    async fn current_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
    ) -> Result<Option<StoredSchema>, StorageError>;

    /// Registers `document` as the namespace's next schema version (with an audit row) and
    /// returns the version.
    async fn register_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
        now: SystemTime,
    ) -> Result<u32, StorageError>;

    /// Compares the install's counters with its records; with `apply`, repairs them (with audit
    /// rows). Returns the counters that differed.
    async fn recount(
        &self,
        ctx: &CallContext,
        apply: bool,
        now: SystemTime,
    ) -> Result<Vec<CounterDrift>, StorageError>;

    /// Up to `range.limit` audit rows of `ctx`'s install in `(occurred_at, id)` order.
    async fn audit_page(
        &self,
        ctx: &CallContext,
        range: &AuditRange,
    ) -> Result<Vec<AuditRecord>, StorageError>;

    /// Tenants holding audit rows older than `before` (for retention, tenant by tenant).
    async fn audit_tenants_before(&self, before: SystemTime) -> Result<Vec<String>, StorageError>;

    /// Deletes at most `batch` of `tenant_id`'s audit rows older than `before`, in no set order
    /// (a retention pass deletes them all; sorting every old row per batch would cost more than
    /// the batch); returns how many it deleted.
    async fn prune_audit(
        &self,
        tenant_id: &str,
        before: SystemTime,
        batch: u32,
    ) -> Result<u64, StorageError>;

    /// Tenants with audit rows the relay has not shipped yet.
    async fn unrelayed_tenants(&self) -> Result<Vec<String>, StorageError>;

    /// The oldest `limit` audit rows of `tenant_id` not shipped yet, in `(occurred_at, id)` order.
    async fn unrelayed(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError>;

    /// Marks `ids` of `tenant_id` as shipped at `now`.
    async fn mark_relayed(
        &self,
        tenant_id: &str,
        ids: &[i64],
        now: SystemTime,
    ) -> Result<(), StorageError>;

    /// Every schema version of the install: (namespace, schema), by namespace then version.
    async fn schema_versions(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError>;

    /// Restores `records` into the namespace exactly as given (revision, schema version,
    /// expiry, timestamps), replacing records with the same keys, with an `import` audit row
    /// each, in one transaction. Counters are left alone: the caller recounts afterwards.
    async fn restore_records(
        &self,
        ctx: &CallContext,
        namespace: &str,
        records: &[Record],
        now: SystemTime,
    ) -> Result<(), StorageError>;

    /// Restores a schema version unless the namespace already has that version; true when it
    /// was added.
    async fn restore_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        schema: &StoredSchema,
        now: SystemTime,
    ) -> Result<bool, StorageError>;

    /// The connection pool's state, for metrics; `None` when the backend has no pool.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}
