//! The `wasm-warm` path: the harness's handler guest kept warm, one instance per install reused
//! for that install's requests (as a Runner that keeps instances warm would), against the `wasm`
//! path's instance per operation.
//!
//! An instance serves one install only: guest memory lives on between requests, so sharing an
//! instance across installs would let one install's data reach another.

use std::collections::HashMap;
use std::sync::Mutex;

use alga_storage::StorageService;
use alga_storage_tests::handler::{HandlerInstance, HandlerRunner};

/// The handler component and the idle instances of each install.
pub struct WarmHandlers {
    runner: HandlerRunner,
    /// Idle instances by install; a request takes one (or makes one) and puts it back. An
    /// install has as many as it had requests at once.
    idle: Mutex<HashMap<String, Vec<HandlerInstance>>>,
}

impl WarmHandlers {
    /// Compiles the harness's handler guest over `service`.
    pub fn new(service: StorageService) -> anyhow::Result<Self> {
        let runner = HandlerRunner::new(service, alga_storage_tests::BENCH_HANDLER)
            .map_err(crate::target::wasm_error)?;
        Ok(Self {
            runner,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one operation on a warm instance of `install` (made on its first request).
    pub async fn handle(
        &self,
        install: &str,
        op: &str,
        namespace: &str,
        key: &str,
        value: &str,
        revision: u64,
    ) -> anyhow::Result<()> {
        let mut instance = match self.take(install) {
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
        self.put_back(install, instance);
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
