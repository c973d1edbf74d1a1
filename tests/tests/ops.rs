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

/// `pg_dump`/`pg_restore` as the backup runbook writes them.
fn pg_tool(tool: &str, args: &[&str]) {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (PostgreSQL's client tools): {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The backup runbook's logical copy: a data-only dump of the storage tables, restored into a
/// database the migrations set up (the tables, their distribution, the write functions), comes
/// back whole: records, counters, audit rows, and writes continue after it (the audit ids go
/// on after the restored ones).
#[tokio::test]
async fn the_backup_runbooks_logical_copy_restores_into_a_migrated_database() {
    use alga_storage::model::{AuditQuery, PutOptions};

    let source = TestDb::new().await;
    let service = source.service();
    let ctx = granted("t", "i");
    for i in 0..5 {
        let options = PutOptions {
            ttl: (i == 4).then_some(std::time::Duration::from_secs(3600)),
            ..PutOptions::default()
        };
        service
            .put(
                &ctx,
                "ns",
                &format!("k{i}"),
                &format!("{{\"n\":{i}}}"),
                &options,
            )
            .await
            .unwrap();
    }
    let dir = fresh_dir("backup");
    let dump = dir.join("storage.dump").display().to_string();
    pg_tool(
        "pg_dump",
        &[
            "--format=custom",
            "--data-only",
            "--table=ext_storage_*",
            &format!("--file={dump}"),
            &source.url,
        ],
    );

    let target = TestDb::empty().await;
    alga_storage::cli::run([
        "alga-storage",
        "--database-url",
        &target.url,
        "migrate",
        "up",
    ])
    .await
    .unwrap();
    pg_tool(
        "pg_restore",
        &["--data-only", &format!("--dbname={}", target.url), &dump],
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let restored = target.service();
    let record = restored.get(&ctx, "ns", "k4").await.unwrap().unwrap();
    let value: Value = serde_json::from_str(record.value.as_deref().unwrap()).unwrap();
    assert_eq!(value, serde_json::json!({"n": 4}));
    assert!(record.expires_at.is_some(), "the TTL is kept");
    let operator = ctx.clone().actor("operator:test");
    assert!(restored.recount(&operator, false).await.unwrap().is_empty());
    let usage = restored.usage(&ctx).await.unwrap();
    assert_eq!(usage.per_namespace[0].keys.used, 5);

    restored
        .put(&ctx, "ns", "after", "1", &PutOptions::default())
        .await
        .unwrap();
    let audit = restored.audit(&ctx, &AuditQuery::default()).await.unwrap();
    assert_eq!(
        audit.records.len(),
        6,
        "five restored rows and the new write's"
    );
}
