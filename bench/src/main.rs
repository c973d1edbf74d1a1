//! `alga-storage-bench`: see the crate docs and `docs/performance.md`.

use std::time::Duration;

use alga_storage::wasm::warm::WarmLimits;
use alga_storage_bench::handlers::KEEP_ALL;
use alga_storage_bench::target::PathKind;
use alga_storage_bench::workload::{Spread, Workload};
use alga_storage_bench::{Config, run_suite};
use clap::Parser;

/// Load harness: the storage service, guest components and raw SQL, measured in one run.
#[derive(Parser)]
#[command(name = "alga-storage-bench")]
struct Args {
    /// PostgreSQL server where the harness may create (and drop) its databases.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Milliseconds per configuration.
    #[arg(long, default_value_t = 3000)]
    duration_ms: u64,
    /// Worker counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// Installs of the "many" spread.
    #[arg(long, default_value_t = 1000)]
    installs: usize,
    /// Paths besides raw.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [PathKind::Bare, PathKind::Service, PathKind::Wasm, PathKind::WasmExport, PathKind::WasmWarm, PathKind::Rest])]
    paths: Vec<PathKind>,
    /// Workloads.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Insert, Workload::Update, Workload::UpdateValidated, Workload::Get, Workload::List, Workload::Mix, Workload::Churn])]
    workloads: Vec<Workload>,
    /// Spreads.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Spread::Many, Spread::Hot])]
    spreads: Vec<Spread>,
    /// Keys of the large namespace of the list-scaling measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    scale_keys: usize,
    /// Samples of the instantiation measurement (0 skips it).
    #[arg(long, default_value_t = 2000)]
    instantiations: usize,
    /// Database connections of each path's pool, at least 2 (default: the largest worker
    /// count). With fewer connections than workers, the workers queue on the pool.
    #[arg(long)]
    pool_size: Option<usize>,
    /// Rounds per configuration: the paths take turns, each round starting with the next one;
    /// ops/s and ratios to raw are the medians of the rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Idle instances the warm path keeps, per install and in all (`4,1024` are a Runner's
    /// defaults, `WarmLimits::DEFAULT`); without it every idle instance is kept.
    #[arg(long, value_parser = alga_storage_bench::handlers::parse_warm_limits)]
    warm_limits: Option<WarmLimits>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config {
        database_url: args.database_url,
        duration: Duration::from_millis(args.duration_ms),
        concurrency: args.concurrency,
        installs: args.installs,
        paths: args.paths,
        workloads: args.workloads,
        spreads: args.spreads,
        scale_keys: args.scale_keys,
        instantiations: args.instantiations,
        pool_size: args.pool_size,
        rounds: args.rounds,
        warm_limits: args.warm_limits.unwrap_or(KEEP_ALL),
    };
    let report = run_suite(&config, |line| eprintln!("{line}")).await?;
    println!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
