//! The PostgreSQL (and Citus) backend. Reads are single prepared statements; writes are one call
//! of a server-side function, so every operation is one round trip on a pooled connection and, on
//! Citus, one single-shard transaction delegated to the worker owning the tenant.

mod errors;
mod json;
pub mod migrate;

use std::time::SystemTime;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use crate::backend::{Backend, ListQuery, NamespaceCounters, WriteBatch};
use crate::context::CallContext;
use crate::error::{BulkError, StorageError};
use crate::model::{Precondition, Record, WriteResult};
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
                               $16, $17, $18)";

const DELETE: &str = "\
SELECT alga_storage_delete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const USAGE: &str = "\
SELECT namespace, key_count, byte_count
  FROM ext_storage_namespace_usage
 WHERE tenant_id = $1 AND extension_install_id = $2 AND key_count > 0
 ORDER BY namespace";

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
    ) -> Result<Vec<WriteResult>, BulkError> {
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
        let schema_versions: Vec<Option<i32>> = items
            .iter()
            .map(|i| i.schema_version.map(|v| v as i32))
            .collect();
        let quotas = batch.quotas;
        let (max_namespaces, max_keys, max_bytes) = (
            clamp_i64(quotas.max_namespaces),
            clamp_i64(quotas.max_keys_per_namespace),
            clamp_i64(quotas.max_total_bytes),
        );

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
                    &schema_versions,
                    &batch.now,
                    &ctx.extension_id,
                    &ctx.actor,
                    &ctx.request_id,
                    &max_namespaces,
                    &max_keys,
                    &max_bytes,
                ],
            )
            .await
            .map_err(|e| write_error(e, &keys))?;
        if rows.len() != items.len() {
            return Err(BulkError::whole(StorageError::Internal(format!(
                "the write returned {} results for {} items",
                rows.len(),
                items.len()
            ))));
        }
        rows.iter()
            .zip(items)
            .map(|(row, item)| {
                let revision: i64 = row.try_get(1).map_err(column_error)?;
                let created: bool = row.try_get(2).map_err(column_error)?;
                Ok(WriteResult {
                    key: item.key.to_owned(),
                    revision: revision as u64,
                    created,
                })
            })
            .collect::<Result<_, StorageError>>()
            .map_err(BulkError::whole)
    }

    async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
        now: SystemTime,
    ) -> Result<bool, StorageError> {
        let (kind, revision) = precondition_params(precondition);
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
                ],
            )
            .await
            .map_err(|e| write_error(e, &[key]).error)?;
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
        let rows = match query.until {
            Some(until) => {
                client
                    .query(
                        &statement,
                        &[
                            &ctx.tenant_id,
                            &ctx.install_id,
                            &query.namespace,
                            &after,
                            &from,
                            &query.now,
                            &until,
                            &limit,
                        ],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        &statement,
                        &[
                            &ctx.tenant_id,
                            &ctx.install_id,
                            &query.namespace,
                            &after,
                            &from,
                            &query.now,
                            &limit,
                        ],
                    )
                    .await
            }
        }
        .map_err(query_error)?;
        rows.into_iter().map(record).collect()
    }

    async fn usage(&self, ctx: &CallContext) -> Result<Vec<NamespaceCounters>, StorageError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(USAGE).await.map_err(query_error)?;
        let rows = client
            .query(&statement, &[&ctx.tenant_id, &ctx.install_id])
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
