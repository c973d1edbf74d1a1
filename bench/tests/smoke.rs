//! The harness runs every path, workload and spread end to end and reports sound results. No
//! timing is asserted: the harness measures, `docs/performance.md` records.

use std::time::Duration;

use alga_storage::limits::DEFAULT_MAX_KEYS_PER_NAMESPACE;
use alga_storage::model::{Precondition, PutOptions};
use alga_storage::wasm::warm::WarmLimits;
use alga_storage_bench::cpu::{CpuMeter, CpuUse};
use alga_storage_bench::handlers::{Handlers, KEEP_ALL};
use alga_storage_bench::rls;
use alga_storage_bench::run::median;
use alga_storage_bench::target::{PathKind, Request, Target};
use alga_storage_bench::workload::{self, NAMESPACE, Spread, TENANT, Workload};
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
            PathKind::WasmExport,
            PathKind::WasmWarm,
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
            Workload::Churn,
        ],
        spreads: vec![Spread::Many, Spread::Hot],
        scale_keys: 5_000,
        instantiations: 20,
        // Fewer connections than the 4 workers: they queue on each path's pool.
        pool_size: Some(2),
        rounds: 1,
        // A Runner's limits, which this run's 10 installs stay within.
        warm_limits: WarmLimits::DEFAULT,
    };
    let report = run_suite(&config, |_| {}).await.unwrap();
    assert_eq!(report.pool_size, 2);
    assert_eq!(report.warm_max_idle_per_install, Some(4));
    assert_eq!(report.warm_max_idle, Some(1024));
    let local = server_is_on_this_machine().await;
    // 2 spreads × 7 workloads × 2 concurrencies × (raw, service, wasm, wasm-export, wasm-warm,
    // rest, raw-rls) + bare for 2 workloads.
    assert_eq!(report.runs.len(), 2 * 7 * 2 * 7 + 2 * 2 * 2);
    for run in &report.runs {
        assert!(run.ops > 0, "{run:?}");
        assert_eq!(run.errors, 0, "{run:?}");
        assert!(
            run.p50_us <= run.p95_us && run.p95_us <= run.p99_us,
            "{run:?}"
        );
        assert!(run.ratio_to_raw.is_some(), "{run:?}");
        assert!(run.harness_cpu_us_per_op.is_some(), "{run:?}");
        assert_eq!(run.db_cpu_us_per_op.is_some(), local, "{run:?}");
        assert_eq!(run.db_backends_cpu_us_per_op.is_some(), local, "{run:?}");
        // Instances made: counted on the paths through the handler export only.
        let handler_path = matches!(run.path, PathKind::WasmExport | PathKind::WasmWarm);
        assert_eq!(run.round_instances_made.len(), 1, "{run:?}");
        assert_eq!(
            run.round_instances_made[0].is_some(),
            handler_path,
            "{run:?}"
        );
        assert_eq!(run.instances_made_per_op.is_some(), handler_path, "{run:?}");
        if run.path == PathKind::WasmExport {
            // One per operation, give or take the operations in flight when it is read.
            let made = run.instances_made_per_op.unwrap();
            assert!((0.5..=1.5).contains(&made), "{run:?}");
        }
        if run.path == PathKind::WasmWarm {
            // Within the limits nothing is dropped: at most one per worker of each install,
            // over the whole run.
            let most = (config.installs * config.concurrency.iter().max().unwrap()) as u64;
            let made = run.round_instances_made[0].unwrap();
            assert!(made <= most, "{run:?}");
        }
    }
    let scaling = report.list_scaling.as_ref().unwrap();
    assert_eq!((scaling.small_keys, scaling.large_keys), (1_000, 5_000));
    let instantiation = report.instantiation.as_ref().unwrap();
    assert!(instantiation.pooled_p50_us > 0);
    let (lifecycle, call) = (
        &instantiation.lifecycle_p50_ns,
        &instantiation.storage_call_p50_ns,
    );
    let phases = [
        lifecycle.make,
        lifecycle.first_call,
        lifecycle.warm_call,
        lifecycle.drop,
        call.service_get,
        call.warm_get,
        call.call_after_get,
        call.call_again,
    ];
    assert!(phases.iter().all(|&ns| ns > 0), "{lifecycle:?} {call:?}");
    let table = report.table();
    assert!(table.contains("| Many | Insert | 4 | Service |"), "{table}");
    assert!(table.contains("| instances made/op |"), "{table}");
    let rows: Vec<&str> = table.lines().take_while(|line| !line.is_empty()).collect();
    let columns = |line: &str| line.matches('|').count();
    assert!(
        rows.iter().all(|row| columns(row) == columns(rows[0])),
        "every row has the header's columns: {table}"
    );
    // The last column: a count on the handler paths, none on the others.
    let last_cell = |row_start: &str| {
        let row = rows.iter().find(|row| row.starts_with(row_start)).unwrap();
        row.trim_end_matches(" |")
            .rsplit("| ")
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(last_cell("| Many | Insert | 4 | Service |"), "-");
    let export = last_cell("| Many | Insert | 4 | WasmExport |");
    assert!(export.parse::<f64>().is_ok(), "{export:?} in {table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["runs"][0]["path"], "raw");
}

/// The paths through the service, which keep the contract (the raw ones keep only its SQL).
const CONTRACT_PATHS: [PathKind; 5] = [
    PathKind::Service,
    PathKind::Wasm,
    PathKind::WasmExport,
    PathKind::WasmWarm,
    PathKind::Rest,
];

/// The harness measures speed, not quotas: every path through the service writes to an install
/// that is already at the default keys quota (which a long hot-install run reaches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_writes_past_the_default_quotas() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let (install, limit) = ("full", DEFAULT_MAX_KEYS_PER_NAMESPACE as i64);
    db.client()
        .await
        .execute(
            "INSERT INTO ext_storage_namespace_usage \
                 (tenant_id, extension_install_id, namespace, key_count, byte_count) \
             VALUES ($1, $2, $3, $4, 0)",
            &[&TENANT, &install, &NAMESPACE, &limit],
        )
        .await
        .unwrap();
    for path in CONTRACT_PATHS {
        let target = Target::new(path, &db.url, 2, KEEP_ALL).await.unwrap();
        let key = format!("past-the-quota-{path:?}");
        let request = Request {
            install,
            namespace: NAMESPACE,
            key: &key,
            value: "1",
            precondition: Precondition::Absent,
        };
        target
            .put(&request)
            .await
            .unwrap_or_else(|e| panic!("{path:?}: {e:#}"));
    }
}

