//! The storage service: the one place that validates input, checks the capability and decides.
//! Every entry point (wasm host, REST gateway, CLI) calls it; backends only execute.

mod audit;
mod schemas;
mod transfer;

pub use alga_storage_core::{cursor, validate};

pub use audit::{AuditSink, audit_json};
pub use schemas::{FailingRecord, SchemaCheck};

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, CounterChange, CounterDrift, ListQuery, WriteBatch, WriteItem};
use crate::context::{CallContext, STORAGE_CAPABILITY, STORAGE_READ_CAPABILITY};
use crate::error::{BulkError, Quota, StorageError};
use crate::limits::{DEFAULT_PAGE_SIZE, Limits, TTL_SWEEP_BATCH};
use crate::metrics::StorageMetrics;
use crate::model::{
    ListOptions, ListPage, NamespaceUsage, Precondition, PutItem, PutOptions, QuotaUsage, Record,
    Usage, WriteResult,
};
use crate::observe::{QuotaThreshold, StorageObserver, TracingObserver, crossed_thresholds};
use crate::rollout::RolloutPolicy;
use crate::schema::SchemaCache;

/// The storage service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct StorageService {
    backend: Arc<dyn Backend>,
    schemas: Arc<SchemaCache>,
    default_limits: Limits,
    max_limits: Limits,
    observer: Arc<dyn StorageObserver>,
    /// Shared by every clone: switching it affects the whole process at once.
    rollout: Arc<RwLock<RolloutPolicy>>,
    metrics: StorageMetrics,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("default_limits", &self.default_limits)
            .field("max_limits", &self.max_limits)
            .finish_non_exhaustive()
    }
}

