//! The audit trail: exactly one row per committed mutation and none for refused ones, paging by
//! time, retention in batches, and the outbox relay shipping every row at least once.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use alga_storage::model::{AuditQuery, AuditRecord, Precondition, PutItem, PutOptions};
use alga_storage::service::AuditSink;
use alga_storage::{CallContext, Limits, StorageError, StorageService};
use alga_storage_tests::*;

/// What one committed mutation must leave: (operation, namespace, key, revision).
type Expected = (String, String, String, u64);

/// Every audit row of `ctx`'s install, paging with small pages.
async fn all_rows(service: &StorageService, ctx: &CallContext) -> Vec<AuditRecord> {
    let mut rows = Vec::new();
    let mut query = AuditQuery {
        limit: Some(37),
        ..Default::default()
    };
    loop {
        let page = service.audit(ctx, &query).await.unwrap();
        rows.extend(page.records);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return rows,
        }
    }
}

#[tokio::test]
async fn one_row_per_committed_mutation_and_none_for_refusals() {
    let db = TestDb::new().await;
    let limits = Limits {
        max_keys_per_namespace: 30,
        ..Limits::DEFAULT
    };
    let service = db.service().with_limits(limits, limits);
    let ctx = granted("tenant-a", "install-1").request_id("req-audit");
    let other = granted("tenant-a", "install-2");
    service
        .put(&other, "ns0", "noise", "1", &PutOptions::default())
        .await
        .unwrap();

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut revisions: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut expected: Vec<Expected> = Vec::new();
    let mut refused: BTreeMap<&str, u32> = BTreeMap::new();
    for step in 0..400 {
        let ns = format!("ns{}", rng.below(2));
        let key = format!("k{}", rng.below(16));
        let current = revisions.get(&(ns.clone(), key.clone())).copied();
        match rng.below(10) {
            // put with a random precondition, right or wrong
            0..=4 => {
                let precondition = match rng.below(4) {
                    0 => Precondition::Absent,
                    1 => Precondition::Revision(current.unwrap_or(1)),
                    2 => Precondition::Revision(current.unwrap_or(0) + 5),
                    _ => Precondition::None,
                };
                let options = PutOptions {
                    precondition,
                    ..Default::default()
                };
                match service
                    .put(&ctx, &ns, &key, &format!("{{\"step\":{step}}}"), &options)
                    .await
                {
                    Ok(written) => {
                        revisions.insert((ns.clone(), key.clone()), written.revision);
                        expected.push(("put".into(), ns, key, written.revision));
                    }
                    Err(
                        e @ (StorageError::RevisionConflict { .. }
                        | StorageError::QuotaExceeded { .. }),
                    ) => *refused.entry(e.code()).or_default() += 1,
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            // delete, sometimes with a wrong revision
            5 | 6 => {
                let precondition = if rng.below(3) == 0 {
                    Precondition::Revision(current.unwrap_or(0) + 3)
                } else {
                    Precondition::None
                };
                match service.delete(&ctx, &ns, &key, precondition).await {
                    Ok(true) => {
                        let revision = revisions.remove(&(ns.clone(), key.clone())).unwrap();
                        expected.push(("delete".into(), ns, key, revision));
                    }
                    Ok(false) => assert!(current.is_none()),
                    Err(e @ StorageError::RevisionConflict { .. }) => {
                        *refused.entry(e.code()).or_default() += 1
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            // bulk put of 2-4 keys, sometimes with a failing item
            7 | 8 => {
                let n = 2 + rng.below(3);
                let mut items = Vec::new();
                for i in 0..n {
                    let key = format!("b{}", (rng.below(8) + i * 8) % 24);
                    if items.iter().any(|item: &PutItem| item.key == key) {
                        continue;
                    }
                    let precondition = if rng.below(5) == 0 {
                        Precondition::Revision(99)
                    } else {
                        Precondition::None
                    };
                    items.push(PutItem {
                        key,
                        value: format!("[{step},{i}]"),
                        options: PutOptions {
                            precondition,
                            ..Default::default()
                        },
                    });
                }
                match service.bulk_put(&ctx, &ns, &items).await {
                    Ok(results) => {
                        for result in results {
                            revisions.insert((ns.clone(), result.key.clone()), result.revision);
                            expected.push(("put".into(), ns.clone(), result.key, result.revision));
                        }
                    }
                    Err(e) => *refused.entry(e.error.code()).or_default() += 1,
                }
            }
            // invalid input: nothing happens
            _ => {
                let result = service
                    .put(&ctx, &ns, "", "{", &PutOptions::default())
                    .await;
                assert!(matches!(result, Err(StorageError::InvalidInput { .. })));
                *refused.entry("invalid-input").or_default() += 1;
            }
        }
    }
    for code in ["revision-conflict", "quota-exceeded", "invalid-input"] {
        assert!(
            refused.get(code).copied().unwrap_or(0) > 5,
            "too few {code}: {refused:?}"
        );
    }
    assert!(
        expected.len() > 150,
        "{refused:?} refused, {} committed",
        expected.len()
    );

    let rows = all_rows(&service, &ctx).await;
    let mut found: Vec<Expected> = rows
        .iter()
        .map(|r| {
            assert_eq!(
                (r.tenant_id.as_str(), r.install_id.as_str()),
                ("tenant-a", "install-1")
            );
            assert_eq!(r.actor, "test");
            assert_eq!(r.request_id.as_deref(), Some("req-audit"));
            (
                r.operation.clone(),
                r.namespace.clone().unwrap(),
                r.key.clone().unwrap(),
                r.revision.unwrap(),
            )
        })
        .collect();
    let mut wanted = expected.clone();
    found.sort();
    wanted.sort();
    assert_eq!(found, wanted, "exactly one row per committed mutation");
    let times: Vec<SystemTime> = rows.iter().map(|r| r.occurred_at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // Counter repair and schema registration are mutations too.
    service
        .register_schema(&ctx, "ns0", r#"{"type":["object","array"]}"#)
        .await
        .unwrap();
    db.client()
        .await
        .execute(
            "UPDATE ext_storage_namespace_usage SET key_count = key_count + 7 \
             WHERE tenant_id = 'tenant-a' AND extension_install_id = 'install-1' AND namespace = 'ns1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(service.recount(&ctx, true).await.unwrap().len(), 1);
    let rows = all_rows(&service, &ctx).await;
    let operations: Vec<&str> = rows[expected.len()..]
        .iter()
        .map(|r| r.operation.as_str())
        .collect();
    assert_eq!(operations, ["schema-register", "counter-repair"]);
}

async fn audit_pages_by_time_and_refuses_forged_cursors(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let ctx = granted("tenant-a", "install-1");
    for i in 0..5 {
        service
            .put(
                &ctx,
                "ns",
                &format!("early{i}"),
                "1",
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..3 {
        service
            .put(&ctx, "ns", &format!("late{i}"), "1", &PutOptions::default())
            .await
            .unwrap();
    }
    let since = |since, until| AuditQuery {
        since,
        until,
        ..Default::default()
    };
    let late = service
        .audit(&ctx, &since(Some(middle), None))
        .await
        .unwrap();
    assert_eq!(late.records.len(), 3);
    assert!(
        late.records
            .iter()
            .all(|r| r.key.as_deref().unwrap().starts_with("late"))
    );
    let early = service
        .audit(&ctx, &since(None, Some(middle)))
        .await
        .unwrap();
    assert_eq!(early.records.len(), 5);
    let page = service
        .audit(
            &ctx,
            &AuditQuery {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert!(page.next_cursor.is_some());
    for bad in [Some("forged".to_owned())] {
        let query = AuditQuery {
            cursor: bad,
            ..Default::default()
        };
        assert!(matches!(
            service.audit(&ctx, &query).await,
            Err(StorageError::InvalidInput { .. })
        ));
    }
    let too_big = AuditQuery {
        limit: Some(1001),
        ..Default::default()
    };
    assert!(service.audit(&ctx, &too_big).await.is_err());
    // Another install's trail is its own.
    assert!(
        service
            .audit(&granted("tenant-a", "install-2"), &Default::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
}

async fn retention_prunes_old_rows_of_every_tenant_in_batches(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let (a, b) = (granted("tenant-a", "i"), granted("tenant-b", "i"));
    for ctx in [&a, &b] {
        for i in 0..10 {
            service
                .put(ctx, "ns", &format!("old{i}"), "1", &PutOptions::default())
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = SystemTime::now();
    for ctx in [&a, &b] {
        service
            .put(ctx, "ns", "new", "1", &PutOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(service.prune_audit(cutoff, 3).await.unwrap(), 20);
    for ctx in [&a, &b] {
        let rows = all_rows(&service, ctx).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key.as_deref(), Some("new"));
    }
    assert_eq!(service.prune_audit(cutoff, 3).await.unwrap(), 0);
    assert!(service.prune_audit(cutoff, 0).await.is_err());
    // The records themselves are untouched.
    assert!(service.get(&a, "ns", "old3").await.unwrap().is_some());
}

/// A sink collecting what it receives; it can be told to fail after receiving (as if the relay
/// crashed between shipping and marking).
#[derive(Clone, Default)]
struct CollectingSink {
    received: Arc<Mutex<Vec<i64>>>,
    fail_next: Arc<Mutex<bool>>,
}

#[async_trait::async_trait]
impl AuditSink for CollectingSink {
    async fn ship(&mut self, records: &[AuditRecord]) -> io::Result<()> {
        self.received
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.id));
        let mut fail = self.fail_next.lock().unwrap();
        if *fail {
            *fail = false;
            return Err(io::Error::other("crashed after delivery"));
        }
        Ok(())
    }
}

async fn relay_ships_every_row_at_least_once_while_writes_continue(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let mut sink = CollectingSink::default();

    // Writers on three tenants run while the relay runs rounds.
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let service = service.clone();
            tokio::spawn(async move {
                let ctx = granted(&format!("tenant-{t}"), "install");
                for i in 0..60 {
                    service
                        .put(&ctx, "ns", &format!("k{i}"), "1", &PutOptions::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut rounds = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        *sink.fail_next.lock().unwrap() = rounds == 1;
        let _ = service.relay_audit(&mut sink, 25).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    while service.relay_audit(&mut sink, 25).await.unwrap() > 0 {}

    let all: Vec<(String, i64)> = store
        .sql(
            "SELECT tenant_id, id FROM ext_storage_audit",
            "SELECT tenant_id, id FROM audit",
        )
        .await
        .into_iter()
        .map(|row| (row[0].clone(), row[1].parse().unwrap()))
        .collect();
    assert_eq!(all.len(), 180);
    let received = sink.received.lock().unwrap().clone();
    // Ids are unique per tenant; here one sequence serves all tenants, so they are unique.
    for (_, id) in &all {
        assert!(received.contains(id), "row {id} was never shipped");
    }
    let unshipped = store
        .sql(
            "SELECT count(*) FROM ext_storage_audit WHERE relayed_at IS NULL",
            "SELECT count(*) FROM audit WHERE relayed_at IS NULL",
        )
        .await;
    assert_eq!(unshipped[0][0], "0");
    // Nothing is shipped twice unless a delivery was not acknowledged.
    assert!(received.len() >= all.len());
    assert_eq!(service.relay_audit(&mut sink, 25).await.unwrap(), 0);
}

#[tokio::test]
async fn cli_lists_prunes_and_relays_to_a_file() {
    let db = TestDb::new().await;
    let service = db.service();
    let ctx = granted("tenant-a", "install-1");
    for i in 0..4 {
        service
            .put(&ctx, "ns", &format!("k{i}"), "1", &PutOptions::default())
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("alga-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&file);
    let url = db.url.clone();
    let target = format!("file:{}", file.display());
    alga_storage::cli::run([
        "alga-storage",
        "--database-url",
        &url,
        "audit",
        "relay",
        "--to",
        &target,
    ])
    .await
    .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["operation"], "put");
    assert_eq!(lines[0]["tenant"], "tenant-a");
    assert_eq!(lines[3]["key"], "k3");
    // A second run ships nothing new.
    alga_storage::cli::run([
        "alga-storage",
        "--database-url",
        &url,
        "audit",
        "relay",
        "--to",
        &target,
    ])
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);
    alga_storage::cli::run([
        "alga-storage",
        "--database-url",
        &url,
        "audit",
        "list",
        "--tenant",
        "tenant-a",
        "--install",
        "install-1",
        "--all",
        "--limit",
        "3",
    ])
    .await
    .unwrap();
    alga_storage::cli::run([
        "alga-storage",
        "--database-url",
        &url,
        "audit",
        "prune",
        "--older-than-days",
        "0",
    ])
    .await
    .unwrap();
    assert!(all_rows(&service, &ctx).await.is_empty());
    assert!(
        alga_storage::cli::run([
            "alga-storage",
            "--database-url",
            &url,
            "audit",
            "relay",
            "--to",
            "ftp://x"
        ])
        .await
        .is_err()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A key's time never goes back: a write that finds the key stamped later than its own clock
/// (a later-clocked write it waited for, or another host's clock ahead) takes that time, so the
/// record's updated_at and the audit order follow the revisions.
async fn a_keys_time_never_goes_back(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let ctx = granted("tenant-a", "install-1");
    service
        .put(&ctx, "ns", "k", "1", &PutOptions::default())
        .await
        .unwrap();
    // The key, and its audit row, as a host with a clock an hour ahead would have left them.
    let ahead = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    store
        .sql(
            &format!(
                "UPDATE ext_storage_records SET updated_at = {EPOCH} + {ahead} * interval '1 us'; \
                 UPDATE ext_storage_audit SET occurred_at = {EPOCH} + {ahead} * interval '1 us'",
                EPOCH = "timestamptz 'epoch'"
            ),
            &format!(
                "UPDATE records SET updated_at = {ahead}; UPDATE audit SET occurred_at = {ahead}"
            ),
        )
        .await;
    let ahead = SystemTime::UNIX_EPOCH + Duration::from_micros(ahead as u64);

    let written = service
        .put(&ctx, "ns", "k", "2", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(written.revision, 2);
    let record = service.get(&ctx, "ns", "k").await.unwrap().unwrap();
    assert_eq!(record.updated_at, ahead);
    assert!(record.created_at < record.updated_at);
    service
        .delete(&ctx, "ns", "k", Precondition::None)
        .await
        .unwrap();

    let history: Vec<_> = all_rows(&service, &ctx)
        .await
        .into_iter()
        .map(|row| (row.operation, row.revision, row.occurred_at == ahead))
        .collect();
    assert_eq!(
        history,
        [
            ("put".to_string(), Some(1), true),
            ("put".to_string(), Some(2), true),
            ("delete".to_string(), Some(2), true)
        ]
    );
}

on_both_engines!(
    a_keys_time_never_goes_back,
    audit_pages_by_time_and_refuses_forged_cursors,
    retention_prunes_old_rows_of_every_tenant_in_batches,
    relay_ships_every_row_at_least_once_while_writes_continue,
);

fn audit_row(id: i64) -> AuditRecord {
    AuditRecord {
        id,
        tenant_id: "tenant-a".into(),
        install_id: "install-1".into(),
        extension_id: "ext".into(),
        namespace: Some("ns".into()),
        key: Some(format!("k{id}")),
        operation: "put".into(),
        actor: "user".into(),
        revision: Some(1),
        bytes: Some(3),
        request_id: None,
        occurred_at: SystemTime::UNIX_EPOCH,
    }
}

/// The ids of the lines that parse, and how many lines do not.
fn shipped_ids(text: &str) -> (Vec<i64>, usize) {
    let (mut ids, mut unparsable) = (Vec::new(), 0);
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(row) => ids.push(row["id"].as_i64().unwrap()),
            Err(_) => unparsable += 1,
        }
    }
    (ids, unparsable)
}

/// A file an earlier run left mid-line gets a line break before the next batch: the torn line
/// stays one line to skip, and every row shipped after it is whole. Files that end a line get
/// no blank line.
#[tokio::test]
async fn a_file_torn_by_an_earlier_run_gets_the_next_batch_on_a_line_of_its_own() {
    let dir = std::env::temp_dir().join(format!("alga-audit-torn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (before, expected_unparsable) in [
        ("", 0),
        ("{\"id\":1}\n", 0),
        ("{\"id\":1}\n{\"id\":2,\"op", 1),
    ] {
        let file = dir.join("audit.jsonl");
        std::fs::write(&file, before).unwrap();
        let mut sink = alga_storage::relay::JsonLinesSink::append(&file)
            .await
            .unwrap();
        sink.ship(&[audit_row(2), audit_row(3)]).await.unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let (ids, unparsable) = shipped_ids(&text);
        assert_eq!(unparsable, expected_unparsable, "{text:?}");
        assert_eq!(ids.last(), Some(&3), "{text:?}");
        assert_eq!(ids.iter().filter(|id| **id == 2).count(), 1, "{text:?}");
        assert!(!text.contains("\n\n"), "{text:?}");
    }
}

/// A writer that takes `budget` bytes, then fails once (a full disk, a broken pipe), then works.
struct FailsOnce {
    written: Vec<u8>,
    budget: usize,
    failed: bool,
}

impl tokio::io::AsyncWrite for FailsOnce {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if !self.failed && self.budget == 0 {
            self.failed = true;
            return std::task::Poll::Ready(Err(io::Error::other("no space left")));
        }
        let n = if self.failed {
            buf.len()
        } else {
            buf.len().min(self.budget)
        };
        if !self.failed {
            self.budget -= n;
        }
        self.written.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A batch cut by a failed write fails the delivery (so its rows stay unshipped), and the
/// retried batch starts on a new line.
#[tokio::test]
async fn a_batch_cut_by_a_failed_write_is_retried_on_a_new_line() {
    let mut sink = alga_storage::relay::JsonLinesSink::new(FailsOnce {
        written: Vec::new(),
        budget: 40,
        failed: false,
    });
    let batch = [audit_row(1), audit_row(2)];
    assert!(sink.ship(&batch).await.is_err());
    sink.ship(&batch).await.unwrap();
    sink.ship(&[audit_row(3)]).await.unwrap();
    let text = String::from_utf8(sink.into_inner().written).unwrap();
    assert_eq!(shipped_ids(&text), (vec![1, 2, 3], 1), "{text:?}");
}

/// The HTTP sink posts NDJSON and counts a batch shipped only on a 2xx answer; an error status,
/// or no answer within its timeout, fails the batch.
#[tokio::test]
async fn the_http_sink_ships_only_what_the_collector_accepts() {
    use axum::http::{HeaderMap, StatusCode};

    type Received = Arc<Mutex<Vec<(String, String)>>>;
    let received: Received = Arc::default();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let collector = axum::Router::new().route(
        "/ingest",
        axum::routing::post({
            let (received, refuse) = (received.clone(), refuse.clone());
            move |headers: HeaderMap, body: String| async move {
                if refuse.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let kind = headers["content-type"].to_str().unwrap().to_owned();
                received.lock().unwrap().push((kind, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut sink = alga_storage::relay::HttpSink::new(&url);
    let batch = [audit_row(1), audit_row(2)];
    let refused = sink.ship(&batch).await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");
    sink.ship(&batch).await.unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, "application/x-ndjson");
    assert_eq!(shipped_ids(&received[0].1), (vec![1, 2], 0));

    // A collector that takes the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(socket);
    });
    let mut sink = alga_storage::relay::HttpSink::with_timeout(&url, Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(sink.ship(&batch).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
    held.abort();
}
