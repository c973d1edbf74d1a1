//! Runs every guest fixture against real PostgreSQL. `foreach_fixture!` names every component in
//! `fixtures/src/bin`; a fixture without a test here fails to compile.

use std::time::Duration;

use alga_storage::model::AuditQuery;
use alga_storage::wasm::command::{CommandRunner, GuestLimits, RunOptions, RunOutcome};
use alga_storage::wasm::warm::{WarmInstances, WarmLimits};
use alga_storage::{CallContext, Limits};
use alga_storage_tests::*;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports, reason = "only proves the test function exists")]
        use self::$name as _;
    };
}
foreach_fixture!(assert_test_exists);

/// Runs `path` once as a granted install on a fresh store of each engine.
async fn run_granted(name: &str, path: &str) {
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let call = granted("tenant-a", "install-1");
        let outcome = run_fixture_as(store.service(), path, call, &[]).await;
        assert_success(&format!("{name} on {engine:?}"), &outcome);
    }
}

#[tokio::test]
async fn store_roundtrip() {
    run_granted("store_roundtrip", STORE_ROUNDTRIP).await;
}

#[tokio::test]
async fn store_revisions() {
    run_granted("store_revisions", STORE_REVISIONS).await;
}

#[tokio::test]
async fn store_list_pagination() {
    run_granted("store_list_pagination", STORE_LIST_PAGINATION).await;
}

#[tokio::test]
async fn store_list_prefix() {
    run_granted("store_list_prefix", STORE_LIST_PREFIX).await;
}

#[tokio::test]
async fn store_list_keys_only() {
    run_granted("store_list_keys_only", STORE_LIST_KEYS_ONLY).await;
}

#[tokio::test]
async fn store_cursor_scope() {
    run_granted("store_cursor_scope", STORE_CURSOR_SCOPE).await;
}

#[tokio::test]
async fn store_bulk_atomic() {
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let call = granted("tenant-a", "install-1");
        let outcome = run_fixture_as(store.service(), STORE_BULK_ATOMIC, call.clone(), &[]).await;
        assert_success(&format!("store_bulk_atomic on {engine:?}"), &outcome);
        // The failed bulks left no audit rows; the committed one left one per item (+1 first
        // put).
        let audit = store
            .service()
            .audit(
                &call,
                &AuditQuery {
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(audit.records.len(), 51, "{engine:?}");
    }
}

#[tokio::test]
async fn store_invalid_input() {
    run_granted("store_invalid_input", STORE_INVALID_INPUT).await;
}

#[tokio::test]
async fn store_usage() {
    run_granted("store_usage", STORE_USAGE).await;
}

#[tokio::test]
async fn store_ttl() {
    run_granted("store_ttl", STORE_TTL).await;
}

/// The same component run for (tenant A, install 1), (tenant B, install 1) and (tenant A,
/// install 2) sees only its own records; each pair then sees its records again.
#[tokio::test]
async fn store_isolation() {
    for engine in ENGINES {
        isolation_on(engine).await;
    }
}

async fn isolation_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let pairs = [
        ("tenant-a", "install-1"),
        ("tenant-b", "install-1"),
        ("tenant-a", "install-2"),
    ];
    for existing in ["0", "1"] {
        for (tenant, install) in pairs {
            let owner = format!("{tenant}/{install}");
            let env = [("OWNER", owner.as_str()), ("EXPECT_EXISTING", existing)];
            let outcome = run_fixture_as(
                store.service(),
                STORE_ISOLATION,
                granted(tenant, install),
                &env,
            )
            .await;
            assert_success(&format!("store_isolation as {owner}"), &outcome);
        }
    }
    // Each pair stored exactly its two records.
    for (tenant, install) in pairs {
        let usage = store
            .service()
            .usage(&granted(tenant, install))
            .await
            .unwrap();
        let keys: u64 = usage.per_namespace.iter().map(|n| n.keys.used).sum();
        assert_eq!(keys, 2, "{engine:?} {tenant}/{install}");
    }
    if let Some(db) = &store.db {
        let client = db.client().await;
        let rows = client
            .query(
                "SELECT tenant_id, extension_install_id, count(*) FROM ext_storage_records \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap();
        let counts: Vec<(String, String, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            counts,
            [
                ("tenant-a".into(), "install-1".into(), 2),
                ("tenant-a".into(), "install-2".into(), 2),
                ("tenant-b".into(), "install-1".into(), 2),
            ]
        );
    }
}

/// Without the grant every operation is denied, and no statement reaches the database: the
/// service points at a port where nothing listens, so any query would be `unavailable`.
#[tokio::test]
async fn store_capability_denied() {
    let unreachable = alga_storage::backend::postgres::PgBackend::connect(
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
        1,
    )
    .unwrap();
    let service = alga_storage::StorageService::new(std::sync::Arc::new(unreachable));
    let call = CallContext::new("tenant-a", "install-1"); // no grant
    let outcome = run_fixture_as(service, STORE_CAPABILITY_DENIED, call, &[]).await;
    assert_success("store_capability_denied", &outcome);

    // A revoked grant on a live store: denied, and the data written before is kept.
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let service = store.service();
        let call = granted("tenant-a", "install-1");
        service
            .put(&call, "denied", "k", "1", &Default::default())
            .await
            .unwrap();
        let revoked = CallContext::new("tenant-a", "install-1");
        let outcome = run_fixture_as(service.clone(), STORE_CAPABILITY_DENIED, revoked, &[]).await;
        assert_success(
            &format!("store_capability_denied (revoked) on {engine:?}"),
            &outcome,
        );
        assert!(service.get(&call, "denied", "k").await.unwrap().is_some());
    }
}

