//! Runs `wasi:cli/command` components with storage attached: what `alga-storage run` and the
//! conformance tests use. A Runner embeds [`super::add_to_linker`] in its own store instead.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{OtherInstall, StorageCtx, StorageView};
use crate::context::CallContext;
use crate::service::StorageService;

/// Most output captured from one run, per stream.
const CAPTURE_LIMIT: usize = 1024 * 1024;

/// How often the engine's epoch advances: the granularity of [`GuestLimits::max_run_time`].
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most core instances, linear memories and tables per store (a component has a handful).
const MAX_CORE_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 4;
const MAX_TABLES: usize = 64;

/// Bytes of a pooled linear memory reset in place rather than unmapped: a Rust guest's 1 MiB
/// stack, its data and a small heap.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Bytes of a pooled table reset in place (8 bytes per element).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Epoch ticks in `budget` (at least one): the deadline to set on a store of an engine that
/// [`start_epoch_ticker`] advances.
pub fn epoch_ticks(budget: Duration) -> u64 {
    u64::try_from(budget.as_millis() / EPOCH_TICK.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What one guest instance may consume. A component that exceeds a limit traps; the host and
/// every other instance keep running. Runner engineers set the same limits on their own
/// stores (see `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Most linear memory of one instance, in bytes (memory growth beyond it traps).
    pub max_memory_bytes: usize,
    /// Most elements of one wasm table.
    pub max_table_elements: usize,
    /// Most wall-clock time of one run (an epoch deadline); an endless loop traps after it.
    pub max_run_time: Duration,
    /// Most host resources (WASI streams, handles) one instance may hold at once.
    pub max_resources: usize,
}

impl GuestLimits {
    /// 64 MiB of memory, 20,000 table elements, 10 s per run, 1,000 resources.
    pub const DEFAULT: GuestLimits = GuestLimits {
        max_memory_bytes: 64 << 20,
        max_table_elements: 20_000,
        max_run_time: Duration::from_secs(10),
        max_resources: 1_000,
    };
}

impl GuestLimits {
    /// A store for one instance held to these limits: its memory and tables (the limiter), its
    /// host resources, and its time (an epoch deadline of the whole budget, which traps; set
    /// a fresh one before each call on an instance that serves several).
    pub fn store(&self, engine: &Engine, wasi: WasiCtx, storage: StorageCtx) -> Store<GuestState> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.max_resources);
        let state = GuestState {
            wasi,
            table,
            storage,
            limits: self.store_limits(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(epoch_ticks(self.max_run_time));
        store.epoch_deadline_trap();
        store
    }

    /// The store limiter that holds one instance to these limits (`Store::limiter`), for a
    /// Runner's own store data.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.max_memory_bytes)
            .table_elements(self.max_table_elements)
            // The memory limit is per linear memory: bound how many there can be.
            .instances(MAX_CORE_INSTANCES)
            .memories(MAX_MEMORIES)
            .tables(MAX_TABLES)
            .trap_on_grow_failure(true)
            .build()
    }
}

/// Starts a thread that advances `engine`'s epoch every 10 ms, so that epoch deadlines
/// ([`epoch_ticks`]) interrupt guest code; it stops once the returned token and its clones are
/// dropped.
pub fn start_epoch_ticker(engine: &Engine) -> std::io::Result<Arc<()>> {
    let ticker = Arc::new(());
    let (engine, alive) = (engine.clone(), Arc::downgrade(&ticker));
    std::thread::Builder::new()
        .name("alga-storage-epoch".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
    Ok(ticker)
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Store data of one guest instance: WASI plus storage, and the store's limits. Made by
/// [`GuestLimits::store`]; a Runner whose instances need nothing else can link against it.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    storage: StorageCtx,
    limits: StoreLimits,
}

impl GuestState {
    /// The caller the instance acts for.
    pub fn call(&self) -> &CallContext {
        self.storage.call()
    }

    /// The caller of the instance's next request: the same tenant, install and extension
    /// ([`StorageCtx::set_call`]).
    pub fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall> {
        self.storage.set_call(call)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StorageView for GuestState {
    fn storage(&mut self) -> &mut StorageCtx {
        &mut self.storage
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// `Ok` when `run` returned success; the error (exit failure or trap) otherwise.
    pub result: Result<(), String>,
    /// Captured standard output (empty when inherited).
    pub stdout: String,
    /// Captured standard error (empty when inherited).
    pub stderr: String,
}

impl RunOutcome {
    /// Whether the component ran to success.
    pub fn success(&self) -> bool {
        self.result.is_ok()
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Environment variables visible to the component.
    pub env: Vec<(String, String)>,
    /// Arguments (after the program name).
    pub args: Vec<String>,
    /// Capture stdout/stderr into the outcome instead of inheriting the host's.
    pub capture_output: bool,
}

/// Compiles and runs command components against one storage service.
pub struct CommandRunner {
    engine: Engine,
    linker: Linker<GuestState>,
    service: StorageService,
    limits: GuestLimits,
    /// Keeps the epoch ticker thread alive while the runner or any of its instances exists.
    ticker: Arc<()>,
}

impl std::fmt::Debug for CommandRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRunner").finish_non_exhaustive()
    }
}

/// A component linked once ([`wasmtime::component::InstancePre`]): instantiating it again is
/// cheap, as a Runner does per request.
pub struct PreparedCommand {
    pre: CommandPre<GuestState>,
}

impl std::fmt::Debug for PreparedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCommand").finish_non_exhaustive()
    }
}

/// An instantiated command, ready to run once.
pub struct InstantiatedCommand {
    store: Store<GuestState>,
    command: Command,
    pipes: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    max_run_time: Duration,
    _ticker: Arc<()>,
}

impl std::fmt::Debug for InstantiatedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantiatedCommand")
            .finish_non_exhaustive()
    }
}

