//! The harness runs every path, workload and spread end to end and reports sound results. No
//! timing is asserted: the harness measures, `docs/performance.md` records.

use std::time::Duration;

use alga_storage::model::PutOptions;
use alga_storage_bench::rls;
use alga_storage_bench::target::PathKind;
use alga_storage_bench::workload::{Spread, Workload};
use alga_storage_bench::{Config, run_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configuration_runs_without_errors() {
    let config = Config {
        database_url: alga_storage_tests::admin_url(),
        duration: Duration::from_millis(150),
        concurrency: vec![1, 4],
        installs: 5,
        paths: vec![
            PathKind::Bare,
            PathKind::Service,
            PathKind::Wasm,
            PathKind::Rest,
            PathKind::RawRls,
        ],
        workloads: vec![
            Workload::Insert,
            Workload::Update,
            Workload::UpdateValidated,
            Workload::Get,
            Workload::List,
            Workload::Mix,
        ],
        spreads: vec![Spread::Many, Spread::Hot],
        scale_keys: 5_000,
        instantiations: 20,
    };
    let report = run_suite(&config, |_| {}).await.unwrap();
    // 2 spreads × 6 workloads × 2 concurrencies × (raw, service, wasm, rest, raw-rls) + bare
    // for 2 workloads.
    assert_eq!(report.runs.len(), 2 * 6 * 2 * 5 + 2 * 2 * 2);
    for run in &report.runs {
        assert!(run.ops > 0, "{run:?}");
        assert_eq!(run.errors, 0, "{run:?}");
        assert!(
            run.p50_us <= run.p95_us && run.p95_us <= run.p99_us,
            "{run:?}"
        );
        assert!(run.ratio_to_raw.is_some(), "{run:?}");
    }
    let scaling = report.list_scaling.as_ref().unwrap();
    assert_eq!((scaling.small_keys, scaling.large_keys), (1_000, 5_000));
    assert!(report.instantiation.as_ref().unwrap().pooled_p50_us > 0);
    let table = report.table();
    assert!(table.contains("| Many | Insert | 4 | Service |"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["runs"][0]["path"], "raw");
}

/// The RLS path measures a policy that really holds: a session scoped to one install sees and
/// changes only that install's rows.
#[tokio::test]
async fn the_rls_policy_admits_only_the_scoped_install() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let service = db.service();
    for install in ["a", "b"] {
        let call = alga_storage_tests::granted("t", install);
        for key in ["k1", "k2"] {
            let options = PutOptions::default();
            service.put(&call, "ns", key, "1", &options).await.unwrap();
        }
    }
    let pool = rls::setup(&db.url, 1).await.unwrap();
    let client = pool.get().await.unwrap();
    client.query_one(rls::SCOPE, &[&"t", &"a"]).await.unwrap();
    let installs: Vec<String> = client
        .query("SELECT extension_install_id FROM ext_storage_records", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(installs, ["a", "a"]);
    let updated = client
        .execute(
            "UPDATE ext_storage_records SET revision = revision + 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated, 2, "only install a's rows");
    let foreign = client
        .execute(
            "INSERT INTO ext_storage_install_usage (tenant_id, extension_install_id) VALUES ('t', 'c')",
            &[],
        )
        .await;
    let refused = foreign.expect_err("writing another install's row is refused");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
}