/// Every path deletes a record at its revision with what a delete owes: the record gone, the
/// counters back where they were before it was written, a `delete` audit row after its `put`,
/// both of the record's size. Deleting it again fails, which the `churn` workload counts as an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_deletes_at_a_revision() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let service = db.service();
    let audit = db.client().await;
    let value = workload::value(0);
    for path in CONTRACT_PATHS
        .into_iter()
        .chain([PathKind::Raw, PathKind::RawRls])
    {
        let install = format!("deletes-{path:?}");
        let call = alga_storage_tests::granted(TENANT, &install);
        // The install's counter rows, which raw's SQL updates, as the preload makes them.
        let kept = PutOptions::default();
        service
            .put(&call, NAMESPACE, "kept", "1", &kept)
            .await
            .unwrap();
        let before = service.usage(&call).await.unwrap();
        let target = Target::new(path, &db.url, 2, KEEP_ALL).await.unwrap();
        let request = |precondition| Request {
            install: &install,
            namespace: NAMESPACE,
            key: "gone",
            value: &value,
            precondition,
        };
        let written = target.put(&request(Precondition::Absent)).await;
        written.unwrap_or_else(|e| panic!("{path:?}: {e:#}"));
        assert_ne!(service.usage(&call).await.unwrap(), before, "{path:?}");
        // At another revision the record stays: a conflict. (Raw's SQL reports a miss after
        // committing its counters and audit row: a failed run, not checked here.)
        if CONTRACT_PATHS.contains(&path) {
            let stale = target.delete(&request(Precondition::Revision(2))).await;
            assert!(stale.is_err(), "{path:?} deleted at the wrong revision");
            let kept = service.get(&call, NAMESPACE, "gone").await.unwrap();
            assert!(kept.is_some(), "{path:?}");
        }
        let deleted = target.delete(&request(Precondition::Revision(1))).await;
        deleted.unwrap_or_else(|e| panic!("{path:?}: {e:#}"));
        let record = service.get(&call, NAMESPACE, "gone").await.unwrap();
        assert!(record.is_none(), "{path:?}");
        assert_eq!(service.usage(&call).await.unwrap(), before, "{path:?}");
        // Both counter rows agree with the records left.
        let drift = service.recount(&call, false).await.unwrap();
        assert!(drift.is_empty(), "{path:?}: {drift:?}");
        let audited: Vec<(String, i64, i64)> = audit
            .query(
                "SELECT operation, revision, bytes FROM ext_storage_audit \
                  WHERE tenant_id = $1 AND extension_install_id = $2 AND key = 'gone' \
                  ORDER BY id",
                &[&TENANT, &install],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        // The record's size on every path: its key and value.
        let bytes = ("gone".len() + workload::VALUE_BYTES) as i64;
        let expected = [
            ("put".to_owned(), 1, bytes),
            ("delete".to_owned(), 1, bytes),
        ];
        assert_eq!(audited, expected, "{path:?}");
        let again = target.delete(&request(Precondition::Revision(1))).await;
        assert!(again.is_err(), "{path:?} deleted it twice");
    }
}

