//! The schema side of the service: loading the current schema of a namespace (through the
//! process cache), reading it for guests, and the operator's registration and dry run.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Access, StorageService, validate};
use crate::backend::StoredSchema;
use crate::context::CallContext;
use crate::error::{StorageError, Violation};
use crate::limits::MAX_PAGE_SIZE;
use crate::model::ListOptions;
use crate::schema::{self, CurrentSchema};

/// A record that a schema under review would reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingRecord {
    /// The record's key.
    pub key: String,
    /// Why it fails (at most [`schema::MAX_VIOLATIONS`]).
    pub violations: Vec<Violation>,
}

/// One page of a dry run of a schema against a namespace's stored records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaCheck {
    /// Records checked in this page.
    pub checked: u64,
    /// The records of this page that would fail.
    pub failing: Vec<FailingRecord>,
    /// Where the next page starts; `None` when every record was checked.
    pub next_cursor: Option<String>,
}

impl StorageService {
    /// The namespace's current schema, for a guest to read. Always read from the database.
    #[tracing::instrument(name = "storage.schema", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
    ) -> Result<Option<StoredSchema>, StorageError> {
        self.authorize(ctx, Access::Read)?;
        validate::namespace(namespace)?;
        self.backend.current_schema(ctx, namespace).await
    }

    /// Operator / embedder: registers `document` as the namespace's next schema version and
    /// returns it. Guests cannot call this (no WIT function reaches it). Invalid schemas, other
    /// drafts than 2020-12 and 07, and remote `$ref`s are refused with `invalid-input`.
    #[tracing::instrument(name = "storage.register_schema", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn register_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
    ) -> Result<u32, StorageError> {
        validate::namespace(namespace)?;
        schema::compile(document)?;
        let version = self
            .backend
            .register_schema(ctx, namespace, document, SystemTime::now())
            .await?;
        self.schemas
            .invalidate(&ctx.tenant_id, &ctx.install_id, namespace);
        tracing::info!(version, "registered schema");
        Ok(version)
    }

    /// Operator / embedder: validates one page of the namespace's stored records against
    /// `document` without registering it. Memory is bounded by `page_size` (at most 1000).
    pub async fn check_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<SchemaCheck, StorageError> {
        validate::namespace(namespace)?;
        let (_, validator) = schema::compile(document)?;
        let options = ListOptions {
            cursor: cursor.map(str::to_owned),
            limit: Some(page_size.clamp(1, MAX_PAGE_SIZE)),
            ..ListOptions::default()
        };
        let page = self.list_page(ctx, namespace, &options).await?;
        let mut failing = Vec::new();
        for record in &page.entries {
            let value = record.value.as_deref().unwrap_or("null");
            let violations = schema::violations(&validator, "value", value)?;
            if !violations.is_empty() {
                failing.push(FailingRecord {
                    key: record.key.clone(),
                    violations,
                });
            }
        }
        Ok(SchemaCheck {
            checked: page.entries.len() as u64,
            failing,
            next_cursor: page.next_cursor,
        })
    }

    /// The namespace's current schema as stored, for operator code (no capability check).
    pub(crate) async fn backend_current_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
    ) -> Result<Option<StoredSchema>, StorageError> {
        self.backend.current_schema(ctx, namespace).await
    }

    /// The namespace's current schema: from the cache unless `fresh`, else from the database
    /// (and then cached).
    pub(super) async fn current_schema(
        &self,
        ctx: &CallContext,
        namespace: &str,
        fresh: bool,
    ) -> Result<Arc<CurrentSchema>, StorageError> {
        let (tenant, install) = (ctx.tenant_id.as_str(), ctx.install_id.as_str());
        if !fresh && let Some(cached) = self.schemas.get(tenant, install, namespace) {
            return Ok(cached);
        }
        let current = match self.backend.current_schema(ctx, namespace).await? {
            None => CurrentSchema::none(),
            Some(stored) => {
                let (document, validator) = schema::compile(&stored.document).map_err(|e| {
                    StorageError::Internal(format!(
                        "stored schema version {} of {namespace:?} does not compile: {e}",
                        stored.version
                    ))
                })?;
                CurrentSchema {
                    version: Some(stored.version),
                    document: Some(Arc::new(document)),
                    validator: Some(Arc::new(validator)),
                }
            }
        };
        let current = Arc::new(current);
        self.schemas
            .put(tenant, install, namespace, current.clone());
        Ok(current)
    }
}
