//! Runs `wasi:cli/command` components with storage attached: what `alga-storage run` and the
//! conformance tests use. A Runner embeds [`super::add_to_linker`] in its own store instead.

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{StorageCtx, StorageView};
use crate::context::CallContext;
use crate::service::StorageService;

/// Most output captured from one run, per stream.
const CAPTURE_LIMIT: usize = 1024 * 1024;

/// Store data of one command run: WASI plus storage.
struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    storage: StorageCtx,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StorageView for RunState {
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
    linker: Linker<RunState>,
    service: StorageService,
}

impl std::fmt::Debug for CommandRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRunner").finish_non_exhaustive()
    }
}

/// A component linked once ([`wasmtime::component::InstancePre`]): instantiating it again is
/// cheap, as a Runner does per request.
pub struct PreparedCommand {
    pre: CommandPre<RunState>,
}

impl std::fmt::Debug for PreparedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCommand").finish_non_exhaustive()
    }
}

/// An instantiated command, ready to run once.
pub struct InstantiatedCommand {
    store: Store<RunState>,
    command: Command,
    pipes: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
}

impl std::fmt::Debug for InstantiatedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantiatedCommand")
            .finish_non_exhaustive()
    }
}

impl CommandRunner {
    /// A runner whose components use `service`, with on-demand instance allocation.
    pub fn new(service: StorageService) -> wasmtime::Result<Self> {
        Self::with_config(service, &Config::new())
    }

    /// A runner with the pooling instance allocator sized for `max_instances` live instances:
    /// what a Runner serving many short requests uses.
    pub fn pooled(service: StorageService, max_instances: u32) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * 4)
            .total_memories(max_instances * 2)
            .total_tables(max_instances * 2)
            .max_memory_size(128 << 20);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        Self::with_config(service, &config)
    }

    fn with_config(service: StorageService, config: &Config) -> wasmtime::Result<Self> {
        let mut config = config.clone();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::add_to_linker(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            service,
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
        let state = RunState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            storage: StorageCtx::new(self.service.clone(), call),
        };
        let mut store = Store::new(&self.engine, state);
        let command = prepared.pre.instantiate_async(&mut store).await?;
        Ok(InstantiatedCommand {
            store,
            command,
            pipes,
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
    pub async fn run(mut self) -> wasmtime::Result<RunOutcome> {
        let result = match self.command.wasi_cli_run().call_run(&mut self.store).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err("the component's run returned an error".to_owned()),
            Err(trap) => Err(format!("{trap:?}")),
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
