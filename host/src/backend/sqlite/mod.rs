//! The embedded default store: SQLite (bundled) in one file, for local runs and small
//! installations without a database server. Same semantics as PostgreSQL — revisions and
//! preconditions, atomic bulk writes, byte-order keyset listing, TTL with opportunistic sweeps,
//! counter-based quotas, audit rows in the mutation's transaction, schemas — proven by running
//! the conformance suite against both.
//!
//! One connection behind a mutex: SQLite has a single writer anyway, and an operation is a
//! short local transaction, so it runs on the calling task rather than hopping to a blocking
//! pool.

mod read;
mod write;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::Connection;

use crate::backend::{
    AuditRange, Backend, CounterDrift, ListQuery, NamespaceCounters, StoredSchema, WriteBatch,
    WriteOutcome,
};
use crate::context::CallContext;
use crate::error::{BulkError, StorageError};
use crate::model::{AuditRecord, Precondition, Record};

/// The schema version this code creates (`PRAGMA user_version`).
const SCHEMA_VERSION: i32 = 1;

/// The embedded backend. Cheap to clone.
#[derive(Clone)]
pub struct SqliteBackend {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteBackend")
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the store in the file at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path).map_err(db_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_error)?;
        Self::init(conn)
    }

    /// A store in memory (tests, throwaway runs).
    pub fn in_memory() -> Result<Self, StorageError> {
        Self::init(Connection::open_in_memory().map_err(db_error)?)
    }

    fn init(conn: Connection) -> Result<Self, StorageError> {
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db_error)?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_error)?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::Internal(format!(
                "the store was written by a newer alga-storage (schema {version}, this one knows {SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(include_str!("schema.sql"))
            .map_err(db_error)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_error)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction (it rolls back on drop).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn schema_versions(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError> {
        read::schema_versions(&self.lock(), ctx)
    }

    async fn restore_records(
        &self,
        ctx: &CallContext,
        namespace: &str,
        records: &[Record],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        write::restore_records(&mut self.lock(), ctx, namespace, records, now)
    }

    async fn restore_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        schema: &StoredSchema,
        now: SystemTime,
    ) -> Result<bool, StorageError> {
        write::restore_schema(&mut self.lock(), ctx, namespace, schema, now)
    }

    async fn get(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Record>, StorageError> {
        read::get(&self.lock(), ctx, namespace, key, now)
    }

    async fn put(
        &self,
        ctx: &CallContext,
        batch: &WriteBatch<'_>,
    ) -> Result<WriteOutcome, BulkError> {
        write::put(&mut self.lock(), ctx, batch)
    }

    async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
        now: SystemTime,
        sweep_limit: u32,
    ) -> Result<bool, StorageError> {
        write::delete(
            &mut self.lock(),
            ctx,
            namespace,
            key,
            precondition,
            now,
            sweep_limit,
        )
    }

    async fn list(
        &self,
        ctx: &CallContext,
        query: &ListQuery<'_>,
    ) -> Result<Vec<Record>, StorageError> {
        read::list(&self.lock(), ctx, query)
    }

    async fn usage(
        &self,
        ctx: &CallContext,
        now: SystemTime,
    ) -> Result<Vec<NamespaceCounters>, StorageError> {
        read::usage(&self.lock(), ctx, now)
    }

    async fn current_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
    ) -> Result<Option<StoredSchema>, StorageError> {
        read::current_schema(&self.lock(), ctx, namespace)
    }

    async fn register_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
        now: SystemTime,
    ) -> Result<u32, StorageError> {
        write::register_schema(&mut self.lock(), ctx, namespace, document, now)
    }

    async fn recount(
        &self,
        ctx: &CallContext,
        apply: bool,
        now: SystemTime,
    ) -> Result<Vec<CounterDrift>, StorageError> {
        write::recount(&mut self.lock(), ctx, apply, now)
    }

    async fn audit_page(
        &self,
        ctx: &CallContext,
        range: &AuditRange,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        read::audit_page(&self.lock(), ctx, range)
    }

    async fn audit_tenants_before(&self, before: SystemTime) -> Result<Vec<String>, StorageError> {
        read::tenants(
            &self.lock(),
            "SELECT DISTINCT tenant_id FROM audit WHERE occurred_at < ?1",
            [micros(before)],
        )
    }

    async fn prune_audit(
        &self,
        tenant_id: &str,
        before: SystemTime,
        batch: u32,
    ) -> Result<u64, StorageError> {
        let deleted = self
            .lock()
            .execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit \
                 WHERE tenant_id = ?1 AND occurred_at < ?2 ORDER BY id LIMIT ?3)",
                rusqlite::params![tenant_id, micros(before), batch],
            )
            .map_err(db_error)?;
        Ok(deleted as u64)
    }

    async fn unrelayed_tenants(&self) -> Result<Vec<String>, StorageError> {
        read::tenants(
            &self.lock(),
            "SELECT DISTINCT tenant_id FROM audit WHERE relayed_at IS NULL",
            [],
        )
    }

    async fn unrelayed(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        read::unrelayed(&self.lock(), tenant_id, limit)
    }

    async fn mark_relayed(
        &self,
        tenant_id: &str,
        ids: &[i64],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db_error)?;
        {
            let mut statement = tx
                .prepare_cached(
                    "UPDATE audit SET relayed_at = ?3 \
                     WHERE tenant_id = ?1 AND id = ?2 AND relayed_at IS NULL",
                )
                .map_err(db_error)?;
            for id in ids {
                statement
                    .execute(rusqlite::params![tenant_id, id, micros(now)])
                    .map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }
}

/// Microseconds since the Unix epoch.
fn micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time of `micros` microseconds since the Unix epoch.
fn time(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

/// Maps an SQLite error: a busy or locked file is retryable, anything else is internal.
fn db_error(error: rusqlite::Error) -> StorageError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StorageError::Unavailable("the embedded store is busy".into())
        }
        _ => StorageError::Internal(format!("embedded store: {error}")),
    }
}
