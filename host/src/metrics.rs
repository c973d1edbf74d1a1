//! Prometheus metrics of the storage service (`prometheus-client`). Labels are bounded: the
//! operation, the outcome code, the quota and the threshold — never a tenant, install, namespace
//! or key. The gateway serves them at `/metrics`; embedders register them in their own registry
//! with [`StorageMetrics::register`].

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::backend::{Backend, PoolStatus};
use crate::error::Quota;

/// Operation and outcome (`ok` or the error code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `get`, `put`, `bulk_put`, `delete`, `list`, `usage`, `schema`.
    pub operation: &'static str,
    /// `ok` or the stable error code.
    pub outcome: &'static str,
}

/// One operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: &'static str,
}

/// A quota.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// `namespaces`, `keys-per-namespace`, `total-bytes`.
    pub quota: &'static str,
}

/// A quota and a near-limit threshold.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdLabels {
    /// The quota.
    pub quota: &'static str,
    /// `80` or `95`.
    pub percent: &'static str,
}

/// The service's metrics. Cheap to clone (counters are shared).
#[derive(Clone)]
pub struct StorageMetrics {
    operations: Family<OutcomeLabels, Counter>,
    duration: Family<OperationLabels, Histogram>,
    read_bytes: Counter,
    written_bytes: Counter,
    quota_rejections: Family<QuotaLabels, Counter>,
    near_limit: Family<ThresholdLabels, Counter>,
    backend_errors: Family<OutcomeLabels, Counter>,
    pool: PoolCollector,
}

impl fmt::Debug for StorageMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageMetrics").finish_non_exhaustive()
    }
}

impl StorageMetrics {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            operations: Family::default(),
            // 0.5 ms … ~4 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            read_bytes: Counter::default(),
            written_bytes: Counter::default(),
            quota_rejections: Family::default(),
            near_limit: Family::default(),
            backend_errors: Family::default(),
            pool: PoolCollector(backend),
        }
    }

    /// Registers every metric in `registry` (the gateway's, or the embedder's own).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "alga_storage_operations",
            "Storage operations by operation and outcome (ok or the error code)",
            self.operations.clone(),
        );
        registry.register(
            "alga_storage_operation_duration_seconds",
            "Latency of storage operations in the service, including the database",
            self.duration.clone(),
        );
        registry.register(
            "alga_storage_read_bytes",
            "Bytes of values and metadata returned by reads",
            self.read_bytes.clone(),
        );
        registry.register(
            "alga_storage_written_bytes",
            "Bytes of keys, values and metadata committed by writes",
            self.written_bytes.clone(),
        );
        registry.register(
            "alga_storage_quota_rejections",
            "Writes refused by a quota",
            self.quota_rejections.clone(),
        );
        registry.register(
            "alga_storage_quota_near_limit",
            "Writes that moved an install's usage across a near-limit threshold",
            self.near_limit.clone(),
        );
        registry.register(
            "alga_storage_backend_errors",
            "Operations that failed in the database layer, by class (unavailable or internal)",
            self.backend_errors.clone(),
        );
        registry.register_collector(Box::new(self.pool.clone()));
    }

    /// The metrics in the OpenMetrics text format, from a registry of their own.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    pub(crate) fn observe(
        &self,
        operation: &'static str,
        started: Instant,
        error: Option<&'static str>,
    ) {
        let outcome = error.unwrap_or("ok");
        self.operations
            .get_or_create(&OutcomeLabels { operation, outcome })
            .inc();
        self.duration
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        if matches!(outcome, "unavailable" | "internal") {
            self.backend_errors
                .get_or_create(&OutcomeLabels { operation, outcome })
                .inc();
        }
    }

    pub(crate) fn read(&self, bytes: usize) {
        self.read_bytes.inc_by(bytes as u64);
    }

    pub(crate) fn written(&self, bytes: u64) {
        self.written_bytes.inc_by(bytes);
    }

    pub(crate) fn quota_rejected(&self, quota: Quota) {
        self.quota_rejections
            .get_or_create(&QuotaLabels {
                quota: quota.as_str(),
            })
            .inc();
    }

    pub(crate) fn near_limit(&self, quota: Quota, percent: u8) {
        let percent = if percent >= 95 { "95" } else { "80" };
        self.near_limit
            .get_or_create(&ThresholdLabels {
                quota: quota.as_str(),
                percent,
            })
            .inc();
    }
}

/// Reads the connection pool's state at scrape time.
#[derive(Clone)]
struct PoolCollector(Arc<dyn Backend>);

impl fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolCollector")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(PoolStatus {
            max_size,
            size,
            available,
            waiting,
        }) = self.0.pool_status()
        else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "alga_storage_pool_max_connections",
                "Most connections the pool opens",
                max_size,
            ),
            ("alga_storage_pool_connections", "Connections open", size),
            (
                "alga_storage_pool_idle_connections",
                "Connections open and idle",
                available,
            ),
            (
                "alga_storage_pool_waiters",
                "Operations waiting for a connection",
                waiting,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