/// With several rounds each result keeps every round's throughput and its ratio to the raw phase
/// of the same round, and reports their medians (the turn order: `run::round_order`'s test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_report_medians_of_per_round_ratios() {
    let config = Config {
        database_url: alga_storage_tests::admin_url(),
        duration: Duration::from_millis(100),
        concurrency: vec![2],
        installs: 3,
        paths: vec![PathKind::Service, PathKind::Bare],
        workloads: vec![Workload::Update, Workload::Get],
        spreads: vec![Spread::Many],
        scale_keys: 0,
        instantiations: 0,
        pool_size: None,
        rounds: 3,
        warm_limits: KEEP_ALL,
    };
    let none = Config {
        rounds: 0,
        ..config.clone()
    };
    let refused = run_suite(&none, |_| {}).await.expect_err("zero rounds");
    assert!(
        refused.to_string().contains("at least one round"),
        "{refused}"
    );

    let report = run_suite(&config, |_| {}).await.unwrap();
    assert_eq!(report.warm_max_idle_per_install, None);
    assert_eq!(report.warm_max_idle, None);
    let local = server_is_on_this_machine().await;
    // update: raw, bare, service; get: raw, service.
    assert_eq!(report.runs.len(), 5);
    for run in &report.runs {
        assert_eq!(
            run.errors, 0,
            "updates stay revision-correct across rounds: {run:?}"
        );
        assert_eq!(run.round_ops_per_sec.len(), 3, "{run:?}");
        assert_eq!(run.round_ratios.len(), 3, "{run:?}");
        assert!(
            run.round_ops_per_sec.iter().all(|&ops| ops > 0.0),
            "{run:?}"
        );
        assert_eq!(run.ops_per_sec, median(&run.round_ops_per_sec), "{run:?}");
        assert_eq!(run.ratio_to_raw, Some(median(&run.round_ratios)), "{run:?}");
        // CPU per operation: every round measured, the medians reported.
        let measured =
            |rounds: &[Option<f64>]| rounds.iter().flatten().copied().collect::<Vec<_>>();
        let harness = measured(&run.round_harness_cpu_us_per_op);
        assert_eq!(harness.len(), 3, "{run:?}");
        assert_eq!(run.harness_cpu_us_per_op, Some(median(&harness)), "{run:?}");
        let db = measured(&run.round_db_cpu_us_per_op);
        let backends = measured(&run.round_db_backends_cpu_us_per_op);
        if local {
            assert_eq!(db.len(), 3, "{run:?}");
            assert_eq!(run.db_cpu_us_per_op, Some(median(&db)), "{run:?}");
            assert_eq!(backends.len(), 3, "{run:?}");
            assert_eq!(
                run.db_backends_cpu_us_per_op,
                Some(median(&backends)),
                "{run:?}"
            );
        }
        if run.path == PathKind::Raw {
            assert_eq!(run.round_ratios, [1.0; 3], "{run:?}");
        }
    }
    let service_get = report
        .runs
        .iter()
        .find(|r| r.path == PathKind::Service && r.workload == Workload::Get)
        .unwrap();
    let raw_get = report
        .runs
        .iter()
        .find(|r| r.path == PathKind::Raw && r.workload == Workload::Get)
        .unwrap();
    for round in 0..3 {
        let expected = service_get.round_ops_per_sec[round] / raw_get.round_ops_per_sec[round];
        assert_eq!(service_get.round_ratios[round], expected);
    }
    assert_eq!(report.rounds, 3);
    let table = report.table();
    assert!(table.contains("| Many | Get | 2 | Service |"), "{table}");
    assert!(
        table.contains("–"),
        "the table shows the rounds' range: {table}"
    );
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

