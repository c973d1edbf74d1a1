//! The report: a table on stdout, and JSON for the record.

use serde::Serialize;

use crate::Config;
use crate::run::RunResult;
use crate::scaling::{Instantiation, ListScaling};

/// Everything one run of the harness measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// Milliseconds per configuration and round.
    pub duration_ms: u128,
    /// Rounds per configuration.
    pub rounds: usize,
    /// Database connections of each path's pool.
    pub pool_size: usize,
    /// Idle instances the warm path keeps per install; `None`: no limit.
    pub warm_max_idle_per_install: Option<usize>,
    /// Idle instances the warm path keeps in all; `None`: no limit.
    pub warm_max_idle: Option<usize>,
    /// Throughput and latency per configuration.
    pub runs: Vec<RunResult>,
    /// List page cost in a small and a large namespace.
    pub list_scaling: Option<ListScaling>,
    /// Component instantiation latency.
    pub instantiation: Option<Instantiation>,
    /// Resident memory of the harness at start, KiB.
    pub rss_kb_start: Option<u64>,
    /// Resident memory of the harness at the end, KiB.
    pub rss_kb_end: Option<u64>,
}

impl Report {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            duration_ms: config.duration.as_millis(),
            rounds: config.rounds,
            pool_size: config.connections(),
            warm_max_idle_per_install: limit(config.warm_limits.max_idle_per_install),
            warm_max_idle: limit(config.warm_limits.max_idle),
            runs: Vec::new(),
            list_scaling: None,
            instantiation: None,
            rss_kb_start: None,
            rss_kb_end: None,
        }
    }

    /// The report as a Markdown table plus the side measurements.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| spread | workload | conc. | path | ops/s | p50 µs | p95 µs | p99 µs | errors | × raw \
             | CPU µs/op harness | CPU µs/op db | of it backends | instances made/op |\n\
             | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
             | ---: |\n",
        );
        for r in &self.runs {
            out.push_str(&format!(
                "| {:?} | {:?} | {} | {:?} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.spread,
                r.workload,
                r.concurrency,
                r.path,
                r.ops_per_sec,
                r.p50_us,
                r.p95_us,
                r.p99_us,
                r.errors,
                ratio(r),
                micros(r.harness_cpu_us_per_op),
                micros(r.db_cpu_us_per_op),
                micros(r.db_backends_cpu_us_per_op),
                r.instances_made_per_op
                    .map_or_else(|| "-".into(), |made| format!("{made:.4}")),
            ));
        }
        if let Some(s) = &self.list_scaling {
            out.push_str(&format!(
                "\nlist page of 100: {} µs at {} keys, {} µs at {} keys (× {:.2})\n",
                s.small_p50_us, s.small_keys, s.large_p50_us, s.large_keys, s.ratio
            ));
        }
        if let Some(i) = &self.instantiation {
            out.push_str(&format!(
                "instantiation from InstancePre: pooled p50 {} µs (p99 {} µs), on-demand p50 {} µs ({} samples)\n",
                i.pooled_p50_us, i.pooled_p99_us, i.on_demand_p50_us, i.samples
            ));
            let l = &i.lifecycle_p50_ns;
            let us = |ns: u64| ns as f64 / 1000.0;
            out.push_str(&format!(
                "an instance per operation, no storage call (p50): make {:.1} µs, first call {:.1} µs, drop {:.1} µs; a warm call {:.1} µs\n",
                us(l.make), us(l.first_call), us(l.drop), us(l.warm_call)
            ));
            let c = &i.storage_call_p50_ns;
            out.push_str(&format!(
                "a get through a warm instance, sequential (p50): {:.1} µs, the service's {:.1} µs; a call right after it {:.1} µs, again {:.1} µs\n",
                us(c.warm_get), us(c.service_get), us(c.call_after_get), us(c.call_again)
            ));
        }
        if let (Some(a), Some(b)) = (self.rss_kb_start, self.rss_kb_end) {
            out.push_str(&format!(
                "resident memory: {a} KiB at start, {b} KiB at end\n"
            ));
        }
        out
    }
}

/// One line per path of a configuration, for progress output.
pub fn summary(group: &[RunResult]) -> String {
    group
        .iter()
        .map(|r| {
            let ratio = match r.ratio_to_raw {
                Some(_) => format!(" (× raw {})", ratio(r)),
                None => String::new(),
            };
            let errors = if r.errors > 0 {
                format!(" {} errors", r.errors)
            } else {
                String::new()
            };
            format!("{:?} {:.0}/s{ratio}{errors}", r.path, r.ops_per_sec)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ratio to raw, with the range of the rounds when they differ: `0.79 (0.74–0.83)`.
fn ratio(r: &RunResult) -> String {
    match (r.ratio_to_raw, range(&r.round_ratios)) {
        (None, _) => "-".into(),
        (Some(median), Some((low, high))) => format!("{median:.2} ({low:.2}–{high:.2})"),
        (Some(median), None) => format!("{median:.2}"),
    }
}

/// A warm limit for the report: `usize::MAX` is none.
fn limit(value: usize) -> Option<usize> {
    (value != usize::MAX).then_some(value)
}

/// A CPU figure in whole µs, or `-` when it was not measured.
fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |us| format!("{us:.0}"))
}

/// The lowest and highest of `values`, when they differ.
fn range(values: &[f64]) -> Option<(f64, f64)> {
    let low = values.iter().copied().reduce(f64::min)?;
    let high = values.iter().copied().reduce(f64::max)?;
    (low < high).then_some((low, high))
}

/// Resident memory of this process in KiB (Linux).
pub fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
