//! Running one configuration: workers loop over operations until the deadline, recording each
//! latency in an HDR histogram.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alga_storage::model::Precondition;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::{CpuMeter, CpuUse};
use crate::target::{PathKind, Request, Target};
use crate::workload::{
    Installs, Op, PRELOADED_KEYS, Rng, Spread, Workload, next_insert_id, preloaded_key, value,
};

/// One measured configuration: a path's phases over every round, with its ratio to the raw
/// path's phase of the same round.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Installs spread.
    pub spread: Spread,
    /// Workload.
    pub workload: Workload,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Path.
    pub path: PathKind,
    /// Completed operations, all rounds.
    pub ops: u64,
    /// Failed operations (0 in a sound run).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Throughput: the median of the rounds.
    pub ops_per_sec: f64,
    /// Throughput of each round.
    pub round_ops_per_sec: Vec<f64>,
    /// Median latency, µs (all rounds).
    pub p50_us: u64,
    /// 95th percentile latency, µs.
    pub p95_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// The median of `round_ratios` (set after the run).
    pub ratio_to_raw: Option<f64>,
    /// Throughput relative to the raw path's phase of the same round, per round.
    pub round_ratios: Vec<f64>,
    /// CPU time of the harness process per operation, µs: the host code under test and the
    /// load generator (the median of the rounds).
    pub harness_cpu_us_per_op: Option<f64>,
    /// CPU time of the database server per operation, µs, when it runs on this machine (the
    /// median of the rounds).
    pub db_cpu_us_per_op: Option<f64>,
    /// Of `db_cpu_us_per_op`, the server's client backends: the statements' own execution,
    /// without background work such as autovacuum (the median of the rounds).
    pub db_backends_cpu_us_per_op: Option<f64>,
    /// The harness's CPU time per operation in each round (`None`: not measured).
    pub round_harness_cpu_us_per_op: Vec<Option<f64>>,
    /// The database server's CPU time per operation in each round (`None`: not measured).
    pub round_db_cpu_us_per_op: Vec<Option<f64>>,
    /// The client backends' CPU time per operation in each round (`None`: not measured).
    pub round_db_backends_cpu_us_per_op: Vec<Option<f64>>,
    /// Instances made per operation, on the paths through the handler export: about 1 with an
    /// instance per operation (a little under, as the count starts when the phase's sampler
    /// reads it, just after the measurement starts); with warm instances, how often an
    /// operation found none of its install's idle (the median of the rounds).
    pub instances_made_per_op: Option<f64>,
    /// Instances made while each round was measured (`None`: not a handler path).
    pub round_instances_made: Vec<Option<u64>>,
}

impl RunResult {
    /// Sums up `phases`, one per round, of the configuration `spec`.
    pub fn from_phases(
        (spread, workload, concurrency, path): (Spread, Workload, usize, PathKind),
        phases: Vec<Phase>,
    ) -> Self {
        let mut all = Tally::default();
        let (mut round_ops_per_sec, mut harness_cpu, mut db_cpu, mut backends_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut made, mut made_per_op) = (Vec::new(), Vec::new());
        for phase in phases {
            let ops = phase.tally.histogram.len();
            let per_op = |n: Option<u64>| n.filter(|_| ops > 0).map(|n| n as f64 / ops as f64);
            harness_cpu.push(per_op(phase.cpu.harness_us));
            db_cpu.push(per_op(phase.cpu.db_us));
            backends_cpu.push(per_op(phase.cpu.db_backends_us));
            made.push(phase.instances_made);
            made_per_op.push(per_op(phase.instances_made));
            all.add(phase.tally);
            round_ops_per_sec.push(phase.ops_per_sec);
        }
        RunResult {
            spread,
            workload,
            concurrency,
            path,
            ops: all.histogram.len(),
            errors: all.errors,
            first_error: all.first_error,
            ops_per_sec: median(&round_ops_per_sec),
            round_ops_per_sec,
            p50_us: all.histogram.value_at_quantile(0.50),
            p95_us: all.histogram.value_at_quantile(0.95),
            p99_us: all.histogram.value_at_quantile(0.99),
            ratio_to_raw: None,
            round_ratios: Vec::new(),
            harness_cpu_us_per_op: median_of_measured(&harness_cpu),
            db_cpu_us_per_op: median_of_measured(&db_cpu),
            db_backends_cpu_us_per_op: median_of_measured(&backends_cpu),
            round_harness_cpu_us_per_op: harness_cpu,
            round_db_cpu_us_per_op: db_cpu,
            round_db_backends_cpu_us_per_op: backends_cpu,
            instances_made_per_op: median_of_measured(&made_per_op),
            round_instances_made: made,
        }
    }
}

/// Sets every result's ratios to the raw result of `group`, round by round.
pub fn set_ratios(group: &mut [RunResult]) {
    let Some(raw) = group.iter().find(|r| r.path == PathKind::Raw) else {
        return;
    };
    let raw = raw.round_ops_per_sec.clone();
    for result in group {
        result.round_ratios = (result.round_ops_per_sec.iter().zip(&raw))
            .map(|(ops, raw)| ops / raw)
            .collect();
        result.ratio_to_raw = Some(median(&result.round_ratios));
    }
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median of the rounds that were measured, if any was.
fn median_of_measured(rounds: &[Option<f64>]) -> Option<f64> {
    let measured: Vec<f64> = rounds.iter().flatten().copied().collect();
    (!measured.is_empty()).then(|| median(&measured))
}

/// The order of `paths` paths in round `round`: each round starts with the next path, so that
/// no path always runs first (on the least grown, least vacuumed tables).
pub fn round_order(paths: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..paths).map(move |i| (i + round) % paths)
}

