//! The PostgreSQL (and Citus) backend. Reads are single prepared statements; writes are one call
//! of a server-side function, so every operation is one round trip on a pooled connection and, on
//! Citus, one single-shard transaction delegated to the worker owning the tenant.

mod audit;
mod errors;
mod json;
pub mod migrate;
mod restore;

use std::time::SystemTime;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::backend::{
    AuditRange, Backend, CounterChange, CounterDrift, DriftScope, ListQuery, NamespaceCounters,
    PoolStatus, StoredSchema, WriteBatch, WriteOutcome,
};
use crate::context::CallContext;
use crate::error::{BulkError, StorageError};
use crate::model::{AuditRecord, Precondition, Record, WriteResult};
use errors::{pool_error, query_error, write_error};
use json::{JsonParam, JsonText};

/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 16;

const GET: &str = "\
SELECT key, value, metadata, revision, schema_version, ttl_expires_at, created_at, updated_at
  FROM ext_storage_records
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4
   AND (ttl_expires_at IS NULL OR ttl_expires_at > $5)";

const PUT: &str = "\
SELECT * FROM alga_storage_put($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                               $16, $17, $18, $19)";

const DELETE: &str = "\
SELECT alga_storage_delete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Live usage: the counters minus records already expired but not yet swept (found through the
/// partial TTL index, so the cost is in expired rows, never in live ones).
const USAGE: &str = "\
SELECT u.namespace::text,
       u.key_count - coalesce(e.keys, 0),
       u.byte_count - coalesce(e.bytes, 0)
  FROM ext_storage_namespace_usage u
  LEFT JOIN (SELECT r.namespace, count(*) AS keys, sum(r.size_bytes)::bigint AS bytes
               FROM ext_storage_records r
              WHERE r.tenant_id = $1 AND r.extension_install_id = $2
                AND r.ttl_expires_at <= $3
              GROUP BY r.namespace) e ON e.namespace = u.namespace
 WHERE u.tenant_id = $1 AND u.extension_install_id = $2
   AND u.key_count - coalesce(e.keys, 0) > 0
 ORDER BY u.namespace";

const CURRENT_SCHEMA: &str = "\
SELECT version, schema
  FROM ext_storage_schemas
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3
 ORDER BY version DESC
 LIMIT 1";

const REGISTER_SCHEMA: &str = "SELECT alga_storage_register_schema($1, $2, $3, $4, $5, $6, $7, $8)";

const RECOUNT: &str = "SELECT * FROM alga_storage_recount($1, $2, $3, $4, $5, $6, $7)";

/// The list statement for one combination of upper bound and keys-only. Each variant is its own
/// prepared statement so that every bound is an index condition, never a filter.
fn list_sql(bounded: bool, keys_only: bool) -> String {
    let columns = if keys_only {
        "key, NULL::jsonb AS value, NULL::jsonb AS metadata"
    } else {
        "key, value, metadata"
    };
    let until = if bounded { "AND key < $7" } else { "" };
    let limit = if bounded { "$8" } else { "$7" };
    format!(
        "SELECT {columns}, revision, schema_version, ttl_expires_at, created_at, updated_at
           FROM ext_storage_records
          WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3
            AND key > $4 AND key >= $5 {until}
            AND (ttl_expires_at IS NULL OR ttl_expires_at > $6)
          ORDER BY key
          LIMIT {limit}"
    )
}