/// The README's example extension runs, twice (it is idempotent), and prints its notes.
#[tokio::test]
async fn demo_notes() {
    for engine in ENGINES {
        demo_notes_on(engine).await;
    }
}

async fn demo_notes_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    for _ in 0..2 {
        let outcome =
            run_fixture_as(store.service(), DEMO_NOTES, granted("demo", "demo"), &[]).await;
        assert_success("demo_notes", &outcome);
        assert!(outcome.stdout.contains("note-1 (rev"), "{}", outcome.stdout);
        assert!(
            outcome.stdout.contains("stale write refused"),
            "{}",
            outcome.stdout
        );
    }
}

/// A guest that reads `usage` and stops writing at 80 % of its key quota.
#[tokio::test]
async fn store_quota_backoff() {
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let call = granted("t", "i").limits(Limits {
            max_keys_per_namespace: 10,
            ..Limits::DEFAULT
        });
        let outcome = run_fixture_as(store.service(), STORE_QUOTA_BACKOFF, call, &[]).await;
        assert_success(&format!("store_quota_backoff on {engine:?}"), &outcome);
    }
}

/// The load harness's guest runs each of its operations.
#[tokio::test]
async fn bench_op() {
    for engine in ENGINES {
        bench_op_on(engine).await;
    }
}

