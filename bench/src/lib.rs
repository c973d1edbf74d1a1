//! The alga-storage load harness: simulated extension workloads through the storage service,
//! guest components in wasmtime, and hand-written SQL, in one run, so every figure has a
//! full-stack / raw ratio. See `docs/performance.md`.

pub mod cpu;
pub mod handlers;
pub mod http_client;
pub mod raw;
pub mod report;
pub mod rest;
pub mod rls;
pub mod run;
pub mod scaling;
pub mod target;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use alga_storage::model::{PutItem, PutOptions};
use alga_storage::wasm::warm::WarmLimits;
use alga_storage::{CallContext, STORAGE_CAPABILITY, StorageService};
use alga_storage_tests::TestDb;

use report::Report;
use run::{Phase, RunResult};
use target::{PathKind, Target};
use workload::{
    Installs, NAMESPACE, PRELOADED_KEYS, Spread, TENANT, VALIDATED_NAMESPACE, VALUE_SCHEMA,
    WRITTEN_TABLES, Workload,
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL server where the harness creates (and drops) its databases.
    pub database_url: String,
    /// Duration of each configuration.
    pub duration: Duration,
    /// Worker counts.
    pub concurrency: Vec<usize>,
    /// Installs of the "many" spread.
    pub installs: usize,
    /// Paths to compare (raw is always included when another path is).
    pub paths: Vec<PathKind>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Spreads.
    pub spreads: Vec<Spread>,
    /// Keys of the large namespace in the list-scaling measurement (0 skips it).
    pub scale_keys: usize,
    /// Samples of the instantiation measurement (0 skips it).
    pub instantiations: usize,
    /// Connections of each path's pool; `None`: the largest worker count.
    pub pool_size: Option<usize>,
    /// Rounds per configuration: every path runs once per round, the report gives the medians.
    pub rounds: usize,
    /// Idle instances the warm path keeps ([`handlers::KEEP_ALL`]: every one).
    pub warm_limits: WarmLimits,
}

impl Config {
    /// The largest worker count.
    fn max_concurrency(&self) -> usize {
        self.concurrency.iter().copied().max().unwrap_or(1)
    }

    /// Connections of each path's pool: `pool_size`, else the largest worker count (at least 2).
    pub fn connections(&self) -> usize {
        self.pool_size.unwrap_or(self.max_concurrency()).max(2)
    }
}

/// Runs every configuration; `progress` is told about each result as it arrives.
pub async fn run_suite(config: &Config, progress: impl Fn(&str)) -> anyhow::Result<Report> {
    let mut report = Report::new(config);
    report.rss_kb_start = report::rss_kb();
    anyhow::ensure!(
        config.max_concurrency() <= PRELOADED_KEYS,
        "at most {PRELOADED_KEYS} workers"
    );
    anyhow::ensure!(config.rounds > 0, "at least one round");
    let total = config.spreads.len() * config.workloads.len() * config.concurrency.len();
    let mut done = 0;
    for &spread in &config.spreads {
        let db = TestDb::new_on(&config.database_url).await;
        let installs = Arc::new(Installs::new(spread, config.installs));
        progress(&format!(
            "preloading {} install(s) of {spread:?}",
            installs.names().len()
        ));
        preload(&db, &installs).await?;
        let meter = cpu::CpuMeter::locate(db.client().await).await?;
        let maintenance = db.client().await;
        let mut targets = Vec::new();
        for &path in &paths_with_raw(config) {
            let target =
                Target::new(path, &db.url, config.connections(), config.warm_limits).await?;
            targets.push((path, Arc::new(target)));
        }
        for &workload in &config.workloads {
            for &concurrency in &config.concurrency {
                let writes = matches!(workload, Workload::Insert | Workload::Update);
                // The bare upsert is the reference for plain writes only.
                let measured: Vec<_> = targets
                    .iter()
                    .filter(|(path, _)| *path != PathKind::Bare || writes)
                    .collect();
                let mut phases: Vec<Vec<Phase>> = measured.iter().map(|_| Vec::new()).collect();
                for round in 0..config.rounds {
                    for i in run::round_order(measured.len(), round) {
                        settle(&maintenance).await?;
                        let target = measured[i].1.clone();
                        let phase = run::run(
                            target,
                            installs.clone(),
                            workload,
                            concurrency,
                            config.duration,
                            &meter,
                        )
                        .await;
                        phases[i].push(phase);
                    }
                }
                let mut group: Vec<RunResult> = (measured.iter().zip(phases))
                    .map(|((path, _), phases)| {
                        RunResult::from_phases((spread, workload, concurrency, *path), phases)
                    })
                    .collect();
                run::set_ratios(&mut group);
                done += 1;
                progress(&format!(
                    "[{done}/{total}] {spread:?} {workload:?} c={concurrency}: {}",
                    report::summary(&group)
                ));
                report.runs.extend(group);
            }
        }
    }
    if config.scale_keys > 0 {
        progress(&format!(
            "list scaling: 1,000 vs {} keys",
            config.scale_keys
        ));
        report.list_scaling =
            Some(scaling::list_scaling(&config.database_url, config.scale_keys).await?);
    }
    if config.instantiations > 0 {
        progress("instantiation from InstancePre");
        report.instantiation =
            Some(scaling::instantiation(&config.database_url, config.instantiations).await?);
    }
    report.rss_kb_end = report::rss_kb();
    Ok(report)
}