/// Storage in PostgreSQL or Citus, through a connection pool.
#[derive(Clone)]
pub struct PgBackend {
    pool: Pool,
    list_sql: [String; 4],
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Connects lazily to `database_url` with a pool of at most `pool_size` connections.
    pub fn connect(database_url: &str, pool_size: usize) -> Result<Self, StorageError> {
        let config: tokio_postgres::Config = database_url.parse().map_err(|e| {
            StorageError::invalid("database-url", format!("is not a PostgreSQL URL: {e}"))
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StorageError::Internal(format!("cannot build the pool: {e}")))?;
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool.
    pub fn from_pool(pool: Pool) -> Self {
        Self {
            pool,
            list_sql: [
                list_sql(false, false),
                list_sql(false, true),
                list_sql(true, false),
                list_sql(true, true),
            ],
        }
    }

    /// The connection pool (for migrations and metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn schema_versions(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError> {
        self.schema_versions_query(ctx).await
    }

    async fn restore_records(
        &self,
        ctx: &CallContext,
        namespace: &str,
        records: &[Record],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        self.restore_records_query(ctx, namespace, records, now)
            .await
    }

    async fn restore_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        schema: &StoredSchema,
        now: SystemTime,
    ) -> Result<bool, StorageError> {
        self.restore_schema_query(ctx, namespace, schema, now).await
    }

    async fn audit_page(
        &self,
        ctx: &CallContext,
        range: &AuditRange,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        self.audit_page_query(ctx, range).await
    }

    async fn audit_tenants_before(&self, before: SystemTime) -> Result<Vec<String>, StorageError> {
        self.audit_tenants_query(
            "SELECT DISTINCT tenant_id FROM ext_storage_audit WHERE occurred_at < $1",
            &[&before],
        )
        .await
    }

    async fn prune_audit(
        &self,
        tenant_id: &str,
        before: SystemTime,
        batch: u32,
    ) -> Result<u64, StorageError> {
        self.prune_audit_batch(tenant_id, before, batch).await
    }

    async fn unrelayed_tenants(&self) -> Result<Vec<String>, StorageError> {
        self.audit_tenants_query(
            "SELECT DISTINCT tenant_id FROM ext_storage_audit WHERE relayed_at IS NULL",
            &[],
        )
        .await
    }

    async fn unrelayed(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        self.unrelayed_query(tenant_id, limit).await
    }

