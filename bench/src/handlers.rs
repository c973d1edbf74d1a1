//! The paths through the harness's handler guest, whose `handle` export does one operation:
//! `wasm-export` makes an instance per operation (from `InstancePre`, pooling allocator), as a
//! Runner that instantiates per request calls its handler; `wasm-warm` keeps instances warm,
//! one per install reused for that install's requests, as a Runner that keeps instances would.
//!
//! A warm instance serves one install only: guest memory lives on between requests, so sharing
//! an instance across installs would let one install's data reach another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use alga_storage::StorageService;
use alga_storage::wasm::warm::{WarmInstances, WarmLimits};
use alga_storage_tests::handler::{HandlerInstance, HandlerRunner};

/// The warm path's default: every instance the harness's workers leave idle is kept, for any
/// number of installs and workers, so it measures reuse, not eviction. `--warm-limits` gives
/// a Runner's limits instead, to see the memory they bound.
pub const KEEP_ALL: WarmLimits = WarmLimits {
    max_idle_per_install: usize::MAX,
    max_idle: usize::MAX,
};

/// `--warm-limits`: `PER_INSTALL,TOTAL`, two counts of idle instances.
pub fn parse_warm_limits(text: &str) -> Result<WarmLimits, String> {
    let counts: Vec<usize> = text
        .split(',')
        .map(|count| count.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    match counts[..] {
        [max_idle_per_install, max_idle] => Ok(WarmLimits {
            max_idle_per_install,
            max_idle,
        }),
        _ => Err(format!("{text:?}: two counts, PER_INSTALL,TOTAL")),
    }
}

/// The handler component and, when instances are kept warm, the idle instances of each install.
pub struct Handlers {
    runner: HandlerRunner,
    /// Idle instances by install, when instances are kept warm; else each is dropped after its
    /// operation.
    warm: Option<WarmInstances<HandlerInstance>>,
    /// Instances made so far, for the report: how often an operation found no idle instance.
    made: AtomicU64,
}

impl Handlers {
    /// Instances kept warm per install within `limits`, allocated on demand (each made once
    /// per install unless the limits dropped it).
    pub fn warm(service: StorageService, limits: WarmLimits) -> anyhow::Result<Self> {
        let runner = HandlerRunner::new(service, alga_storage_tests::BENCH_HANDLER)
            .map_err(crate::target::wasm_error)?;
        Ok(Self {
            runner,
            warm: Some(WarmInstances::new(limits)),
            made: AtomicU64::new(0),
        })
    }

    /// An instance per operation, from the pooling allocator.
    pub fn per_operation(service: StorageService) -> anyhow::Result<Self> {
        let runner = HandlerRunner::pooled(
            service,
            alga_storage_tests::BENCH_HANDLER,
            crate::target::POOLED_INSTANCES,
        )
        .map_err(crate::target::wasm_error)?;
        Ok(Self {
            runner,
            warm: None,
            made: AtomicU64::new(0),
        })
    }

    /// Runs one operation on an instance of `install`: a warm one if there is one idle (acting
    /// for this request's caller, as a Runner's would), else a new one.
    pub async fn handle(
        &self,
        install: &str,
        op: &str,
        namespace: &str,
        key: &str,
        value: &str,
        revision: u64,
    ) -> anyhow::Result<()> {
        let call = crate::target::call(install);
        let idle = match &self.warm {
            Some(warm) => warm.take(call),
            None => Err(call),
        };
        let mut instance = match idle {
            Ok(instance) => instance,
            Err(call) => {
                let made = self.runner.instantiate(call).await;
                let made = made.map_err(crate::target::wasm_error)?;
                self.made.fetch_add(1, Ordering::Relaxed);
                made
            }
        };
        // A trap leaves the instance unusable: it is dropped, not put back.
        let outcome = instance
            .handle(op, namespace, key, value, revision)
            .await
            .map_err(crate::target::wasm_error)?;
        if let Some(warm) = &self.warm {
            warm.put_back(instance);
        }
        outcome.map_err(|e| anyhow::anyhow!("guest failed: {e}"))
    }

    /// Idle instances, all installs.
    pub fn idle_instances(&self) -> usize {
        self.warm.as_ref().map_or(0, WarmInstances::idle)
    }

    /// Instances made so far, for operations that succeeded or failed: one per operation
    /// without warm instances; with them, one per operation that found none of its install's
    /// idle (the install's first, one while all its instances were busy, or one after the
    /// limits or a trap dropped them).
    pub fn instances_made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }
}

