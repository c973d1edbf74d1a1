//! The storage service: the one place that validates input, checks the capability and decides.
//! Every entry point (wasm host, REST gateway, CLI) calls it; backends only execute.

pub mod cursor;
pub mod validate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, ListQuery, WriteBatch, WriteItem};
use crate::context::{CallContext, STORAGE_CAPABILITY};
use crate::error::{BulkError, StorageError};
use crate::limits::{
    DEFAULT_PAGE_SIZE, MAX_BULK_ITEMS, MAX_METADATA_BYTES, MAX_VALUE_BYTES, Quotas,
};
use crate::model::{
    ListOptions, ListPage, NamespaceUsage, Precondition, PutItem, PutOptions, QuotaUsage, Record,
    Usage, WriteResult,
};

/// The storage service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct StorageService {
    backend: Arc<dyn Backend>,
    quotas: Quotas,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl StorageService {
    /// A service over `backend` with the default quotas.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            quotas: Quotas::default(),
        }
    }

    /// Replaces the quotas applied to every install.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// The quotas applied to `ctx`'s install.
    pub fn quotas_for(&self, _ctx: &CallContext) -> Quotas {
        self.quotas
    }

    /// Reads `key`; `None` when absent or expired.
    #[tracing::instrument(name = "storage.get", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, namespace))]
    pub async fn get(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Record>, StorageError> {
        authorize(ctx)?;
        validate::namespace(namespace)?;
        validate::key(key)?;
        self.backend
            .get(ctx, namespace, key, SystemTime::now())
            .await
    }

    /// Writes `value` (JSON text) at `key` if the precondition holds.
    #[tracing::instrument(name = "storage.put", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, namespace))]
    pub async fn put(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        value: &str,
        options: &PutOptions,
    ) -> Result<WriteResult, StorageError> {
        authorize(ctx)?;
        validate::namespace(namespace)?;
        let now = SystemTime::now();
        let item = write_item(key, value, options, now)?;
        let batch = WriteBatch {
            namespace,
            items: vec![item],
            now,
            quotas: self.quotas_for(ctx),
        };
        let mut results = self.backend.put(ctx, &batch).await.map_err(|e| e.error)?;
        results
            .pop()
            .ok_or_else(|| StorageError::Internal("backend returned no write result".into()))
    }

    /// Writes every item atomically, or none.
    #[tracing::instrument(name = "storage.bulk_put", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, namespace, items = items.len()))]
    pub async fn bulk_put(
        &self,
        ctx: &CallContext,
        namespace: &str,
        items: &[PutItem],
    ) -> Result<Vec<WriteResult>, BulkError> {
        authorize(ctx).map_err(BulkError::whole)?;
        validate::namespace(namespace).map_err(BulkError::whole)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if items.len() > MAX_BULK_ITEMS {
            return Err(BulkError::whole(StorageError::invalid(
                "items",
                format!(
                    "has {} items; at most {MAX_BULK_ITEMS} allowed",
                    items.len()
                ),
            )));
        }
        let now = SystemTime::now();
        let mut seen = HashSet::with_capacity(items.len());
        let mut write_items = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let write = write_item(&item.key, &item.value, &item.options, now)
                .map_err(|e| BulkError::at(index, e))?;
            if !seen.insert(item.key.as_str()) {
                return Err(BulkError::at(
                    index,
                    StorageError::invalid("items", format!("key {:?} appears twice", item.key)),
                ));
            }
            write_items.push(write);
        }
        let batch = WriteBatch {
            namespace,
            items: write_items,
            now,
            quotas: self.quotas_for(ctx),
        };
        self.backend.put(ctx, &batch).await
    }

    /// Deletes `key`; true when a record was deleted, false when there was none.
    #[tracing::instrument(name = "storage.delete", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, namespace))]
    pub async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
    ) -> Result<bool, StorageError> {
        authorize(ctx)?;
        validate::namespace(namespace)?;
        validate::key(key)?;
        self.backend
            .delete(ctx, namespace, key, precondition, SystemTime::now())
            .await
    }

    /// One page of records in key byte order.
    #[tracing::instrument(name = "storage.list", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, namespace))]
    pub async fn list(
        &self,
        ctx: &CallContext,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<ListPage, StorageError> {
        authorize(ctx)?;
        validate::namespace(namespace)?;
        let prefix = options.prefix.as_deref().unwrap_or("");
        validate::prefix(prefix)?;
        let limit = options.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        validate::page_size(limit)?;
        let after = match &options.cursor {
            Some(c) => Some(cursor::decode(c, namespace, prefix)?),
            None => None,
        };
        let until = cursor::prefix_successor(prefix);
        let query = ListQuery {
            namespace,
            after: after.as_deref(),
            from: (!prefix.is_empty()).then_some(prefix),
            until: until.as_deref(),
            limit: limit + 1,
            keys_only: options.keys_only,
            now: SystemTime::now(),
        };
        let mut entries = self.backend.list(ctx, &query).await?;
        let next_cursor = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries
                .last()
                .map(|last| cursor::encode(namespace, prefix, &last.key))
        } else {
            None
        };
        Ok(ListPage {
            entries,
            next_cursor,
        })
    }

    /// The install's usage against its quotas.
    #[tracing::instrument(name = "storage.usage", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id))]
    pub async fn usage(&self, ctx: &CallContext) -> Result<Usage, StorageError> {
        authorize(ctx)?;
        let quotas = self.quotas_for(ctx);
        let counters = self.backend.usage(ctx).await?;
        let total: u64 = counters.iter().map(|c| c.bytes).sum();
        Ok(Usage {
            namespaces: QuotaUsage {
                used: counters.len() as u64,
                limit: quotas.max_namespaces,
            },
            total_bytes: QuotaUsage {
                used: total,
                limit: quotas.max_total_bytes,
            },
            per_namespace: counters
                .into_iter()
                .map(|c| NamespaceUsage {
                    namespace: c.namespace,
                    keys: QuotaUsage {
                        used: c.keys,
                        limit: quotas.max_keys_per_namespace,
                    },
                    bytes: c.bytes,
                })
                .collect(),
        })
    }
}