/// Whether the test server listens on a loopback address or a Unix socket: then it runs here,
/// and the harness must find it and read its CPU time. A server elsewhere is not measured.
async fn server_is_on_this_machine() -> bool {
    let client = alga_storage_tests::connect(&alga_storage_tests::admin_url()).await;
    client
        .query_one(
            "SELECT coalesce(inet_server_addr() <<= inet '127.0.0.0/8' \
                             OR inet_server_addr() = inet '::1', true)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The meter finds the local test server and counts the CPU time its backends spend, in the
/// server's figure and in its client backends' share of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_counts_the_servers_cpu_time() {
    let url = alga_storage_tests::admin_url();
    let connect = || alga_storage_tests::connect(&url);
    let meter = CpuMeter::locate(connect().await).await.unwrap();
    if !server_is_on_this_machine().await {
        assert!(!meter.measures_db());
        eprintln!("the test server runs elsewhere: its CPU time is not measured");
        return;
    }
    assert!(meter.measures_db());
    let client = connect().await;
    let start = meter.sample().await;
    // Server-side work in a client backend until both counts move by a few ticks; a meter
    // reading the wrong processes (or nothing) never sees them move.
    let moved = |used: &CpuUse| used.db_us >= Some(50_000) && used.db_backends_us >= Some(50_000);
    let mut used = meter.sample().await.since(&start);
    for _ in 0..100 {
        client
            .execute("SELECT count(*) FROM generate_series(1, 1000000)", &[])
            .await
            .unwrap();
        used = meter.sample().await.since(&start);
        if moved(&used) {
            break;
        }
    }
    assert!(moved(&used), "{used:?}");
    // The backends are part of the server: at most a few ticks over it, from reading the two
    // moments apart.
    assert!(
        used.db_backends_us.unwrap() <= used.db_us.unwrap() + 20 * 10_000,
        "{used:?}"
    );
}

/// The warm path keeps one idle instance per install that had requests (as many as it had at
/// once), reuses it, and keeps it after a failed operation: a guest's error is not a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_serve_only_their_own_install() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let service = db.service();
    let warm = Handlers::warm(service.clone(), KEEP_ALL).unwrap();
    assert_eq!(warm.idle_instances(), 0);
    for i in 0..3 {
        let value = format!("{{\"i\":{i}}}");
        warm.handle("a", "insert", NAMESPACE, &format!("k{i}"), &value, 0)
            .await
            .unwrap();
    }
    assert_eq!(warm.idle_instances(), 1);
    assert_eq!(warm.instances_made(), 1, "a's three requests, one instance");
    // b gets an instance of its own: one of a's would act as a and find k0.
    let missing = warm.handle("b", "get", NAMESPACE, "k0", "", 0).await;
    let message = missing.expect_err("b has no k0").to_string();
    assert!(
        message.contains("get bench/k0 failed: missing"),
        "{message}"
    );
    assert_eq!(warm.idle_instances(), 2);
    // Requests of one install at once take an instance each, and all stay warm. A row lock
    // holds an update of k1 mid-call (its instance taken) while a get of a runs: left to
    // timing, the update could finish first and hand its instance on.
    let mut holder = db.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM ext_storage_records WHERE tenant_id = $1 \
         AND extension_install_id = 'a' AND namespace = $2 AND key = 'k1' FOR UPDATE",
        &[&TENANT, &NAMESPACE],
    )
    .await
    .unwrap();
    let watcher = db.client().await;
    let (update, ()) = tokio::join!(
        warm.handle("a", "update", NAMESPACE, "k1", "{\"i\":10}", 1),
        async {
            alga_storage_tests::wait_for_lock_waits(&watcher, 1).await;
            warm.handle("a", "get", NAMESPACE, "k0", "", 0)
                .await
                .unwrap();
            // The get made a second instance of a and put it back; the update holds the first.
            assert_eq!(warm.idle_instances(), 2);
            hold.commit().await.unwrap();
        },
    );
    update.unwrap();
    // a has two, b one.
    assert_eq!(warm.idle_instances(), 3);
    assert_eq!(warm.instances_made(), 3);
    let call = alga_storage_bench::target::call("a");
    let page = service
        .list(&call, NAMESPACE, &Default::default())
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 3);
}