async fn bench_op_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let call = granted("t", "i");
    // The arguments, and whether the command succeeds.
    let ops: [(&[&str], bool); 9] = [
        (&["insert", "bench", "k", r#"{"v":1}"#], true),
        (&["get", "bench", "k"], true),
        (&["update", "bench", "k", r#"{"v":2}"#, "1"], true),
        (&["list", "bench", "-"], true),
        (&["update", "bench", "k", r#"{"v":3}"#, "1"], false), // stale
        (&["insert", "bench", "d", "1"], true),
        (&["delete", "bench", "d", "", "2"], false), // not at that revision
        (&["delete", "bench", "d", "", "1"], true),
        (&["delete", "bench", "d", "", "1"], false), // gone
    ];
    for (args, succeeds) in ops {
        let runner = alga_storage::wasm::command::CommandRunner::new(store.service()).unwrap();
        let component = runner.compile(&std::fs::read(BENCH_OP).unwrap()).unwrap();
        let options = alga_storage::wasm::command::RunOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            capture_output: true,
            ..Default::default()
        };
        let outcome = runner
            .run(&component, call.clone(), &options)
            .await
            .unwrap();
        assert_eq!(outcome.success(), succeeds, "{args:?}: {outcome:?}");
    }
    assert_bench_records_left(&store, &call).await;
}

/// The records both bench guests leave: of `k`, the first update landed, the stale one did not;
/// `d` was deleted.
async fn assert_bench_records_left(store: &TestStore, call: &CallContext) {
    let deleted = store.service().get(call, "bench", "d").await.unwrap();
    assert!(deleted.is_none(), "{deleted:?}");
    let record = store
        .service()
        .get(call, "bench", "k")
        .await
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(record.value.as_deref().unwrap()).unwrap();
    assert_eq!((value, record.revision), (serde_json::json!({"v": 2}), 2));
}

/// The load harness's handler guest: one instance serves every request of its install, its
/// failures are values (the instance stays usable), and a trap-free instance keeps working.
#[tokio::test]
async fn bench_handler() {
    for engine in ENGINES {
        bench_handler_on(engine).await;
    }
}

async fn bench_handler_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let call = granted("t", "i");
    let runner = handler::HandlerRunner::new(store.service(), BENCH_HANDLER).unwrap();
    let mut instance = runner.instantiate(call.clone()).await.unwrap();
    assert_eq!(instance.call().install_id, "i");
    // Operation, key, value, revision, and the result or the start of the error.
    type Request<'a> = (&'a str, &'a str, &'a str, u64, Result<(), &'a str>);
    let requests: [Request; 13] = [
        ("get", "k", "", 0, Err("get bench/k failed: missing")),
        ("list", "-", "", 0, Err("list bench/- failed: empty page")),
        ("insert", "k", r#"{"v":1}"#, 0, Ok(())),
        (
            "insert",
            "k",
            r#"{"v":9}"#,
            0,
            Err("insert bench/k failed: "),
        ),
        ("get", "k", "", 0, Ok(())),
        ("update", "k", r#"{"v":2}"#, 1, Ok(())),
        (
            "update",
            "k",
            r#"{"v":3}"#,
            1,
            Err("update bench/k failed: "),
        ),
        ("list", "-", "", 0, Ok(())),
        ("insert", "d", "1", 0, Ok(())),
        ("delete", "d", "", 2, Err("delete bench/d failed: ")),
        ("delete", "d", "", 1, Ok(())),
        ("delete", "d", "", 1, Err("delete bench/d failed: ")),
        ("drop", "k", "", 0, Err("unknown operation \"drop\"")),
    ];
    for (op, key, value, revision, expected) in requests {
        let outcome = instance
            .handle(op, "bench", key, value, revision)
            .await
            .unwrap_or_else(|trap| panic!("{op} trapped: {trap:?}"));
        match (&outcome, expected) {
            (Ok(()), Ok(())) => {}
            (Err(message), Err(start)) => assert!(message.starts_with(start), "{op}: {message}"),
            _ => panic!("{op} {key}: {outcome:?}, expected {expected:?}"),
        }
    }
    assert_bench_records_left(&store, &call).await;
    // Another install's instance of the same component sees none of it.
    let mut other = runner.instantiate(granted("t", "j")).await.unwrap();
    let missing = other.handle("get", "bench", "k", "", 0).await.unwrap();
    assert_eq!(missing, Err("get bench/k failed: missing".to_owned()));
}

/// Every instance the pooling allocator is sized for can be live and called at once, each
/// keeping its call's fiber stack (as warm instances do): more than wasmtime's default bound of
/// 1,000 stacks.
#[tokio::test]
async fn pooled_instances_all_call_at_once() {
    let store = TestStore::new(Engine::Sqlite).await;
    let live = 1_001;
    let runner = handler::HandlerRunner::pooled(store.service(), BENCH_HANDLER, live).unwrap();
    let mut instances = Vec::new();
    for i in 0..live {
        let made = runner.instantiate(granted("t", "i")).await;
        let mut instance = made.unwrap_or_else(|e| panic!("instance {i}: {e:?}"));
        let refused = instance.handle("none", "bench", "k", "", 0).await;
        let refused = refused.unwrap_or_else(|e| panic!("instance {i}: {e:?}"));
        let refused = refused.expect_err("the guest knows no \"none\"");
        assert!(refused.starts_with("unknown operation"), "{refused}");
        instances.push(instance);
    }
    let over = runner.instantiate(granted("t", "i")).await;
    let over = over
        .err()
        .unwrap_or_else(|| panic!("the pool holds {live} instances"));
    let refused = format!("{over:?}");
    assert!(refused.contains("component instances"), "{refused}");
}

/// A warm instance serves each request of its install as that request's caller: with its
/// grants and actor, not those of the request it was made for, and never for another install.
#[tokio::test]
async fn warm_instances_act_for_each_request() {
    for engine in ENGINES {
        warm_instances_act_for_each_request_on(engine).await;
    }
}

async fn warm_instances_act_for_each_request_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let runner = handler::HandlerRunner::new(store.service(), BENCH_HANDLER).unwrap();
    let warm = WarmInstances::new(WarmLimits::DEFAULT);
    let writer = granted("t", "i").actor("user:writer");
    let mut instance = runner.instantiate(writer.clone()).await.unwrap();
    let inserted = instance.handle("insert", "bench", "k", r#"{"v":1}"#, 0);
    assert_eq!(inserted.await.unwrap(), Ok(()));
    warm.put_back(instance);

    // A reader of the install gets the warm instance, acting with the reader's grants only.
    let reader = CallContext::new("t", "i")
        .grant(alga_storage::STORAGE_READ_CAPABILITY)
        .actor("user:reader")
        .request_id("req-2");
    let mut instance = warm
        .take(reader.clone())
        .expect("the writer's instance, idle");
    assert_eq!(instance.call(), &reader);
    let read = instance.handle("get", "bench", "k", "", 0).await.unwrap();
    assert_eq!(read, Ok(()));
    let denied = instance.handle("update", "bench", "k", r#"{"v":2}"#, 1);
    let denied = denied.await.unwrap().unwrap_err();
    assert!(denied.contains("CapabilityDenied"), "{denied}");

    // It cannot be turned to another install, tenant or extension: refused, and it still acts
    // for the reader.
    let others = [
        granted("t", "j"),
        granted("u", "i"),
        granted("t", "i").extension("other"),
    ];
    for other in others {
        let refused = instance.set_call(other.clone()).unwrap_err();
        assert_eq!(refused.refused.install_id, other.install_id);
        assert_eq!(refused.instance.tenant_id, "t");
        assert_eq!(instance.call(), &reader);
    }

    // A second writer's update is recorded as theirs.
    let second = granted("t", "i").actor("user:second");
    instance.set_call(second.clone()).unwrap();
    let updated = instance.handle("update", "bench", "k", r#"{"v":2}"#, 1);
    assert_eq!(updated.await.unwrap(), Ok(()));
    warm.put_back(instance);
    assert_eq!(warm.idle(), 1);
    let audit = store
        .service()
        .audit(&second, &AuditQuery::default())
        .await
        .unwrap();
    let mut actors: Vec<_> = audit
        .records
        .iter()
        .map(|r| (r.actor.as_str(), r.revision))
        .collect();
    actors.sort();
    assert_eq!(
        actors,
        [("user:second", Some(2)), ("user:writer", Some(1))],
        "{engine:?}"
    );
}

const PROFILE_SCHEMA: &str = r#"{
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "age"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}}
    }
}"#;

/// A guest handles `validation-failed` by reading the violations' JSON pointers.
#[tokio::test]
async fn store_schema_validation() {
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let service = store.service();
        let call = granted("t", "i");
        let version = service
            .register_schema(&call, "profiles", PROFILE_SCHEMA)
            .await
            .unwrap();
        assert_eq!(version, 1);
        let outcome = run_fixture_as(service, STORE_SCHEMA_VALIDATION, call, &[]).await;
        assert_success(&format!("store_schema_validation on {engine:?}"), &outcome);
    }
}

/// A guest pinned to an old schema version gets `schema-mismatch` with the current one.
#[tokio::test]
async fn store_schema_pinned() {
    for engine in ENGINES {
        schema_pinned_on(engine).await;
    }
}

async fn schema_pinned_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let v1 = r#"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                 "required": ["color"]}"#;
    let v2 = r#"{"type": "object", "required": ["color", "contrast"]}"#;
    assert_eq!(
        service
            .register_schema(&call, "settings", v1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        service
            .register_schema(&call, "settings", v2)
            .await
            .unwrap(),
        2
    );
    let outcome = run_fixture_as(service, STORE_SCHEMA_PINNED, call, &[]).await;
    assert_success("store_schema_pinned", &outcome);
}

#[tokio::test]
async fn store_interop() {
    // The wasm side alone: what one run writes, another run reads identically. The REST side
    // of the same check is in `http_gateway.rs` and the browser test.
    for engine in ENGINES {
        interop_on(engine).await;
    }
}

async fn interop_on(engine: Engine) {
    let store = TestStore::new(engine).await;
    let env = [
        ("ALGA_KEY", "k/ü 1"),
        (
            "ALGA_VALUE",
            r#"{"text":"héllo ✓","n":[1,2.5,null],"deep":{"a":{"b":true}}}"#,
        ),
        ("ALGA_METADATA", r#"{"by":"wasm"}"#),
    ];
    for mode in ["write", "read"] {
        let mut env = env.to_vec();
        env.push(("ALGA_MODE", mode));
        let outcome = run_fixture_as(
            store.service(),
            STORE_INTEROP,
            granted("tenant-a", "install-1"),
            &env,
        )
        .await;
        assert_success("store_interop", &outcome);
        assert_eq!(outcome.stdout.trim(), "revision 1");
    }
}

/// A runner with tight limits for the hostile guests.
fn tight_runner(service: alga_storage::StorageService) -> CommandRunner {
    let limits = GuestLimits {
        max_memory_bytes: 32 << 20,
        max_run_time: Duration::from_millis(500),
        ..GuestLimits::DEFAULT
    };
    CommandRunner::with_limits(service, limits).unwrap()
}

async fn run_with(runner: &CommandRunner, path: &str, call: CallContext) -> RunOutcome {
    let component = runner.compile(&std::fs::read(path).unwrap()).unwrap();
    let options = RunOptions {
        capture_output: true,
        ..Default::default()
    };
    runner.run(&component, call, &options).await.unwrap()
}

/// An endless loop is stopped by the epoch deadline; a well-behaved guest running at the same
/// time on the same runner, and one after it, succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_loop() {
    let store = TestStore::new(Engine::Sqlite).await;
    let runner = tight_runner(store.service());
    let started = std::time::Instant::now();
    let (looped, meanwhile) = tokio::join!(
        run_with(&runner, HOSTILE_LOOP, granted("t", "looper")),
        run_with(&runner, STORE_ROUNDTRIP, granted("t", "neighbour")),
    );
    let error = looped.result.unwrap_err();
    assert!(error.contains("interrupt"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped near its deadline"
    );
    assert_success("store_roundtrip beside the loop", &meanwhile);
    let after = run_with(&runner, STORE_ROUNDTRIP, granted("t", "after")).await;
    assert_success("store_roundtrip after the loop", &after);
}

/// Unbounded memory growth hits the instance's memory limit and traps; the host goes on.
#[tokio::test]
async fn hostile_memory() {
    let store = TestStore::new(Engine::Sqlite).await;
    let runner = tight_runner(store.service());
    let outcome = run_with(&runner, HOSTILE_MEMORY, granted("t", "hog")).await;
    let error = outcome.result.unwrap_err();
    assert!(error.contains("memory"), "{error}");
    let after = run_with(&runner, STORE_ROUNDTRIP, granted("t", "after")).await;
    assert_success("store_roundtrip after the memory hog", &after);
}

/// A pooled runner with one slot reuses it for every instance: each run still starts fresh
/// (initialized data restored, grown memory zero), whichever way the slot is reset on this
/// kernel, and the store sees every run.
#[tokio::test]
async fn fresh_instance() {
    let store = TestStore::new(Engine::Sqlite).await;
    let runner = CommandRunner::pooled(store.service(), 1).unwrap();
    let component = runner
        .compile(&std::fs::read(FRESH_INSTANCE).unwrap())
        .unwrap();
    let prepared = runner.prepare(&component).unwrap();
    let call = granted("t", "fresh");
    let options = RunOptions {
        capture_output: true,
        ..Default::default()
    };
    for run in 1..=20 {
        let outcome = runner
            .instantiate(&prepared, call.clone(), &options)
            .await
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_success(&format!("fresh_instance run {run}"), &outcome);
        assert_eq!(outcome.stdout, "fresh\n");
    }
    let runs = store.service().get(&call, "fresh", "runs").await.unwrap();
    assert_eq!(runs.unwrap().value.as_deref(), Some("20"));
}

/// Oversized and overdeep inputs through the interface are refused with `invalid-input`, on
/// both engines. The guest needs room for a 100 MB string, so this runner allows 512 MiB.
#[tokio::test]
async fn hostile_inputs() {
    for engine in ENGINES {
        let store = TestStore::new(engine).await;
        let limits = GuestLimits {
            max_memory_bytes: 512 << 20,
            ..GuestLimits::DEFAULT
        };
        let runner = CommandRunner::with_limits(store.service(), limits).unwrap();
        let outcome = run_with(&runner, HOSTILE_INPUTS, granted("t", "i")).await;
        assert_success(&format!("hostile_inputs on {engine:?}"), &outcome);
        assert_eq!(outcome.stdout.trim(), "all refused");
    }
}

/// Taking host resources without bound hits the instance's resource limit and traps; the host
/// goes on.
#[tokio::test]
async fn hostile_resources() {
    let store = TestStore::new(Engine::Sqlite).await;
    let runner = tight_runner(store.service());
    let outcome = run_with(&runner, HOSTILE_RESOURCES, granted("t", "hoarder")).await;
    let error = outcome.result.unwrap_err();
    assert!(error.contains("resource table"), "{error}");
    let after = run_with(&runner, STORE_ROUNDTRIP, granted("t", "after")).await;
    assert_success("store_roundtrip after the resource hoarder", &after);
}

/// A guest waiting in the host (sleeping) is stopped by the run's time budget as well.
#[tokio::test]
async fn hostile_sleep() {
    let store = TestStore::new(Engine::Sqlite).await;
    let runner = tight_runner(store.service());
    let started = std::time::Instant::now();
    let outcome = run_with(&runner, HOSTILE_SLEEP, granted("t", "sleeper")).await;
    let error = outcome.result.unwrap_err();
    assert!(error.contains("interrupted"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped near its budget"
    );
}
