//! The paths an operation can take: the storage service, a guest component in wasmtime, the
//! REST gateway over loopback HTTP, and hand-written SQL (the raw baseline, and the bare upsert
//! without counters or audit).

use std::sync::Arc;
use std::time::SystemTime;

use alga_storage::backend::postgres::PgBackend;
use alga_storage::model::{ListOptions, Precondition, PutOptions};
use alga_storage::wasm::command::{CommandRunner, PreparedCommand, RunOptions};
use alga_storage::wasm::warm::WarmLimits;
use alga_storage::{CallContext, Limits, STORAGE_CAPABILITY, StorageService};
use deadpool_postgres::Pool;
use serde::Serialize;

use crate::handlers::Handlers;

/// Live instances the per-operation wasm paths' pools hold at most (the harness runs up to 64
/// operations at once).
pub const POOLED_INSTANCES: u32 = 256;

/// Which path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// `StorageService` called directly.
    Service,
    /// A guest component instantiated per operation (from `InstancePre`, pooling allocator).
    Wasm,
    /// A guest component's export called on an instance per operation (from `InstancePre`,
    /// pooling allocator), as a Runner instantiating per request calls its handler
    /// (`crate::handlers`).
    WasmExport,
    /// The same export on warm instances: one per install, called for its operations
    /// (`crate::handlers`).
    WasmWarm,
    /// The REST gateway over loopback HTTP, as an iframe calls it (one keep-alive client).
    Rest,
    /// tokio-postgres executing the minimal SQL doing the same durable work by hand.
    Raw,
    /// The raw SQL as a role held to a per-install row level security policy (`crate::rls`).
    RawRls,
    /// One upsert statement: no precondition, counters or audit (reference only).
    Bare,
}

/// One concrete operation.
pub struct Request<'a> {
    /// The install.
    pub install: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The key.
    pub key: &'a str,
    /// The value to write.
    pub value: &'a str,
    /// The precondition of writes and deletes.
    pub precondition: Precondition,
}

/// Executes operations over one path.
pub enum Target {
    /// Through the service.
    Service(Box<StorageService>),
    /// Through a guest component.
    Wasm(Box<(CommandRunner, PreparedCommand)>),
    /// Through a guest component's export, on an instance per operation or warm ones.
    Handler(Box<Handlers>),
    /// The REST gateway.
    Rest(Box<crate::rest::RestTarget>),
    /// Hand-written SQL.
    Raw(Pool),
    /// Hand-written SQL behind row level security.
    RawRls(Pool),
    /// One upsert statement.
    Bare(Pool),
}

/// The context of a benchmark call for `install`.
pub fn call(install: &str) -> CallContext {
    CallContext::new(crate::workload::TENANT, install)
        .grant(STORAGE_CAPABILITY)
        .actor("bench")
}

impl Target {
    /// Builds the target for `kind` over `url` with `pool_size` connections; a warm path keeps
    /// idle instances within `warm_limits`.
    pub async fn new(
        kind: PathKind,
        url: &str,
        pool_size: usize,
        warm_limits: WarmLimits,
    ) -> anyhow::Result<Self> {
        let backend = PgBackend::connect(url, pool_size)?;
        let pool = backend.pool().clone();
        // The harness measures speed, not quotas: its installs may grow without bound (the
        // quota checks still run on every write), on every path through the service.
        let service =
            StorageService::new(Arc::new(backend)).with_limits(Limits::CONTRACT, Limits::CONTRACT);
        Ok(match kind {
            PathKind::Service => Target::Service(Box::new(service)),
            PathKind::Wasm => {
                let runner =
                    CommandRunner::pooled(service, POOLED_INSTANCES).map_err(wasm_error)?;
                let bytes = std::fs::read(alga_storage_tests::BENCH_OP)?;
                let component = runner.compile(&bytes).map_err(wasm_error)?;
                let prepared = runner.prepare(&component).map_err(wasm_error)?;
                Target::Wasm(Box::new((runner, prepared)))
            }
            PathKind::WasmExport => Target::Handler(Box::new(Handlers::per_operation(service)?)),
            PathKind::WasmWarm => Target::Handler(Box::new(Handlers::warm(service, warm_limits)?)),
            PathKind::Rest => {
                Target::Rest(Box::new(crate::rest::RestTarget::start(service).await?))
            }
            PathKind::Raw => Target::Raw(pool),
            PathKind::RawRls => Target::RawRls(crate::rls::setup(url, pool_size).await?),
            PathKind::Bare => Target::Bare(pool),
        })
    }

    /// Instances made so far by a path through the handler export (`None` on other paths).
    pub fn instances_made(&self) -> Option<u64> {
        match self {
            Target::Handler(handlers) => Some(handlers.instances_made()),
            _ => None,
        }
    }

    /// Inserts or updates `req.key` (the precondition says which).
    pub async fn put(&self, req: &Request<'_>) -> anyhow::Result<()> {
        match self {
            Target::Service(service) => {
                let options = PutOptions {
                    precondition: req.precondition,
                    ..Default::default()
                };
                service
                    .put(
                        &call(req.install),
                        req.namespace,
                        req.key,
                        req.value,
                        &options,
                    )
                    .await?;
            }
            Target::Wasm(wasm) => {
                let (op, revision) = guest_write(req.precondition);
                let args = [op, req.namespace, req.key, req.value, &revision.to_string()];
                run_wasm(wasm, req.install, args.map(String::from).into()).await?;
            }
            Target::Handler(handlers) => {
                let (op, revision) = guest_write(req.precondition);
                handlers
                    .handle(req.install, op, req.namespace, req.key, req.value, revision)
                    .await?;
            }
            Target::Rest(rest) => rest.put(req).await?,
            Target::Raw(pool) => crate::raw::write(pool, req, false).await?,
            Target::RawRls(pool) => crate::raw::write(pool, req, true).await?,
            Target::Bare(pool) => crate::raw::bare_upsert(pool, req).await?,
        }
        Ok(())
    }

