//! Events the service reports to the embedder's observability (metrics, alerts). The default
//! observer logs them with `tracing`.

use crate::context::CallContext;
use crate::error::Quota;

/// A write moved an install's usage of a quota across a near-limit threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaThreshold {
    /// Which quota.
    pub quota: Quota,
    /// The namespace, for the per-namespace key quota.
    pub namespace: Option<String>,
    /// The threshold crossed upwards (one of [`crate::limits::NEAR_LIMIT_PERCENTS`]).
    pub percent: u8,
    /// Usage after the write.
    pub used: u64,
    /// The quota's limit.
    pub limit: u64,
}

/// Receives the service's events. Methods have defaults, so implement only what you need.
pub trait StorageObserver: Send + Sync + 'static {
    /// Usage crossed a near-limit threshold upwards.
    fn quota_threshold(&self, ctx: &CallContext, event: &QuotaThreshold) {
        tracing::warn!(
            target: "alga_storage::quota",
            tenant = %ctx.tenant_id,
            install = %ctx.install_id,
            quota = event.quota.as_str(),
            namespace = event.namespace.as_deref().unwrap_or(""),
            percent = event.percent,
            used = event.used,
            limit = event.limit,
            "quota usage crossed a near-limit threshold"
        );
    }

    /// A write was refused by a quota.
    fn quota_exceeded(&self, ctx: &CallContext, quota: Quota, limit: u64, usage: u64) {
        tracing::info!(
            target: "alga_storage::quota",
            tenant = %ctx.tenant_id,
            install = %ctx.install_id,
            quota = quota.as_str(),
            limit,
            usage,
            "write refused by quota"
        );
    }
}

/// Logs every event with `tracing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingObserver;

impl StorageObserver for TracingObserver {}

/// The thresholds crossed upwards when usage moves from `before` to `after` against `limit`.
pub fn crossed_thresholds(before: u64, after: u64, limit: u64) -> impl Iterator<Item = u8> {
    crate::limits::NEAR_LIMIT_PERCENTS
        .into_iter()
        .filter(move |&percent| {
            let at = |used: u64| u128::from(used) * 100 >= u128::from(limit) * u128::from(percent);
            limit > 0 && !at(before) && at(after)
        })
}

#[cfg(test)]
mod tests {
    use super::crossed_thresholds;

    #[test]
    fn thresholds() {
        let crossed = |b, a, l| crossed_thresholds(b, a, l).collect::<Vec<_>>();
        assert_eq!(crossed(79, 80, 100), [80]);
        assert_eq!(crossed(80, 81, 100), Vec::<u8>::new());
        assert_eq!(crossed(10, 99, 100), [80, 95]);
        assert_eq!(crossed(94, 95, 100), [95]);
        assert_eq!(crossed(95, 20, 100), Vec::<u8>::new());
        assert_eq!(crossed(0, 1, 0), Vec::<u8>::new());
        assert_eq!(crossed(7, 8, 10), [80]);
        assert_eq!(crossed(0, u64::MAX, u64::MAX), [80, 95]);
    }
}