/// One timed phase: one path, one round.
pub struct Phase {
    tally: Tally,
    ops_per_sec: f64,
    /// CPU time used while the phase was measured.
    cpu: CpuUse,
    /// Instances the target made while the phase was measured, on a path through the handler
    /// export.
    instances_made: Option<u64>,
}

/// Latencies of the successful operations and the failures, of a worker, a phase or all rounds.
struct Tally {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
            errors: 0,
            first_error: None,
        }
    }
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.histogram.add(&other.histogram).unwrap();
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// Runs `workload` on `target` with `concurrency` workers: a quarter of `duration` to warm
/// caches, connections and prepared statements (not recorded), then `duration` measured, with
/// the CPU time `meter` reads and the instances the target makes over the same span.
pub async fn run(
    target: Arc<Target>,
    installs: Arc<Installs>,
    workload: Workload,
    concurrency: usize,
    duration: Duration,
    meter: &CpuMeter,
) -> Phase {
    let measure_from = Instant::now() + duration / 4;
    let deadline = measure_from + duration;
    let (meter, counted) = (meter.clone(), target.clone());
    let measured = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let made_from = counted.instances_made();
        let cpu_from = meter.sample().await;
        tokio::time::sleep_until(deadline.into()).await;
        let made = made_from
            .zip(counted.instances_made())
            .map(|(from, to)| to - from);
        (meter.sample().await.since(&cpu_from), made)
    });
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (target, installs) = (target.clone(), installs.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut rng = Rng::new(worker as u64 + 1);
            let mut backlog = VecDeque::new();
            while Instant::now() < deadline {
                let begun = Instant::now();
                let result = one_op(
                    &target,
                    &installs,
                    workload,
                    worker,
                    concurrency,
                    &mut rng,
                    &mut backlog,
                )
                .await;
                let micros = begun.elapsed().as_micros() as u64;
                match result {
                    Ok(()) if begun < measure_from => {}
                    Ok(()) => tally.histogram.saturating_record(micros.max(1)),
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.add(worker.await.expect("worker panicked"));
    }
    let (cpu, instances_made) = measured.await.expect("the phase's sampler panicked");
    Phase {
        ops_per_sec: tally.histogram.len() as f64 / duration.as_secs_f64(),
        tally,
        cpu,
        instances_made,
    }
}

/// One operation of worker `worker` of `concurrency`, drawn by `rng`; `backlog` holds the keys
/// the worker made and has not deleted yet, with their installs, oldest first (`churn`).
async fn one_op(
    target: &Target,
    installs: &Installs,
    workload: Workload,
    worker: usize,
    concurrency: usize,
    rng: &mut Rng,
    backlog: &mut VecDeque<(usize, String)>,
) -> anyhow::Result<()> {
    let drawn = rng.below(installs.names().len() as u64) as usize;
    let op = workload.op(rng.below(100), backlog.len());
    // A delete is of the worker's oldest key, in the install it was made in.
    let oldest = match op {
        Op::Delete => backlog.pop_front(),
        _ => None,
    };
    let install_index = oldest.as_ref().map_or(drawn, |(install, _)| *install);
    let install = installs.names()[install_index].as_str();
    let namespace = workload.namespace();
    let request = |key, value, precondition| Request {
        install,
        namespace,
        key,
        value,
        precondition,
    };
    match op {
        Op::Get => {
            let key = preloaded_key(rng.below(PRELOADED_KEYS as u64) as usize);
            target.get(&request(&key, "", Precondition::None)).await
        }
        Op::List => target.list(&request("", "", Precondition::None)).await,
        Op::Insert => {
            let key = format!("i-{}", next_insert_id());
            let value = value(0);
            target
                .put(&request(&key, &value, Precondition::Absent))
                .await?;
            if workload == Workload::Churn {
                backlog.push_back((install_index, key));
            }
            Ok(())
        }
        Op::Delete => {
            // Made by this worker, at revision 1.
            let (_, key) = oldest.context("a delete with no key of the worker's")?;
            target
                .delete(&request(&key, "", Precondition::Revision(1)))
                .await
        }
        Op::Update => {
            // Worker w owns the preloaded keys w, w + c, w + 2c, …: no two workers race.
            let owned = (PRELOADED_KEYS - worker).div_ceil(concurrency) as u64;
            let index = worker + concurrency * rng.below(owned) as usize;
            let key = preloaded_key(index);
            let revision = installs.revision(workload, install_index, index);
            let current = revision.load(Ordering::Relaxed);
            let value = value(current + 1);
            target
                .put(&request(&key, &value, Precondition::Revision(current)))
                .await?;
            revision.store(current + 1, Ordering::Relaxed);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{median, round_order};

    #[test]
    fn every_path_leads_one_round_of_as_many() {
        let orders: Vec<Vec<usize>> = (0..4)
            .map(|round| round_order(4, round).collect())
            .collect();
        assert_eq!(orders[0], [0, 1, 2, 3]);
        assert_eq!(orders[1], [1, 2, 3, 0]);
        let mut leaders: Vec<usize> = orders.iter().map(|order| order[0]).collect();
        leaders.sort();
        assert_eq!(leaders, [0, 1, 2, 3]);
        for order in &orders {
            let mut paths = order.clone();
            paths.sort();
            assert_eq!(paths, [0, 1, 2, 3], "each path once per round");
        }
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[0.7]), 0.7);
        assert_eq!(median(&[]), 0.0);
    }
}