/// With limits, the warm path keeps no more idle instances than they allow: here one in all
/// (without them, each install would keep its own: two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_stay_within_their_limits() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let limits = WarmLimits {
        max_idle_per_install: 4,
        max_idle: 1,
    };
    let warm = Handlers::warm(db.service(), limits).unwrap();
    warm.handle("a", "insert", NAMESPACE, "k", "{\"v\":1}", 0)
        .await
        .unwrap();
    assert_eq!(warm.idle_instances(), 1);
    warm.handle("b", "insert", NAMESPACE, "k", "{\"v\":2}", 0)
        .await
        .unwrap();
    assert_eq!(warm.idle_instances(), 1);
    // b's instance, put back, pushed a's out (the least recently used), so a's next request
    // makes an instance again: three made, where keeping both would have made two.
    warm.handle("a", "get", NAMESPACE, "k", "", 0)
        .await
        .unwrap();
    assert_eq!(warm.idle_instances(), 1);
    assert_eq!(warm.instances_made(), 3);
}

/// The export path makes an instance per operation and keeps none: each acts only for the
/// install of its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_instances_live_for_one_operation() {
    let db = alga_storage_tests::TestDb::new_on(&alga_storage_tests::admin_url()).await;
    let handlers = alga_storage_bench::handlers::Handlers::per_operation(db.service()).unwrap();
    handlers
        .handle("a", "insert", NAMESPACE, "k", "{\"v\":1}", 0)
        .await
        .unwrap();
    handlers
        .handle("a", "update", NAMESPACE, "k", "{\"v\":2}", 1)
        .await
        .unwrap();
    let stale = handlers
        .handle("a", "update", NAMESPACE, "k", "{\"v\":3}", 1)
        .await
        .expect_err("k is at revision 2")
        .to_string();
    assert!(stale.contains("update bench/k failed: "), "{stale}");
    let missing = handlers.handle("b", "get", NAMESPACE, "k", "", 0).await;
    let message = missing.expect_err("b has no k").to_string();
    assert!(message.contains("get bench/k failed: missing"), "{message}");
    assert_eq!(handlers.idle_instances(), 0);
    assert_eq!(handlers.instances_made(), 4, "one per operation");
    let record = db
        .service()
        .get(&alga_storage_bench::target::call("a"), NAMESPACE, "k")
        .await
        .unwrap()
        .expect("a's k");
    assert_eq!(record.revision, 2);
    let value: serde_json::Value = serde_json::from_str(record.value.as_deref().unwrap()).unwrap();
    assert_eq!(value, serde_json::json!({"v": 2}));
}
