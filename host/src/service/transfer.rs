//! Export and restore of one install's data, for operators (data portability, tenant-scoped
//! restore, moving between engines). Not extension calls: no grant or rollout applies.

use std::time::SystemTime;

use super::{StorageService, validate};
use crate::backend::StoredSchema;
use crate::context::CallContext;
use crate::error::StorageError;
use crate::limits::{Limits, MAX_PAGE_SIZE};
use crate::model::{ListOptions, ListPage, Record};
use crate::schema;

impl StorageService {
    /// Namespaces of the install holding live records, with their record counts, in order.
    pub async fn namespaces(&self, ctx: &CallContext) -> Result<Vec<(String, u64)>, StorageError> {
        let counters = self.backend.usage(ctx, SystemTime::now()).await?;
        Ok(counters
            .into_iter()
            .map(|c| (c.namespace, c.keys))
            .collect())
    }

    /// Every schema version of the install, by namespace then version.
    pub async fn schema_versions(
        &self,
        ctx: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError> {
        self.backend.schema_versions(ctx).await
    }

    /// One page (up to 1000) of a namespace's live records with values, for an export.
    pub async fn export_page(
        &self,
        ctx: &CallContext,
        namespace: &str,
        cursor: Option<String>,
    ) -> Result<ListPage, StorageError> {
        let options = ListOptions {
            cursor,
            limit: Some(MAX_PAGE_SIZE),
            ..Default::default()
        };
        self.list_page(&ctx.clone().limits(Limits::CONTRACT), namespace, &options)
            .await
    }

    /// Restores exported records exactly (revision, schema version, expiry, timestamps),
    /// replacing records with the same keys, in one transaction. Keys, values and metadata are
    /// checked against the contract's limits; quotas are not applied (a restore puts back what
    /// was there). Run [`StorageService::recount`] with `apply` afterwards.
    pub async fn restore_records(
        &self,
        ctx: &CallContext,
        namespace: &str,
        records: &[Record],
    ) -> Result<(), StorageError> {
        validate::namespace(namespace)?;
        let limits = Limits::CONTRACT;
        for record in records {
            validate::key(&record.key, limits.max_key_bytes)?;
            let value = record
                .value
                .as_deref()
                .ok_or_else(|| StorageError::invalid("value", "a restored record needs a value"))?;
            validate::json(
                "value",
                value,
                limits.max_value_bytes,
                limits.max_json_depth,
            )?;
            if let Some(metadata) = &record.metadata {
                validate::json(
                    "metadata",
                    metadata,
                    limits.max_metadata_bytes,
                    limits.max_json_depth,
                )?;
            }
            if record.revision == 0 {
                return Err(StorageError::invalid("revision", "revisions start at 1"));
            }
        }
        self.backend
            .restore_records(ctx, namespace, records, SystemTime::now())
            .await
    }

    /// Restores one exported schema version unless the namespace has it already; true when it
    /// was added.
    pub async fn restore_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        stored: &StoredSchema,
    ) -> Result<bool, StorageError> {
        validate::namespace(namespace)?;
        if stored.version == 0 {
            return Err(StorageError::invalid(
                "version",
                "schema versions start at 1",
            ));
        }
        schema::compile(&stored.document)?;
        let added = self
            .backend
            .restore_schema(ctx, namespace, stored, SystemTime::now())
            .await?;
        self.schemas
            .invalidate(&ctx.tenant_id, &ctx.install_id, namespace);
        Ok(added)
    }
}
