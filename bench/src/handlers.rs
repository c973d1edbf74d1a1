//! The paths through the harness's handler guest, whose `handle` export does one operation:
//! `wasm-export` makes an instance per operation (from `InstancePre`, pooling allocator), as a
//! Runner that instantiates per request calls its handler; `wasm-warm` keeps instances warm,
//! one per install reused for that install's requests, as a Runner that keeps instances would.
//!
//! A warm instance serves one install only: guest memory lives on between requests, so sharing
//! an instance across installs would let one install's data reach another.

use std::collections::HashMap;
use std::sync::Mutex;

use alga_storage::StorageService;
use alga_storage_tests::handler::{HandlerInstance, HandlerRunner};

/// The handler component and, when instances are kept warm, the idle instances of each install.
pub struct Handlers {
    runner: HandlerRunner,
    /// Whether an instance is put back for its install's next request, or dropped.
    keep_warm: bool,
    /// Idle instances by install; a request takes one (or makes one) and puts it back. An
    /// install has as many as it had requests at once.
    idle: Mutex<HashMap<String, Vec<HandlerInstance>>>,
}

impl Handlers {
    /// Instances kept warm per install, allocated on demand (each made once per install).
    pub fn warm(service: StorageService) -> anyhow::Result<Self> {
        let runner = HandlerRunner::new(service, alga_storage_tests::BENCH_HANDLER)
            .map_err(crate::target::wasm_error)?;
        Ok(Self::with_runner(runner, true))
    }

    /// An instance per operation, from the pooling allocator.
    pub fn per_operation(service: StorageService) -> anyhow::Result<Self> {
        let runner = HandlerRunner::pooled(
            service,
            alga_storage_tests::BENCH_HANDLER,
            crate::target::POOLED_INSTANCES,
        )
        .map_err(crate::target::wasm_error)?;
        Ok(Self::with_runner(runner, false))
    }

    fn with_runner(runner: HandlerRunner, keep_warm: bool) -> Self {
        Self {
            runner,
            keep_warm,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one operation on an instance of `install`: a warm one if there is one idle, else
    /// a new one.
    pub async fn handle(
        &self,
        install: &str,
        op: &str,
        namespace: &str,
        key: &str,
        value: &str,
        revision: u64,
    ) -> anyhow::Result<()> {
        let idle = if self.keep_warm {
            self.take(install)
        } else {
            None
        };
        let mut instance = match idle {
            Some(instance) => instance,
            None => self
                .runner
                .instantiate(crate::target::call(install))
                .await
                .map_err(crate::target::wasm_error)?,
        };
        // A trap leaves the instance unusable: it is dropped, not put back.
        let outcome = instance
            .handle(op, namespace, key, value, revision)
            .await
            .map_err(crate::target::wasm_error)?;
        if self.keep_warm {
            self.put_back(install, instance);
        }
        outcome.map_err(|e| anyhow::anyhow!("guest failed: {e}"))
    }

    /// Idle instances, all installs.
    pub fn idle_instances(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn take(&self, install: &str) -> Option<HandlerInstance> {
        self.lock().get_mut(install).and_then(Vec::pop)
    }

    fn put_back(&self, install: &str, instance: HandlerInstance) {
        let mut idle = self.lock();
        match idle.get_mut(install) {
            Some(instances) => instances.push(instance),
            None => {
                idle.insert(install.to_owned(), vec![instance]);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<HandlerInstance>>> {
        // A panic while the map was held cannot leave it half-changed: use it as it is.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
