//! The audit trail's reads and maintenance: paging an install's rows, retention in bounded
//! batches, and the outbox relay's unshipped rows. Every statement filters on `tenant_id` (the
//! tenant lists for retention and relay are the only multi-shard reads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Row;

use super::errors::query_error;
use super::{PgBackend, column_error};
use crate::backend::AuditRange;
use crate::context::CallContext;
use crate::error::StorageError;
use crate::model::AuditRecord;

const COLUMNS: &str = "id, tenant_id, extension_install_id, extension_id, namespace, key, \
     operation, actor, revision, bytes, request_id, occurred_at";

/// Far enough in the future to stand for "no upper bound".
const END_OF_TIME: Duration = Duration::from_secs(250_000 * 365 * 24 * 3600);

impl PgBackend {
    pub(super) async fn audit_page_query(
        &self,
        ctx: &CallContext,
        range: &AuditRange,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ext_storage_audit \
             WHERE tenant_id = $1 AND extension_install_id = $2 \
               AND occurred_at >= $3 AND occurred_at < $4 AND (occurred_at, id) > ($5, $6) \
             ORDER BY occurred_at, id LIMIT $7"
        );
        let since = range.since.unwrap_or(UNIX_EPOCH);
        let until = range.until.unwrap_or(UNIX_EPOCH + END_OF_TIME);
        let (after_time, after_id) = range.after.unwrap_or((UNIX_EPOCH, i64::MIN));
        let limit = i64::from(range.limit);
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(query_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &since,
                    &until,
                    &after_time,
                    &after_id,
                    &limit,
                ],
            )
            .await
            .map_err(query_error)?;
        rows.iter().map(audit_record).collect()
    }

    pub(super) async fn audit_tenants_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>, StorageError> {
        let client = self.client().await?;
        let rows = client.query(sql, params).await.map_err(query_error)?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(column_error))
            .collect()
    }

    pub(super) async fn prune_audit_batch(
        &self,
        tenant_id: &str,
        before: SystemTime,
        batch: u32,
    ) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM ext_storage_audit WHERE tenant_id = $1 AND id IN ( \
                     SELECT id FROM ext_storage_audit \
                     WHERE tenant_id = $1 AND occurred_at < $2 LIMIT $3)",
            )
            .await
            .map_err(query_error)?;
        client
            .execute(&statement, &[&tenant_id, &before, &i64::from(batch)])
            .await
            .map_err(query_error)
    }

    pub(super) async fn unrelayed_query(
        &self,
        tenant_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ext_storage_audit \
             WHERE tenant_id = $1 AND relayed_at IS NULL ORDER BY occurred_at, id LIMIT $2"
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(query_error)?;
        let rows = client
            .query(&statement, &[&tenant_id, &i64::from(limit)])
            .await
            .map_err(query_error)?;
        rows.iter().map(audit_record).collect()
    }

    pub(super) async fn mark_relayed_query(
        &self,
        tenant_id: &str,
        ids: &[i64],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE ext_storage_audit SET relayed_at = $3 \
                 WHERE tenant_id = $1 AND id = ANY($2) AND relayed_at IS NULL",
            )
            .await
            .map_err(query_error)?;
        client
            .execute(&statement, &[&tenant_id, &ids, &now])
            .await
            .map_err(query_error)?;
        Ok(())
    }
}

fn audit_record(row: &Row) -> Result<AuditRecord, StorageError> {
    let revision: Option<i64> = row.try_get(8).map_err(column_error)?;
    Ok(AuditRecord {
        id: row.try_get(0).map_err(column_error)?,
        tenant_id: row.try_get(1).map_err(column_error)?,
        install_id: row.try_get(2).map_err(column_error)?,
        extension_id: row.try_get(3).map_err(column_error)?,
        namespace: row.try_get(4).map_err(column_error)?,
        key: row.try_get(5).map_err(column_error)?,
        operation: row.try_get(6).map_err(column_error)?,
        actor: row.try_get(7).map_err(column_error)?,
        revision: revision.map(|r| r.max(0) as u64),
        bytes: row.try_get(9).map_err(column_error)?,
        request_id: row.try_get(10).map_err(column_error)?,
        occurred_at: row.try_get(11).map_err(column_error)?,
    })
}
