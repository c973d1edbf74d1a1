//! The seam between the storage service and a storage engine. A backend owns its SQL and the
//! atomicity of each operation, and nothing else: every rule (validation, capability, quotas to
//! apply, TTL arithmetic) is decided by the service before a backend is called.

pub mod postgres;

use std::time::SystemTime;

use async_trait::async_trait;

use crate::context::CallContext;
use crate::error::{BulkError, StorageError};
use crate::limits::Quotas;
use crate::model::{Precondition, Record, WriteResult};

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
    /// The schema version the value was validated against.
    pub schema_version: Option<u32>,
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
    /// The quotas to enforce in the write's transaction.
    pub quotas: Quotas,
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

    /// Applies every item of `batch` atomically, with its precondition, counters and audit rows.
    async fn put(
        &self,
        ctx: &CallContext,
        batch: &WriteBatch<'_>,
    ) -> Result<Vec<WriteResult>, BulkError>;

    /// Deletes `key` if `precondition` holds; true when a live record was deleted.
    async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
        now: SystemTime,
    ) -> Result<bool, StorageError>;

    /// Up to `query.limit` live records in key byte order.
    async fn list(
        &self,
        ctx: &CallContext,
        query: &ListQuery<'_>,
    ) -> Result<Vec<Record>, StorageError>;

    /// The install's counters, per namespace holding records, in namespace order.
    async fn usage(&self, ctx: &CallContext) -> Result<Vec<NamespaceCounters>, StorageError>;
}
