//! Measurements beside the throughput table: the cost of a list page as a namespace grows, and
//! component instantiation from `InstancePre`.

use std::sync::Arc;
use std::time::Instant;

use alga_storage::backend::postgres::PgBackend;
use alga_storage::model::ListOptions;
use alga_storage::service::cursor;
use alga_storage::{CallContext, STORAGE_CAPABILITY, StorageService};
use alga_storage_tests::TestDb;
use serde::Serialize;

use crate::workload::Rng;

/// Latency of a 100-record page in a small and a large namespace.
#[derive(Debug, Clone, Serialize)]
pub struct ListScaling {
    /// Keys in the small namespace.
    pub small_keys: usize,
    /// Keys in the large namespace.
    pub large_keys: usize,
    /// Median page latency in the small namespace, µs.
    pub small_p50_us: u64,
    /// Median page latency in the large namespace, µs.
    pub large_p50_us: u64,
    /// `large_p50_us / small_p50_us`.
    pub ratio: f64,
}

/// Instantiation latency of the bench guest from `InstancePre`, an instance's phases, and a
/// storage call through a warm instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instantiation {
    /// Samples per allocator.
    pub samples: usize,
    /// Median with the pooling allocator, µs.
    pub pooled_p50_us: u64,
    /// 99th percentile with the pooling allocator, µs.
    pub pooled_p99_us: u64,
    /// Median with on-demand allocation, µs.
    pub on_demand_p50_us: u64,
    /// An instance per operation taken apart (the handler guest, pooled, no storage call):
    /// medians of making it, its first call, a second (warm) call and dropping it, ns.
    pub lifecycle_p50_ns: Lifecycle,
    /// A get through a warm instance against the service's, sequential on one record, and a
    /// call right after that get and the same call again: medians, ns.
    pub storage_call_p50_ns: StorageCall,
}

/// Medians of an instance's phases, ns (`handlers::lifecycle_nanos`).
#[derive(Debug, Clone, Serialize)]
pub struct Lifecycle {
    /// Its store and instantiation from `InstancePre`.
    pub make: u64,
    /// The first call of its export.
    pub first_call: u64,
    /// A second call: what a warm instance costs per request.
    pub warm_call: u64,
    /// Dropping it: the store freed, the slot reset and returned.
    pub drop: u64,
}

/// Medians of a warm instance's storage call, ns (`handlers::storage_call_nanos`).
#[derive(Debug, Clone, Serialize)]
pub struct StorageCall {
    /// The service's get of the record.
    pub service_get: u64,
    /// The same get through a warm instance.
    pub warm_get: u64,
    /// A call the guest refuses (no storage call), right after the get.
    pub call_after_get: u64,
    /// That call again.
    pub call_again: u64,
}

const PAGES: usize = 300;

/// Fills namespaces of 1,000 and `large` keys by SQL, then reads pages of 100 at random positions
/// through the service.
pub async fn list_scaling(server: &str, large: usize) -> anyhow::Result<ListScaling> {
    let db = TestDb::new_on(server).await;
    let client = db.client().await;
    for (namespace, count) in [("small", 1_000usize), ("large", large)] {
        client
            .execute(
                "INSERT INTO ext_storage_records
                     (tenant_id, extension_install_id, namespace, key, value, revision,
                      size_bytes, created_at, updated_at)
                 SELECT 'scale', 'scale', $1, 'k' || lpad(i::text, 8, '0'),
                        jsonb_build_object('i', i), 1, 20, now(), now()
                   FROM generate_series(1, $2::bigint) AS i",
                &[&namespace, &(count as i64)],
            )
            .await?;
    }
    client.batch_execute("ANALYZE ext_storage_records").await?;
    let service = StorageService::new(Arc::new(PgBackend::connect(&db.url, 2)?));
    let call = CallContext::new("scale", "scale").grant(STORAGE_CAPABILITY);
    let mut medians = Vec::new();
    for (namespace, count) in [("small", 1_000usize), ("large", large)] {
        let mut rng = Rng::new(7);
        let mut micros = Vec::with_capacity(PAGES);
        for sample in 0..PAGES + 20 {
            let start = 1 + rng.below((count - 100) as u64);
            let options = ListOptions {
                cursor: Some(cursor::encode(namespace, "", &format!("k{start:08}"))),
                limit: Some(100),
                ..Default::default()
            };
            let begun = Instant::now();
            let page = service.list(&call, namespace, &options).await?;
            let elapsed = begun.elapsed().as_micros() as u64;
            anyhow::ensure!(page.entries.len() == 100, "short page in {namespace}");
            if sample >= 20 {
                micros.push(elapsed); // the first pages warm caches and prepared statements
            }
        }
        medians.push(median(&mut micros));
    }
    Ok(ListScaling {
        small_keys: 1_000,
        large_keys: large,
        small_p50_us: medians[0],
        large_p50_us: medians[1],
        ratio: medians[1] as f64 / medians[0].max(1) as f64,
    })
}

/// Instantiates the bench guest `samples` times per allocator, then takes `samples` instances
/// apart, and times `samples` rounds of a get through the service and through a warm
/// instance followed by two calls on that instance.
pub async fn instantiation(server: &str, samples: usize) -> anyhow::Result<Instantiation> {
    let db = TestDb::new_on(server).await;
    let mut pooled = crate::target::instantiation_micros(&db.url, true, samples).await?;
    let mut on_demand = crate::target::instantiation_micros(&db.url, false, samples).await?;
    pooled.sort_unstable();
    let service = db.service();
    let [mut make, mut first_call, mut warm_call, mut dropped] =
        crate::handlers::lifecycle_nanos(service.clone(), samples).await?;
    let [
        mut service_get,
        mut warm_get,
        mut call_after_get,
        mut call_again,
    ] = crate::handlers::storage_call_nanos(service, samples).await?;
    Ok(Instantiation {
        samples,
        pooled_p50_us: median(&mut pooled),
        pooled_p99_us: pooled[(pooled.len() * 99 / 100).min(pooled.len() - 1)],
        on_demand_p50_us: median(&mut on_demand),
        lifecycle_p50_ns: Lifecycle {
            make: median(&mut make),
            first_call: median(&mut first_call),
            warm_call: median(&mut warm_call),
            drop: median(&mut dropped),
        },
        storage_call_p50_ns: StorageCall {
            service_get: median(&mut service_get),
            warm_get: median(&mut warm_get),
            call_after_get: median(&mut call_after_get),
            call_again: median(&mut call_again),
        },
    })
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}
