//! The host side of the fixtures' `handler` world (`fixtures/wit/handler.wit`): a component
//! whose `handle` export a Runner calls per request, on a new instance or on one kept warm for
//! the install. The load harness's `wasm-export` and `wasm-warm` paths run `BENCH_HANDLER`
//! through it.

use std::sync::Arc;

use alga_storage::wasm::command::{
    GuestLimits, GuestState, epoch_ticks, pooling_config, start_epoch_ticker,
};
use alga_storage::wasm::warm::WarmInstance;
use alga_storage::wasm::{OtherInstall, StorageCtx};
use alga_storage::{CallContext, StorageService};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;

mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit", "../fixtures/wit"],
        world: "alga:fixtures/handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "alga:storage/store": alga_storage::wasm::store },
    });
}

/// A handler component, compiled and linked once. Its instances have the limits of the
/// command runner's ([`GuestLimits::DEFAULT`]), the time budget per call.
pub struct HandlerRunner {
    engine: Engine,
    pre: bindings::HandlerPre<GuestState>,
    service: StorageService,
    limits: GuestLimits,
    /// Keeps the epoch ticker thread alive while the runner exists.
    _ticker: Arc<()>,
}

impl std::fmt::Debug for HandlerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRunner").finish_non_exhaustive()
    }
}

impl HandlerRunner {
    /// Compiles the component at `path` and links it to WASI and `service`. Instances are
    /// allocated on demand: for warm instances, made once per install (a store keeps the
    /// fiber stack of its calls).
    pub fn new(service: StorageService, path: &str) -> wasmtime::Result<Self> {
        Self::with_config(service, path, Config::new())
    }

    /// As [`HandlerRunner::new`], with instances from the pooling allocator sized for
    /// `max_instances` live ones: for an instance per request.
    pub fn pooled(
        service: StorageService,
        path: &str,
        max_instances: u32,
    ) -> wasmtime::Result<Self> {
        Self::with_config(service, path, pooling_config(max_instances))
    }

    fn with_config(
        service: StorageService,
        path: &str,
        mut config: Config,
    ) -> wasmtime::Result<Self> {
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let ticker = start_epoch_ticker(&engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        alga_storage::wasm::add_to_linker(&mut linker)?;
        let component = Component::from_file(&engine, path)?;
        let pre = bindings::HandlerPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Self {
            engine,
            pre,
            service,
            limits: GuestLimits::DEFAULT,
            _ticker: ticker,
        })
    }

    /// A new instance acting as `call`.
    pub async fn instantiate(&self, call: CallContext) -> wasmtime::Result<HandlerInstance> {
        let storage = StorageCtx::new(self.service.clone(), call);
        let mut store = self
            .limits
            .store(&self.engine, WasiCtx::builder().build(), storage);
        let handler = self.pre.instantiate_async(&mut store).await?;
        Ok(HandlerInstance {
            store,
            handler,
            budget: epoch_ticks(self.limits.max_run_time),
        })
    }
}

/// One instance of a handler: call [`HandlerInstance::handle`] as often as needed.
pub struct HandlerInstance {
    store: Store<GuestState>,
    handler: bindings::Handler,
    /// Epoch ticks each call may run.
    budget: u64,
}

impl std::fmt::Debug for HandlerInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerInstance")
            .field("call", self.call())
            .finish_non_exhaustive()
    }
}

impl HandlerInstance {
    /// The caller the instance acts for.
    pub fn call(&self) -> &CallContext {
        self.store.data().call()
    }

    /// The caller of the next request, of the same tenant, install and extension.
    pub fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall> {
        self.store.data_mut().set_call(call)
    }

    /// Calls the guest's `handle`, with a fresh time budget. The outer error is a trap (the
    /// instance must not be used again); the inner one the operation's failure, reported by the
    /// guest. Only the epoch deadline bounds the call: unlike `InstantiatedCommand::run`, no
    /// timer stops a guest waiting in a host call (the harness's guest makes storage calls
    /// only); a Runner serving arbitrary guests adds one (`docs/operations.md`).
    pub async fn handle(
        &mut self,
        op: &str,
        namespace: &str,
        key: &str,
        value: &str,
        revision: u64,
    ) -> wasmtime::Result<Result<(), String>> {
        self.store.set_epoch_deadline(self.budget);
        self.handler
            .call_handle(&mut self.store, op, namespace, key, value, revision)
            .await
    }
}

impl WarmInstance for HandlerInstance {
    fn call(&self) -> &CallContext {
        HandlerInstance::call(self)
    }

    fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall> {
        HandlerInstance::set_call(self, call)
    }
}