/// An engine configuration with the pooling instance allocator sized for `max_instances` live
/// instances, each slot reset in place where the kernel allows: what [`CommandRunner::pooled`]
/// uses, for Runners that link their own worlds.
pub fn pooling_config(max_instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // A store keeps the fiber stack of its async calls while it lives, so every live instance
    // may hold one: wasmtime's own bound (1,000) would refuse calls on more instances.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(4))
        .total_memories(max_instances.saturating_mul(2))
        .total_tables(max_instances.saturating_mul(2))
        .total_stacks(max_instances)
        .max_memory_size(128 << 20);
    // Returning a slot decommits what is not kept resident, and every decommit flushes the
    // TLB of each core: batched, one flush serves many instances (+12 % wasm get in the
    // harness, c16).
    pool.decommit_batch_size((max_instances as usize / 2).clamp(1, 64));
    // Where the kernel can say which pages an instance dirtied (Linux 6.7+, PAGEMAP_SCAN),
    // only those are reset, in place, and the slot stays mapped: the next instance takes no
    // page fault and no TLB flush. Without it every written page faults again, and a
    // copy-on-write fault interrupts the other cores (+40 % wasm get in the harness, c16).
    // Per warm slot, at most these many dirtied bytes stay resident. Without the scan,
    // keeping memory resident means zeroing all of it, which measured no better.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl CommandRunner {
    /// A runner whose components use `service`, with on-demand instance allocation and the
    /// default [`GuestLimits`].
    pub fn new(service: StorageService) -> wasmtime::Result<Self> {
        Self::with_limits(service, GuestLimits::DEFAULT)
    }

    /// A runner with on-demand instance allocation and `limits` on every instance.
    pub fn with_limits(service: StorageService, limits: GuestLimits) -> wasmtime::Result<Self> {
        let mut runner = Self::with_config(service, &Config::new())?;
        runner.limits = limits;
        Ok(runner)
    }

    /// A runner with the pooling instance allocator sized for `max_instances` live instances:
    /// what a Runner serving many short requests uses ([`pooling_config`]).
    pub fn pooled(service: StorageService, max_instances: u32) -> wasmtime::Result<Self> {
        Self::with_config(service, &pooling_config(max_instances))
    }

    fn with_config(service: StorageService, config: &Config) -> wasmtime::Result<Self> {
        let mut config = config.clone();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::add_to_linker(&mut linker)?;
        let ticker = start_epoch_ticker(&engine)?;
        Ok(Self {
            engine,
            linker,
            service,
            limits: GuestLimits::DEFAULT,
            ticker,
        })
    }

    /// Compiles a component from its bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.engine, bytes)
    }

    /// Links `component` once for many instantiations.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<PreparedCommand> {
        let pre = self.linker.instantiate_pre(component)?;
        Ok(PreparedCommand {
            pre: CommandPre::new(pre)?,
        })
    }

    /// Instantiates `prepared` for `call`, without running it.
    pub async fn instantiate(
        &self,
        prepared: &PreparedCommand,
        call: CallContext,
        options: &RunOptions,
    ) -> wasmtime::Result<InstantiatedCommand> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&options.env);
        let mut args = vec!["component".to_owned()];
        args.extend(options.args.iter().cloned());
        wasi.args(&args);
        let pipes = if options.capture_output {
            let (out, err) = (
                MemoryOutputPipe::new(CAPTURE_LIMIT),
                MemoryOutputPipe::new(CAPTURE_LIMIT),
            );
            wasi.stdout(out.clone()).stderr(err.clone());
            Some((out, err))
        } else {
            wasi.inherit_stdout().inherit_stderr();
            None
        };
        let storage = StorageCtx::new(self.service.clone(), call);
        // Instantiation has the whole budget too; `run` starts a fresh one.
        let mut store = self.limits.store(&self.engine, wasi.build(), storage);
        let command = prepared.pre.instantiate_async(&mut store).await?;
        Ok(InstantiatedCommand {
            store,
            command,
            pipes,
            max_run_time: self.limits.max_run_time,
            _ticker: self.ticker.clone(),
        })
    }

    /// Instantiates `component` for `call` and runs its `wasi:cli/run` export.
    pub async fn run(
        &self,
        component: &Component,
        call: CallContext,
        options: &RunOptions,
    ) -> wasmtime::Result<RunOutcome> {
        let prepared = self.prepare(component)?;
        self.instantiate(&prepared, call, options)
            .await?
            .run()
            .await
    }
}

impl InstantiatedCommand {
    /// Runs the command's `wasi:cli/run` export to completion.
    /// The run's time budget starts here: the epoch deadline stops guest code that runs too
    /// long, and a timer stops a guest blocked in a host call (a sleep, a stream) as long.
    pub async fn run(mut self) -> wasmtime::Result<RunOutcome> {
        self.store
            .set_epoch_deadline(epoch_ticks(self.max_run_time));
        let call = self.command.wasi_cli_run().call_run(&mut self.store);
        let result = match tokio::time::timeout(self.max_run_time, call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(()))) => Err("the component's run returned an error".to_owned()),
            Ok(Err(trap)) => Err(format!("{trap:?}")),
            Err(_) => Err(format!(
                "interrupted: the run exceeded its {} ms budget while waiting in the host",
                self.max_run_time.as_millis()
            )),
        };
        let (stdout, stderr) = match self.pipes {
            Some((out, err)) => (
                String::from_utf8_lossy(&out.contents()).into_owned(),
                String::from_utf8_lossy(&err.contents()).into_owned(),
            ),
            None => (String::new(), String::new()),
        };
        Ok(RunOutcome {
            result,
            stdout,
            stderr,
        })
    }
}