    /// Deletes `req.key` at the revision of `req.precondition`; not deleting it (a conflict or
    /// a missing key) is a failure.
    pub async fn delete(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let Precondition::Revision(revision) = req.precondition else {
            anyhow::bail!("the harness deletes at a revision");
        };
        match self {
            Target::Service(service) => {
                let deleted = service
                    .delete(&call(req.install), req.namespace, req.key, req.precondition)
                    .await?;
                anyhow::ensure!(deleted, "{} missing", req.key);
            }
            Target::Wasm(wasm) => {
                let revision = revision.to_string();
                let args = ["delete", req.namespace, req.key, "", &revision];
                run_wasm(wasm, req.install, args.map(String::from).into()).await?;
            }
            Target::Handler(handlers) => {
                handlers
                    .handle(req.install, "delete", req.namespace, req.key, "", revision)
                    .await?;
            }
            Target::Rest(rest) => rest.delete(req, revision).await?,
            Target::Raw(pool) => crate::raw::delete(pool, req, revision, false).await?,
            Target::RawRls(pool) => crate::raw::delete(pool, req, revision, true).await?,
            Target::Bare(_) => anyhow::bail!("the bare upsert has no delete"),
        }
        Ok(())
    }

    /// Reads `req.key`.
    pub async fn get(&self, req: &Request<'_>) -> anyhow::Result<()> {
        match self {
            Target::Service(service) => {
                let record = service
                    .get(&call(req.install), req.namespace, req.key)
                    .await?;
                anyhow::ensure!(record.is_some(), "{} missing", req.key);
            }
            Target::Wasm(wasm) => {
                let args = vec!["get".into(), req.namespace.into(), req.key.into()];
                run_wasm(wasm, req.install, args).await?;
            }
            Target::Handler(handlers) => {
                handlers
                    .handle(req.install, "get", req.namespace, req.key, "", 0)
                    .await?;
            }
            Target::Rest(rest) => rest.get(req).await?,
            Target::Raw(pool) | Target::Bare(pool) => crate::raw::get(pool, req, false).await?,
            Target::RawRls(pool) => crate::raw::get(pool, req, true).await?,
        }
        Ok(())
    }

    /// Reads the first page of 100 records of the install's namespace.
    pub async fn list(&self, req: &Request<'_>) -> anyhow::Result<()> {
        match self {
            Target::Service(service) => {
                let options = ListOptions {
                    limit: Some(100),
                    ..Default::default()
                };
                let page = service
                    .list(&call(req.install), req.namespace, &options)
                    .await?;
                anyhow::ensure!(page.entries.len() == 100, "short page");
            }
            Target::Wasm(wasm) => {
                let args = vec!["list".into(), req.namespace.into(), "-".into()];
                run_wasm(wasm, req.install, args).await?;
            }
            Target::Handler(handlers) => {
                handlers
                    .handle(req.install, "list", req.namespace, "-", "", 0)
                    .await?;
            }
            Target::Rest(rest) => rest.list(req).await?,
            Target::Raw(pool) | Target::Bare(pool) => crate::raw::list(pool, req, false).await?,
            Target::RawRls(pool) => crate::raw::list(pool, req, true).await?,
        }
        Ok(())
    }
}

/// The bench guests' operation for a write with `precondition`, and the revision it expects.
fn guest_write(precondition: Precondition) -> (&'static str, u64) {
    match precondition {
        Precondition::Revision(r) => ("update", r),
        _ => ("insert", 0),
    }
}

async fn run_wasm(
    wasm: &(CommandRunner, PreparedCommand),
    install: &str,
    args: Vec<String>,
) -> anyhow::Result<()> {
    let (runner, prepared) = wasm;
    let options = RunOptions {
        args,
        capture_output: true,
        ..RunOptions::default()
    };
    let outcome = runner
        .instantiate(prepared, call(install), &options)
        .await
        .map_err(wasm_error)?
        .run()
        .await
        .map_err(wasm_error)?;
    anyhow::ensure!(outcome.success(), "guest failed: {}", outcome.stderr);
    Ok(())
}

/// Measures instantiation from `InstancePre`: `samples` instantiations, durations in µs.
pub async fn instantiation_micros(
    url: &str,
    pooled: bool,
    samples: usize,
) -> anyhow::Result<Vec<u64>> {
    let service = StorageService::new(Arc::new(PgBackend::connect(url, 1)?));
    let runner = if pooled {
        CommandRunner::pooled(service, 16)
    } else {
        CommandRunner::new(service)
    }
    .map_err(wasm_error)?;
    let component = runner
        .compile(&std::fs::read(alga_storage_tests::BENCH_OP)?)
        .map_err(wasm_error)?;
    let prepared = runner.prepare(&component).map_err(wasm_error)?;
    let mut micros = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = SystemTime::now();
        let instance = runner
            .instantiate(&prepared, call("inst"), &RunOptions::default())
            .await
            .map_err(wasm_error)?;
        micros.push(started.elapsed()?.as_micros() as u64);
        drop(instance);
    }
    Ok(micros)
}

/// A wasmtime error as an `anyhow` one, with its context chain.
pub fn wasm_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}