/// Vacuums and analyzes the tables the workloads write, before each phase and outside its
/// measurement. Every phase then starts from tables without dead rows, and the autovacuum and
/// autoanalyze that one phase's writes call for do not run (and count) during the next phase,
/// which may be another path's.
async fn settle(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let sql = format!("VACUUM (ANALYZE) {}", WRITTEN_TABLES.join(", "));
    client
        .batch_execute(&sql)
        .await
        .context("vacuum between phases")
}

fn paths_with_raw(config: &Config) -> Vec<PathKind> {
    let mut paths = vec![PathKind::Raw];
    paths.extend(config.paths.iter().filter(|p| **p != PathKind::Raw));
    paths
}

/// Writes the preloaded keys of every install through the service (so counters are right).
async fn preload(db: &TestDb, installs: &Installs) -> anyhow::Result<()> {
    let service: StorageService = db.service();
    let value = workload::value(1);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in installs.names().chunks(installs.names().len().div_ceil(4)) {
        let (service, names, value) = (service.clone(), chunk.to_vec(), value.clone());
        tasks.spawn(async move {
            for install in names {
                let call = CallContext::new(TENANT, &install).grant(STORAGE_CAPABILITY);
                service
                    .register_schema(&call, VALIDATED_NAMESPACE, VALUE_SCHEMA)
                    .await?;
                let items: Vec<PutItem> = (0..PRELOADED_KEYS)
                    .map(|i| PutItem {
                        key: workload::preloaded_key(i),
                        value: value.clone(),
                        options: PutOptions::default(),
                    })
                    .collect();
                for namespace in [NAMESPACE, VALIDATED_NAMESPACE] {
                    for part in items.chunks(100) {
                        service
                            .bulk_put(&call, namespace, part)
                            .await
                            .map_err(|e| anyhow::anyhow!("preload: {e}"))?;
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(concurrency: Vec<usize>, pool_size: Option<usize>) -> Config {
        Config {
            database_url: String::new(),
            duration: Duration::from_millis(1),
            concurrency,
            installs: 1,
            paths: Vec::new(),
            workloads: Vec::new(),
            spreads: Vec::new(),
            scale_keys: 0,
            instantiations: 0,
            pool_size,
            rounds: 1,
            warm_limits: handlers::KEEP_ALL,
        }
    }

    #[test]
    fn pools_have_one_connection_per_worker_unless_sized() {
        assert_eq!(config(vec![1, 16, 64], None).connections(), 64);
        assert_eq!(config(vec![16], Some(4)).connections(), 4);
        // Never fewer than two.
        assert_eq!(config(vec![1], None).connections(), 2);
        assert_eq!(config(vec![16], Some(1)).connections(), 2);
        assert_eq!(config(Vec::new(), None).connections(), 2);
    }
}
