//! Export and restore of one install (data portability, tenant-scoped restore): schema
//! versions read in order, records and schema versions written back exactly as exported.

use std::time::SystemTime;

use super::errors::query_error;
use super::{PgBackend, column_error};
use crate::backend::{StoredSchema, record_size};
use crate::context::CallContext;
use crate::error::StorageError;
use crate::model::Record;

impl PgBackend {
    pub(super) async fn schema_versions_query(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT namespace::text, version, schema::text FROM ext_storage_schemas \
                 WHERE tenant_id = $1 AND extension_install_id = $2 ORDER BY namespace, version",
                &[&ctx.tenant_id, &ctx.install_id],
            )
            .await
            .map_err(query_error)?;
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(1).map_err(column_error)?;
                Ok((
                    row.try_get(0).map_err(column_error)?,
                    StoredSchema {
                        version: version.max(0) as u32,
                        document: row.try_get(2).map_err(column_error)?,
                    },
                ))
            })
            .collect()
    }

    pub(super) async fn restore_records_query(
        &self,
        ctx: &CallContext,
        namespace: &str,
        records: &[Record],
        now: SystemTime,
    ) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query_error)?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO ext_storage_records (tenant_id, extension_install_id, namespace, key, \
                 value, metadata, revision, schema_version, size_bytes, ttl_expires_at, \
                 created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (tenant_id, extension_install_id, namespace, key) DO UPDATE \
                 SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, \
                     revision = EXCLUDED.revision, schema_version = EXCLUDED.schema_version, \
                     size_bytes = EXCLUDED.size_bytes, ttl_expires_at = EXCLUDED.ttl_expires_at, \
                     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
            )
            .await
            .map_err(query_error)?;
        let audit = tx
            .prepare_cached(
                "INSERT INTO ext_storage_audit (tenant_id, extension_install_id, extension_id, \
                 namespace, key, operation, actor, revision, bytes, request_id, occurred_at) \
                 VALUES ($1, $2, $3, $4, $5, 'import', $6, $7, $8, $9, $10)",
            )
            .await
            .map_err(query_error)?;
        for record in records {
            let value = record.value.as_deref().unwrap_or("null");
            let size = record_size(record) as i64;
            let revision = record.revision as i64;
            let schema_version = record.schema_version.map(|v| v as i32);
            tx.execute(
                &upsert,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &namespace,
                    &record.key,
                    &value,
                    &record.metadata,
                    &revision,
                    &schema_version,
                    &size,
                    &record.expires_at,
                    &record.created_at,
                    &record.updated_at,
                ],
            )
            .await
            .map_err(query_error)?;
            tx.execute(
                &audit,
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &ctx.extension_id,
                    &namespace,
                    &record.key,
                    &ctx.actor,
                    &revision,
                    &size,
                    &ctx.request_id,
                    &now,
                ],
            )
            .await
            .map_err(query_error)?;
        }
        tx.commit().await.map_err(query_error)
    }

    pub(super) async fn restore_schema_query(
        &self,
        ctx: &CallContext,
        namespace: &str,
        schema: &StoredSchema,
        now: SystemTime,
    ) -> Result<bool, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query_error)?;
        let version = schema.version as i32;
        // The lock `alga_storage_register_schema` takes: a write in flight commits first, and
        // every write that commits after this version reads it in its schema check.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2 || '/' || $3, 0))",
            &[&ctx.tenant_id, &ctx.install_id, &namespace],
        )
        .await
        .map_err(query_error)?;
        let added = tx
            .execute(
                "INSERT INTO ext_storage_schemas (tenant_id, extension_install_id, namespace, \
                 version, schema, registered_by, registered_at) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &namespace,
                    &version,
                    &schema.document,
                    &ctx.actor,
                    &now,
                ],
            )
            .await
            .map_err(query_error)?;
        if added == 1 {
            let bytes = schema.document.len() as i64;
            let revision = i64::from(version);
            tx.execute(
                "INSERT INTO ext_storage_audit (tenant_id, extension_install_id, extension_id, \
                 namespace, key, operation, actor, revision, bytes, request_id, occurred_at) \
                 VALUES ($1, $2, $3, $4, NULL, 'schema-import', $5, $6, $7, $8, $9)",
                &[
                    &ctx.tenant_id,
                    &ctx.install_id,
                    &ctx.extension_id,
                    &namespace,
                    &ctx.actor,
                    &revision,
                    &bytes,
                    &ctx.request_id,
                    &now,
                ],
            )
            .await
            .map_err(query_error)?;
        }
        tx.commit().await.map_err(query_error)?;
        Ok(added == 1)
    }
}