impl StorageService {
    /// A service over `backend` with the default limits, no install allowed more, and events
    /// logged with `tracing`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            metrics: StorageMetrics::new(backend.clone()),
            backend,
            schemas: Arc::new(SchemaCache::default()),
            default_limits: Limits::DEFAULT,
            max_limits: Limits::DEFAULT,
            observer: Arc::new(TracingObserver),
            rollout: Arc::new(RwLock::new(RolloutPolicy::All)),
        }
    }

    /// Switches the rollout policy at run time, for this service and every clone of it.
    /// `Off` refuses every extension call with `capability-denied` and keeps all data. Setting
    /// the policy in force changes nothing and logs nothing.
    pub fn set_rollout(&self, policy: RolloutPolicy) {
        let mut current = self.rollout.write().unwrap_or_else(|e| e.into_inner());
        if *current != policy {
            tracing::warn!(?policy, "storage rollout policy changed");
            *current = policy;
        }
    }

    /// The service's Prometheus metrics (shared by every clone).
    pub fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// The current rollout policy.
    pub fn rollout(&self) -> RolloutPolicy {
        self.rollout
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refuses calls the rollout policy or the context's grants do not allow, before any
    /// query is sent.
    pub(crate) fn authorize(&self, ctx: &CallContext, access: Access) -> Result<(), StorageError> {
        let allowed = self
            .rollout
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .allows(&ctx.extension_id);
        if !allowed {
            return Err(StorageError::CapabilityDenied(format!(
                "{STORAGE_CAPABILITY} is switched off for extension {:?} by the rollout policy",
                ctx.extension_id
            )));
        }
        grants_allow(ctx, access)
    }

    /// Sets the limits of installs whose context carries none, and the most any context may
    /// ask for. Both are capped by the contract's size limits.
    pub fn with_limits(mut self, defaults: Limits, maximums: Limits) -> Self {
        self.max_limits = maximums.capped_by(&Limits::CONTRACT);
        self.default_limits = defaults.capped_by(&self.max_limits);
        self
    }

    /// Sends events (near-limit crossings, quota refusals) to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn StorageObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The default and maximum limits of installs.
    pub fn limit_bounds(&self) -> (Limits, Limits) {
        (self.default_limits, self.max_limits)
    }

    /// The limits applied to `ctx`'s install.
    pub fn limits_for(&self, ctx: &CallContext) -> Limits {
        ctx.limits
            .unwrap_or(self.default_limits)
            .capped_by(&self.max_limits)
    }

    /// Reads `key`; `None` when absent or expired.
    #[tracing::instrument(name = "storage.get", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn get(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Record>, StorageError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Read)?;
            validate::namespace(namespace)?;
            validate::key(key, self.limits_for(ctx).max_key_bytes)?;
            self.backend
                .get(ctx, namespace, key, SystemTime::now())
                .await
        }
        .await;
        if let Ok(Some(record)) = &result {
            self.metrics.read(record_bytes(record));
        }
        self.metrics.observe(
            "get",
            started,
            result.as_ref().err().map(StorageError::code),
        );
        result
    }

    /// Writes `value` (JSON text) at `key` if the precondition holds.
    #[tracing::instrument(name = "storage.put", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn put(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        value: &str,
        options: &PutOptions,
    ) -> Result<WriteResult, StorageError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Write)?;
            validate::namespace(namespace)?;
            let limits = self.limits_for(ctx);
            let now = SystemTime::now();
            let item = write_item(key, value, options, now, &limits)?;
            let batch = WriteBatch {
                namespace,
                items: vec![item],
                now,
                limits,
                sweep_limit: TTL_SWEEP_BATCH,
                schema_version: None,
            };
            let mut results = self
                .write(ctx, batch, &[options.schema_version])
                .await
                .map_err(|e| e.error)?;
            results
                .pop()
                .ok_or_else(|| StorageError::Internal("backend returned no write result".into()))
        }
        .await;
        self.metrics.observe(
            "put",
            started,
            result.as_ref().err().map(StorageError::code),
        );
        result
    }

    /// Writes every item atomically, or none.
    #[tracing::instrument(name = "storage.bulk_put", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace, items = items.len()))]
    pub async fn bulk_put(
        &self,
        ctx: &CallContext,
        namespace: &str,
        items: &[PutItem],
    ) -> Result<Vec<WriteResult>, BulkError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Write)
                .map_err(BulkError::whole)?;
            validate::namespace(namespace).map_err(BulkError::whole)?;
            let limits = self.limits_for(ctx);
            if items.is_empty() {
                return Ok(Vec::new());
            }
            if items.len() > limits.max_bulk_items {
                return Err(BulkError::whole(StorageError::invalid(
                    "items",
                    format!(
                        "has {} items; at most {} allowed",
                        items.len(),
                        limits.max_bulk_items
                    ),
                )));
            }
            let now = SystemTime::now();
            let mut seen = HashSet::with_capacity(items.len());
            let mut write_items = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let write = write_item(&item.key, &item.value, &item.options, now, &limits)
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
                limits,
                sweep_limit: TTL_SWEEP_BATCH,
                schema_version: None,
            };
            let pins: Vec<Option<u32>> = items.iter().map(|i| i.options.schema_version).collect();
            self.write(ctx, batch, &pins).await
        }
        .await;
        self.metrics.observe(
            "bulk_put",
            started,
            result.as_ref().err().map(|e: &BulkError| e.error.code()),
        );
        result
    }

    /// Checks schema pins and validates every value against the namespace's current schema,
    /// then writes, reporting quota events. The backend refuses a write validated against a
    /// version that is no longer current; the schema is then reloaded and the write retried.
    async fn write(
        &self,
        ctx: &CallContext,
        mut batch: WriteBatch<'_>,
        pins: &[Option<u32>],
    ) -> Result<Vec<WriteResult>, BulkError> {
        let mut fresh = false;
        for _attempt in 0..3 {
            let schema = self
                .current_schema(ctx, batch.namespace, fresh)
                .await
                .map_err(BulkError::whole)?;
            let stale_pin = pins.iter().enumerate().find_map(|(index, pin)| {
                pin.filter(|p| Some(*p) != schema.version)
                    .map(|p| (index, p))
            });
            if let Some((index, expected)) = stale_pin {
                if !fresh {
                    fresh = true; // the cache may be behind: decide on the current version
                    continue;
                }
                let current = schema.version;
                return Err(BulkError::at(
                    index,
                    StorageError::SchemaMismatch { expected, current },
                ));
            }
            if let Some(validator) = &schema.validator {
                for (index, item) in batch.items.iter().enumerate() {
                    let found = crate::schema::violations(validator, "value", item.value)
                        .map_err(|e| BulkError::at(index, e))?;
                    if !found.is_empty() {
                        return Err(BulkError::at(index, StorageError::ValidationFailed(found)));
                    }
                }
            }
            batch.schema_version = schema.version;
            match self.backend.put(ctx, &batch).await {
                Ok(outcome) => {
                    if let Some(change) = outcome.counters {
                        self.report_thresholds(ctx, &batch, &change);
                    }
                    self.metrics
                        .written(batch.items.iter().map(|i| i.size_bytes).sum());
                    return Ok(outcome.results);
                }
                Err(BulkError {
                    error: StorageError::SchemaMismatch { .. },
                    ..
                }) => {
                    // Another process registered a version since this one loaded its schema.
                    fresh = true;
                }
                Err(e) => {
                    if let StorageError::QuotaExceeded {
                        quota,
                        limit,
                        usage,
                    } = &e.error
                    {
                        self.metrics.quota_rejected(*quota);
                        self.observer.quota_exceeded(ctx, *quota, *limit, *usage);
                    }
                    return Err(e);
                }
            }
        }
        Err(BulkError::whole(StorageError::Unavailable(
            "the namespace's schema kept changing during the write; retry".into(),
        )))
    }

    fn report_thresholds(&self, ctx: &CallContext, batch: &WriteBatch<'_>, c: &CounterChange) {
        let limits = &batch.limits;
        let checks = [
            (
                Quota::KeysPerNamespace,
                Some(batch.namespace),
                c.namespace_keys,
                c.namespace_keys_delta,
                limits.max_keys_per_namespace,
            ),
            (
                Quota::TotalBytes,
                None,
                c.total_bytes,
                c.total_bytes_delta,
                limits.max_total_bytes,
            ),
            (
                Quota::Namespaces,
                None,
                c.namespaces,
                c.namespaces_delta,
                limits.max_namespaces,
            ),
        ];
        for (quota, namespace, after, delta, limit) in checks {
            let before = after.saturating_add_signed(-delta);
            for percent in crossed_thresholds(before, after, limit) {
                let event = QuotaThreshold {
                    quota,
                    namespace: namespace.map(str::to_owned),
                    percent,
                    used: after,
                    limit,
                };
                self.metrics.near_limit(quota, percent);
                self.observer.quota_threshold(ctx, &event);
            }
        }
    }

    /// Deletes `key`; true when a record was deleted, false when there was none.
    #[tracing::instrument(name = "storage.delete", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn delete(
        &self,
        ctx: &CallContext,
        namespace: &str,
        key: &str,
        precondition: Precondition,
    ) -> Result<bool, StorageError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Write)?;
            validate::namespace(namespace)?;
            validate::key(key, self.limits_for(ctx).max_key_bytes)?;
            self.backend
                .delete(
                    ctx,
                    namespace,
                    key,
                    precondition,
                    SystemTime::now(),
                    TTL_SWEEP_BATCH,
                )
                .await
        }
        .await;
        self.metrics.observe(
            "delete",
            started,
            result.as_ref().err().map(StorageError::code),
        );
        result
    }

    /// One page of records in key byte order.
    #[tracing::instrument(name = "storage.list", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), namespace = %namespace))]
    pub async fn list(
        &self,
        ctx: &CallContext,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<ListPage, StorageError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Read)?;
            self.list_page(ctx, namespace, options).await
        }
        .await;
        if let Ok(page) = &result {
            self.metrics
                .read(page.entries.iter().map(record_bytes).sum());
        }
        self.metrics.observe(
            "list",
            started,
            result.as_ref().err().map(StorageError::code),
        );
        result
    }

    /// A page of records, for the install of `ctx`, without the capability check (callers
    /// decide who may list).
    async fn list_page(
        &self,
        ctx: &CallContext,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<ListPage, StorageError> {
        validate::namespace(namespace)?;
        let limits = self.limits_for(ctx);
        let prefix = options.prefix.as_deref().unwrap_or("");
        validate::prefix(prefix, limits.max_key_bytes)?;
        let limit = options
            .limit
            .unwrap_or(DEFAULT_PAGE_SIZE.min(limits.max_page_size));
        validate::page_size(limit, limits.max_page_size)?;
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
    #[tracing::instrument(name = "storage.usage", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-")))]
    pub async fn usage(&self, ctx: &CallContext) -> Result<Usage, StorageError> {
        let started = Instant::now();
        let result = async {
            self.authorize(ctx, Access::Read)?;
            let quotas = self.limits_for(ctx);
            let counters = self.backend.usage(ctx, SystemTime::now()).await?;
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
        .await;
        self.metrics.observe(
            "usage",
            started,
            result.as_ref().err().map(StorageError::code),
        );
        result
    }
}

impl StorageService {
    /// Operator command: compares `ctx`'s install counters with its records and, with `apply`,
    /// repairs them (audited as `ctx.actor`). Needs no grant: it is not an extension's call.
    #[tracing::instrument(name = "storage.recount", skip_all, fields(tenant = %ctx.tenant_id, install = %ctx.install_id, request_id = ctx.request_id.as_deref().unwrap_or("-"), apply))]
    pub async fn recount(
        &self,
        ctx: &CallContext,
        apply: bool,
    ) -> Result<Vec<CounterDrift>, StorageError> {
        let drift = self.backend.recount(ctx, apply, SystemTime::now()).await?;
        if !drift.is_empty() {
            tracing::warn!(
                counters = drift.len(),
                apply,
                "usage counters drifted from the records"
            );
        }
        Ok(drift)
    }
}

/// What a call does with the install's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only: allowed with the full or the read-only grant.
    Read,
    /// Mutates: allowed with the full grant only.
    Write,
}

/// Refuses calls the context's grants do not cover.
fn grants_allow(ctx: &CallContext, access: Access) -> Result<(), StorageError> {
    if ctx.has_grant(STORAGE_CAPABILITY) {
        return Ok(());
    }
    match access {
        Access::Read if ctx.has_grant(STORAGE_READ_CAPABILITY) => Ok(()),
        Access::Write if ctx.has_grant(STORAGE_READ_CAPABILITY) => {
            Err(StorageError::CapabilityDenied(format!(
                "install {:?} has read-only access ({STORAGE_READ_CAPABILITY}); writes need {STORAGE_CAPABILITY}",
                ctx.install_id
            )))
        }
        _ => Err(StorageError::CapabilityDenied(format!(
            "install {:?} is not granted {STORAGE_CAPABILITY}",
            ctx.install_id
        ))),
    }
}

/// Validates one write and computes what the backend needs (expiry, size).
fn write_item<'a>(
    key: &'a str,
    value: &'a str,
    options: &'a PutOptions,
    now: SystemTime,
    limits: &Limits,
) -> Result<WriteItem<'a>, StorageError> {
    validate::key(key, limits.max_key_bytes)?;
    validate::json(
        "value",
        value,
        limits.max_value_bytes,
        limits.max_json_depth,
    )?;
    if let Some(metadata) = &options.metadata {
        validate::json(
            "metadata",
            metadata,
            limits.max_metadata_bytes,
            limits.max_json_depth,
        )?;
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
    })
}

/// Bytes of a record's value and metadata, as returned to the caller.
fn record_bytes(record: &Record) -> usize {
    record.value.as_ref().map_or(0, String::len) + record.metadata.as_ref().map_or(0, String::len)
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