/// Refuses installs without the storage grant, before any query is sent.
fn authorize(ctx: &CallContext) -> Result<(), StorageError> {
    if ctx.has_grant(STORAGE_CAPABILITY) {
        Ok(())
    } else {
        Err(StorageError::CapabilityDenied(format!(
            "install {:?} is not granted {STORAGE_CAPABILITY}",
            ctx.install_id
        )))
    }
}

/// Validates one write and computes what the backend needs (expiry, size).
fn write_item<'a>(
    key: &'a str,
    value: &'a str,
    options: &'a PutOptions,
    now: SystemTime,
) -> Result<WriteItem<'a>, StorageError> {
    validate::key(key)?;
    validate::json("value", value, MAX_VALUE_BYTES)?;
    if let Some(expected) = options.schema_version {
        // No namespace has a schema until the registry exists, so any pinned version is stale.
        return Err(StorageError::SchemaMismatch {
            expected,
            current: None,
        });
    }
    if let Some(metadata) = &options.metadata {
        validate::json("metadata", metadata, MAX_METADATA_BYTES)?;
    }
    let expires_at = match options.ttl {
        Some(ttl) => {
            validate::ttl(ttl)?;
            Some(now + ttl)
        }
        None => None,
    };
    let size_bytes = key.len() + value.len() + options.metadata.as_ref().map_or(0, String::len);
    Ok(WriteItem {
        key,
        value,
        metadata: options.metadata.as_deref(),
        precondition: options.precondition,
        expires_at,
        size_bytes: size_bytes as u64,
        schema_version: None,
    })
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