    async fn mark_relayed(
        &self,
        tenant_id: &str,
        ids: &[i64],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        self.mark_relayed_query(tenant_id, ids, now).await
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        let status = self.pool.status();
        Some(PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        })
    }

    async fn get(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Record>, StorageError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(GET).await.map_err(query_error)?;
        let row = client
            .query_opt(
                &statement,
                &[&ctx.tenant_id, &ctx.install_id, &namespace, &key, &now],
            )
            .await
            .map_err(query_error)?;
        row.map(record).transpose()
    }

    async fn put(
        &self,
        ctx: &CallContext,
        batch: &WriteBatch<'_>,
    ) -> Result<WriteOutcome, BulkError> {
        let items = &batch.items;
        let keys: Vec<&str> = items.iter().map(|i| i.key).collect();
        let values: Vec<JsonParam<'_>> = items.iter().map(|i| JsonParam(i.value)).collect();
        let metadata: Vec<Option<JsonParam<'_>>> =
            items.iter().map(|i| i.metadata.map(JsonParam)).collect();
        let sizes: Vec<i64> = items.iter().map(|i| i.size_bytes as i64).collect();
        let (kinds, revisions): (Vec<i16>, Vec<Option<i64>>) = items
            .iter()
            .map(|i| precondition_params(i.precondition))
            .unzip();
        let expires: Vec<Option<SystemTime>> = items.iter().map(|i| i.expires_at).collect();
        let schema_version: Option<i32> = batch.schema_version.map(|v| v as i32);
        let limits = batch.limits;
        let (max_namespaces, max_keys, max_bytes) = (
            clamp_i64(limits.max_namespaces),
            clamp_i64(limits.max_keys_per_namespace),
            clamp_i64(limits.max_total_bytes),
        );
        let sweep_limit = i32::try_from(batch.sweep_limit).unwrap_or(i32::MAX);

        let client = self.client().await.map_err(BulkError::whole)?;
        let statement = client
            .prepare_cached(PUT)
            .await
            .map_err(|e| BulkError::whole(query_error(e)))?;
        let rows = client
            .query(
                &statement,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &batch.namespace,
                    &keys,
                    &values,
                    &metadata,
                    &sizes,
                    &kinds,
                    &revisions,
                    &expires,
                    &schema_version,
                    &batch.now,
                    &ctx.extension_id,
                    &ctx.actor,
                    &ctx.request_id,
                    &max_namespaces,
                    &max_keys,
                    &max_bytes,
                    &sweep_limit,
                ],
            )
            .await
            .map_err(|e| write_error(e, &keys, batch.schema_version))?;
        if rows.len() != items.len() {
            return Err(BulkError::whole(StorageError::Internal(format!(
                "the write returned {} results for {} items",
                rows.len(),
                items.len()
            ))));
        }
        write_outcome(&rows, items.iter().map(|i| i.key)).map_err(BulkError::whole)
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
        let (kind, revision) = precondition_params(precondition);
        let sweep_limit = i32::try_from(sweep_limit).unwrap_or(i32::MAX);
        let client = self.client().await?;
        let statement = client.prepare_cached(DELETE).await.map_err(query_error)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &namespace,
                    &key,
                    &kind,
                    &revision,
                    &now,
                    &ctx.extension_id,
                    &ctx.actor,
                    &ctx.request_id,
                    &sweep_limit,
                ],
            )
            .await
            .map_err(|e| write_error(e, &[key], None).error)?;
        row.try_get(0).map_err(column_error)
    }

    async fn list(
        &self,
        ctx: &CallContext,
        query: &ListQuery<'_>,
    ) -> Result<Vec<Record>, StorageError> {
        let variant = usize::from(query.until.is_some()) * 2 + usize::from(query.keys_only);
        let after = query.after.unwrap_or("");
        let from = query.from.unwrap_or("");
        let limit = i64::from(query.limit);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.list_sql[variant])
            .await
            .map_err(query_error)?;
        // The bounded variants take the upper bound as $7 and the limit as $8.
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &ctx.tenant_id,
            &ctx.install_id,
            &query.namespace,
            &after,
            &from,
            &query.now,
        ];
        if let Some(until) = &query.until {
            params.push(until);
        }
        params.push(&limit);
        let rows = client
            .query(&statement, &params)
            .await
            .map_err(query_error)?;
        rows.into_iter().map(record).collect()
    }

    async fn usage(
        &self,
        ctx: &CallContext,
        now: SystemTime,
    ) -> Result<Vec<NamespaceCounters>, StorageError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(USAGE).await.map_err(query_error)?;
        let rows = client
            .query(&statement, &[&ctx.tenant_id, &ctx.install_id, &now])
            .await
            .map_err(query_error)?;
        rows.iter()
            .map(|row| {
                let keys: i64 = row.try_get(1).map_err(column_error)?;
                let bytes: i64 = row.try_get(2).map_err(column_error)?;
                Ok(NamespaceCounters {
                    namespace: row.try_get(0).map_err(column_error)?,
                    keys: keys.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                })
            })
            .collect()
    }

    async fn current_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
    ) -> Result<Option<StoredSchema>, StorageError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(CURRENT_SCHEMA)
            .await
            .map_err(query_error)?;
        let row = client
            .query_opt(&statement, &[&ctx.tenant_id, &ctx.install_id, &namespace])
            .await
            .map_err(query_error)?;
        row.map(|row| {
            let version: i32 = row.try_get(0).map_err(column_error)?;
            let document: JsonText = row.try_get(1).map_err(column_error)?;
            Ok(StoredSchema {
                version: version as u32,
                document: document.0,
            })
        })
        .transpose()
    }

    async fn register_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
        now: SystemTime,
    ) -> Result<u32, StorageError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(REGISTER_SCHEMA)
            .await
            .map_err(query_error)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &namespace,
                    &JsonParam(document),
                    &now,
                    &ctx.extension_id,
                    &ctx.actor,
                    &ctx.request_id,
                ],
            )
            .await
            .map_err(query_error)?;
        let version: i32 = row.try_get(0).map_err(column_error)?;
        Ok(version as u32)
    }

    async fn recount(
        &self,
        ctx: &CallContext,
        apply: bool,
        now: SystemTime,
    ) -> Result<Vec<CounterDrift>, StorageError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(RECOUNT).await.map_err(query_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &apply,
                    &now,
                    &ctx.extension_id,
                    &ctx.actor,
                    &ctx.request_id,
                ],
            )
            .await
            .map_err(query_error)?;
        rows.iter()
            .map(|row| {
                let namespace: Option<String> = row.try_get(0).map_err(column_error)?;
                Ok(CounterDrift {
                    scope: namespace.map_or(DriftScope::Install, DriftScope::Namespace),
                    counted_keys: row.try_get(1).map_err(column_error)?,
                    actual_keys: row.try_get(2).map_err(column_error)?,
                    counted_bytes: row.try_get(3).map_err(column_error)?,
                    actual_bytes: row.try_get(4).map_err(column_error)?,
                })
            })
            .collect()
    }
}