/// An instance per operation taken apart, with the pooling allocator: `samples` times, the
/// nanoseconds of making an instance (its store and instantiation), its first call, a second
/// call on it (a warm call) and dropping it, in that order. The calls are of an operation the
/// guest refuses before any storage call, so no database is in the figures.
pub async fn lifecycle_nanos(
    service: StorageService,
    samples: usize,
) -> anyhow::Result<[Vec<u64>; 4]> {
    let runner = HandlerRunner::pooled(service, alga_storage_tests::BENCH_HANDLER, 16)
        .map_err(crate::target::wasm_error)?;
    let call = crate::target::call("lifecycle");
    let mut nanos: [Vec<u64>; 4] = Default::default();
    for _ in 0..samples {
        let mut times = [Instant::now(); 5];
        let mut instance = runner
            .instantiate(call.clone())
            .await
            .map_err(crate::target::wasm_error)?;
        times[1] = Instant::now();
        for called in &mut times[2..4] {
            refused_call(&mut instance).await?;
            *called = Instant::now();
        }
        drop(instance);
        times[4] = Instant::now();
        for (phase, nanos) in nanos.iter_mut().enumerate() {
            nanos.push((times[phase + 1] - times[phase]).as_nanos() as u64);
        }
    }
    Ok(nanos)
}

/// A storage call through a warm instance, sequential: `samples` times, on one record, the
/// nanoseconds of the service's get, the same get through the instance (allocated on demand,
/// as the warm path's are), a call the guest refuses made right after it and that call again,
/// in that order. The first of the two calls follows a database round trip (the thread
/// waited; the server and the kernel ran), the second follows the first: the difference is
/// what the wait costs the call, most likely in cold caches.
pub async fn storage_call_nanos(
    service: StorageService,
    samples: usize,
) -> anyhow::Result<[Vec<u64>; 4]> {
    let runner = HandlerRunner::new(service.clone(), alga_storage_tests::BENCH_HANDLER)
        .map_err(crate::target::wasm_error)?;
    let call = crate::target::call("storage-call");
    let (namespace, key) = (crate::workload::NAMESPACE, "record");
    let options = Default::default();
    let value = crate::workload::value(0);
    service.put(&call, namespace, key, &value, &options).await?;
    let mut instance = runner
        .instantiate(call.clone())
        .await
        .map_err(crate::target::wasm_error)?;
    let mut nanos: [Vec<u64>; 4] = Default::default();
    for _ in 0..samples {
        let mut times = [Instant::now(); 5];
        let found = service.get(&call, namespace, key).await?;
        anyhow::ensure!(found.is_some(), "the service lost the record");
        times[1] = Instant::now();
        let got = instance.handle("get", namespace, key, "", 0).await;
        got.map_err(crate::target::wasm_error)?
            .map_err(|e| anyhow::anyhow!("the guest's get failed: {e}"))?;
        times[2] = Instant::now();
        for called in &mut times[3..5] {
            refused_call(&mut instance).await?;
            *called = Instant::now();
        }
        for (phase, nanos) in nanos.iter_mut().enumerate() {
            nanos.push((times[phase + 1] - times[phase]).as_nanos() as u64);
        }
    }
    Ok(nanos)
}

/// Calls an operation the guest refuses before any storage call: the export's cost alone.
async fn refused_call(instance: &mut HandlerInstance) -> anyhow::Result<()> {
    let refused = instance.handle("none", "bench", "k", "", 0).await;
    let refused = refused.map_err(crate::target::wasm_error)?;
    anyhow::ensure!(refused.is_err(), "the guest did an unknown operation");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_limits_are_two_counts() {
        assert_eq!(parse_warm_limits("4,1024"), Ok(WarmLimits::DEFAULT));
        assert_eq!(
            parse_warm_limits(" 1 , 2 "),
            Ok(WarmLimits {
                max_idle_per_install: 1,
                max_idle: 2,
            })
        );
        for bad in ["", "4", "4,1024,1", "4,x", "-1,2"] {
            let refused = parse_warm_limits(bad).expect_err(bad);
            assert!(refused.starts_with(&format!("{bad:?}: ")), "{refused}");
        }
        assert!(
            parse_warm_limits("4")
                .unwrap_err()
                .contains("PER_INSTALL,TOTAL"),
            "a lone count says what is expected"
        );
    }
}
