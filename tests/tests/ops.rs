//! The operations files in `ops/` are checked by tools, not by eye: `promtool` checks the alert
//! rules and runs their unit tests, the dashboard is valid JSON with a query per panel, and every
//! metric name the alerts and panels use is one the host exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use alga_storage::backend::postgres::PgBackend;
use alga_storage::{Limits, StorageService};
use alga_storage_tests::*;
use serde_json::Value;

fn ops_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(ops_dir())
        .output()
        .expect("promtool runs (Debian's prometheus package; scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// Metric names (`alga_storage_…`) used in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("alga_storage_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names the host exports after operations that touch every metric family (a family
/// appears in the exposition once it has a sample), from the `# TYPE` lines.
async fn exported_names() -> BTreeSet<String> {
    let db = TestDb::new().await;
    let limits = Limits {
        max_keys_per_namespace: 2,
        ..Limits::DEFAULT
    };
    let service = db.service().with_limits(limits, limits);
    let ctx = granted("t", "i");
    for key in ["a", "b", "c"] {
        let _ = service.put(&ctx, "ns", key, "1", &Default::default()).await;
    }
    service.get(&ctx, "ns", "a").await.unwrap();
    // A database that is not there: `unavailable`, counted as a backend error.
    let backend = PgBackend::connect("postgres://nobody@127.0.0.1:1/none", 1).unwrap();
    let down = StorageService::new(Arc::new(backend));
    assert!(down.get(&ctx, "ns", "a").await.is_err());

    let text = service.metrics().encode() + &down.metrics().encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

#[tokio::test]
async fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported = exported_names().await;
    assert!(
        exported.contains("alga_storage_operations_total"),
        "{exported:?}"
    );
    assert!(
        exported.contains("alga_storage_pool_waiters"),
        "{exported:?}"
    );

    let alerts = std::fs::read_to_string(ops_dir().join("alerts.yml")).unwrap();
    let dashboard_text = std::fs::read_to_string(ops_dir().join("dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = String::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            assert!(expr.contains("alga_storage_"), "panel {title}: {expr}");
            queries.push_str(expr);
            queries.push('\n');
        }
    }
    for (file, text) in [("alerts.yml", &alerts), ("dashboard.json", &queries)] {
        for name in metric_names(text) {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which the host does not export ({exported:?})"
            );
        }
    }
    // The dashboard shows what an operator needs: throughput, errors, latency, bytes, quotas.
    let used = metric_names(&queries);
    for needed in [
        "alga_storage_operations_total",
        "alga_storage_operation_duration_seconds_bucket",
        "alga_storage_read_bytes_total",
        "alga_storage_written_bytes_total",
        "alga_storage_quota_near_limit_total",
        "alga_storage_quota_rejections_total",
        "alga_storage_backend_errors_total",
        "alga_storage_pool_waiters",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    // Every alert links its runbook, and the runbook exists.
    let runbooks: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(runbooks.len(), alerts.matches("- alert:").count());
    for url in runbooks {
        let path = url.trim_matches('"').rsplit_once("/docs/").unwrap().1;
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(path);
        assert!(file.exists(), "runbook {} is missing", file.display());
    }
}