/// Decodes the rows of `alga_storage_put`: per item (item, revision, created) and, on every
/// row alike, the counters after the write (NULL when none changed).
fn write_outcome<'a>(
    rows: &[Row],
    keys: impl Iterator<Item = &'a str>,
) -> Result<WriteOutcome, StorageError> {
    let results = rows
        .iter()
        .zip(keys)
        .map(|(row, key)| {
            let revision: i64 = row.try_get(1).map_err(column_error)?;
            Ok(WriteResult {
                key: key.to_owned(),
                revision: revision as u64,
                created: row.try_get(2).map_err(column_error)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    let counters = match rows.first() {
        Some(row) => {
            let column = |i: usize| row.try_get::<_, Option<i64>>(i).map_err(column_error);
            match (
                column(3)?,
                column(4)?,
                column(5)?,
                column(6)?,
                column(7)?,
                column(8)?,
            ) {
                (
                    Some(keys),
                    Some(keys_delta),
                    Some(bytes),
                    Some(bytes_delta),
                    Some(ns),
                    Some(ns_delta),
                ) => Some(CounterChange {
                    namespace_keys: keys.max(0) as u64,
                    namespace_keys_delta: keys_delta,
                    total_bytes: bytes.max(0) as u64,
                    total_bytes_delta: bytes_delta,
                    namespaces: ns.max(0) as u64,
                    namespaces_delta: ns_delta,
                }),
                _ => None,
            }
        }
        None => None,
    };
    Ok(WriteOutcome { results, counters })
}

/// Decodes a row of the record columns (key, value, metadata, revision, schema_version,
/// ttl_expires_at, created_at, updated_at).
fn record(row: Row) -> Result<Record, StorageError> {
    let value: Option<JsonText> = row.try_get(1).map_err(column_error)?;
    let metadata: Option<JsonText> = row.try_get(2).map_err(column_error)?;
    let revision: i64 = row.try_get(3).map_err(column_error)?;
    let schema_version: Option<i32> = row.try_get(4).map_err(column_error)?;
    Ok(Record {
        key: row.try_get(0).map_err(column_error)?,
        value: value.map(|v| v.0),
        metadata: metadata.map(|m| m.0),
        revision: revision as u64,
        schema_version: schema_version.map(|v| v as u32),
        expires_at: row.try_get(5).map_err(column_error)?,
        created_at: row.try_get(6).map_err(column_error)?,
        updated_at: row.try_get(7).map_err(column_error)?,
    })
}

fn precondition_params(precondition: Precondition) -> (i16, Option<i64>) {
    match precondition {
        Precondition::None => (0, None),
        Precondition::Absent => (1, None),
        Precondition::Revision(r) => (2, Some(i64::try_from(r).unwrap_or(i64::MAX))),
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn column_error(error: tokio_postgres::Error) -> StorageError {
    tracing::error!(%error, "unexpected column type");
    StorageError::Internal("the database returned an unexpected row".into())
}
