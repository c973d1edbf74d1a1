//! Host-side tests of what a guest cannot show alone: capability checks before any query,
//! tenant and install scoping, races on preconditions, counters, and database failures.

use std::sync::Arc;
use std::time::SystemTime;

use alga_storage::backend::{
    AuditRange, Backend, CounterDrift, ListQuery, NamespaceCounters, StoredSchema, WriteBatch,
    WriteOutcome,
};
use alga_storage::model::{AuditRecord, ListOptions, Precondition, PutItem, PutOptions, Record};
use alga_storage::{BulkError, CallContext, StorageError, StorageService};
use alga_storage_tests::*;
use async_trait::async_trait;

/// A backend that fails the test if it is ever called.
struct UnreachableBackend;

#[async_trait]
impl Backend for UnreachableBackend {
    async fn get(
        &self,
        _: &CallContext,
        _: &str,
        _: &str,
        _: SystemTime,
    ) -> Result<Option<Record>, StorageError> {
        panic!("backend called")
    }
    async fn put(&self, _: &CallContext, _: &WriteBatch<'_>) -> Result<WriteOutcome, BulkError> {
        panic!("backend called")
    }
    async fn delete(
        &self,
        _: &CallContext,
        _: &str,
        _: &str,
        _: Precondition,
        _: SystemTime,
        _: u32,
    ) -> Result<bool, StorageError> {
        panic!("backend called")
    }
    async fn list(&self, _: &CallContext, _: &ListQuery<'_>) -> Result<Vec<Record>, StorageError> {
        panic!("backend called")
    }
    async fn usage(
        &self,
        _: &CallContext,
        _: SystemTime,
    ) -> Result<Vec<NamespaceCounters>, StorageError> {
        panic!("backend called")
    }
    async fn current_schema(
        &self,
        _: &CallContext,
        _: &str,
    ) -> Result<Option<StoredSchema>, StorageError> {
        panic!("backend called")
    }
    async fn register_schema(
        &self,
        _: &CallContext,
        _: &str,
        _: &str,
        _: SystemTime,
    ) -> Result<u32, StorageError> {
        panic!("backend called")
    }
    async fn recount(
        &self,
        _: &CallContext,
        _: bool,
        _: SystemTime,
    ) -> Result<Vec<CounterDrift>, StorageError> {
        panic!("backend called")
    }
    async fn audit_page(
        &self,
        _: &CallContext,
        _: &AuditRange,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        panic!("backend called")
    }
    async fn audit_tenants_before(&self, _: SystemTime) -> Result<Vec<String>, StorageError> {
        panic!("backend called")
    }
    async fn prune_audit(&self, _: &str, _: SystemTime, _: u32) -> Result<u64, StorageError> {
        panic!("backend called")
    }
    async fn unrelayed_tenants(&self) -> Result<Vec<String>, StorageError> {
        panic!("backend called")
    }
    async fn unrelayed(&self, _: &str, _: u32) -> Result<Vec<AuditRecord>, StorageError> {
        panic!("backend called")
    }
    async fn mark_relayed(&self, _: &str, _: &[i64], _: SystemTime) -> Result<(), StorageError> {
        panic!("backend called")
    }
    async fn schema_versions(
        &self,
        _: &CallContext,
    ) -> Result<Vec<(String, StoredSchema)>, StorageError> {
        panic!("backend called")
    }
    async fn restore_records(
        &self,
        _: &CallContext,
        _: &str,
        _: &[Record],
        _: SystemTime,
    ) -> Result<(), StorageError> {
        panic!("backend called")
    }
    async fn restore_schema(
        &self,
        _: &CallContext,
        _: &str,
        _: &StoredSchema,
        _: SystemTime,
    ) -> Result<bool, StorageError> {
        panic!("backend called")
    }
}

#[tokio::test]
async fn no_grant_is_denied_before_the_backend() {
    let service = StorageService::new(Arc::new(UnreachableBackend));
    let call = CallContext::new("t", "i").grant("some.other.capability");
    let denied = |e: StorageError| assert_eq!(e.code(), "capability-denied", "{e}");
    denied(service.get(&call, "ns", "k").await.unwrap_err());
    denied(
        service
            .put(&call, "ns", "k", "1", &PutOptions::default())
            .await
            .unwrap_err(),
    );
    denied(
        service
            .delete(&call, "ns", "k", Precondition::None)
            .await
            .unwrap_err(),
    );
    denied(
        service
            .list(&call, "ns", &ListOptions::default())
            .await
            .unwrap_err(),
    );
    denied(service.usage(&call).await.unwrap_err());
    let item = PutItem {
        key: "k".into(),
        value: "1".into(),
        options: PutOptions::default(),
    };
    let err = service.bulk_put(&call, "ns", &[item]).await.unwrap_err();
    assert_eq!(err.item, None);
    denied(err.error);
}

async fn tenants_and_installs_are_scoped(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let a1 = granted("tenant-a", "install-1");
    let b1 = granted("tenant-b", "install-1");
    let a2 = granted("tenant-a", "install-2");
    service
        .put(&a1, "ns", "k", r#""a1""#, &PutOptions::default())
        .await
        .unwrap();

    for other in [&b1, &a2] {
        assert!(service.get(other, "ns", "k").await.unwrap().is_none());
        assert!(
            service
                .list(other, "ns", &ListOptions::default())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        assert!(
            !service
                .delete(other, "ns", "k", Precondition::None)
                .await
                .unwrap()
        );
        assert_eq!(service.usage(other).await.unwrap().namespaces.used, 0);
        // Writing the same key elsewhere creates a separate record at revision 1.
        let w = service
            .put(other, "ns", "k", r#""other""#, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(w.revision, 1);
    }
    let own = service.get(&a1, "ns", "k").await.unwrap().unwrap();
    assert_eq!((own.value.as_deref(), own.revision), (Some(r#""a1""#), 1));
}

async fn concurrent_if_absent_has_one_winner(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let call = granted("t", "i");
            let options = PutOptions {
                precondition: Precondition::Absent,
                ..Default::default()
            };
            service
                .put(&call, "race", "k", &i.to_string(), &options)
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(w) => {
                assert_eq!(w.revision, 1);
                wins += 1;
            }
            Err(StorageError::RevisionConflict {
                current_revision, ..
            }) => {
                assert_eq!(current_revision, Some(1))
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(wins, 1);
    let usage = service.usage(&granted("t", "i")).await.unwrap();
    assert_eq!(usage.per_namespace[0].keys.used, 1);
}

async fn concurrent_revision_checked_increments_lose_nothing(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    service
        .put(&call, "c", "n", "0", &PutOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    // 64 tasks, 4 successful increments each, on one key.
    for _ in 0..64 {
        let (service, call) = (service.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 4 {
                let r = service.get(&call, "c", "n").await.unwrap().unwrap();
                let n: u64 = r.value.unwrap().parse().unwrap();
                let options = PutOptions {
                    precondition: Precondition::Revision(r.revision),
                    ..Default::default()
                };
                match service
                    .put(&call, "c", "n", &(n + 1).to_string(), &options)
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StorageError::RevisionConflict { .. }) => {}
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let r = service.get(&call, "c", "n").await.unwrap().unwrap();
    assert_eq!(r.value.as_deref(), Some("256"), "no update lost");
    assert_eq!(r.revision, 257);
}

/// Deletes racing overwrites and re-creations of one key: a delete at a revision deletes that
/// revision or reports another as current, never the one it asked for; a delete that says it
/// deleted has exactly one audit row; the counters end exact.
async fn concurrent_deletes_and_overwrites_agree(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    service
        .put(&call, "race", "k", "0", &PutOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let (service, call) = (service.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
            let (mut created, mut deleted) = (0u32, 0u32);
            for _ in 0..30 {
                // Values of changing size, so each write moves the byte counters.
                let value = format!("\"{}\"", "v".repeat(rng.below(64)));
                let Some(current) = service.get(&call, "race", "k").await.unwrap() else {
                    let options = PutOptions {
                        precondition: Precondition::Absent,
                        ..Default::default()
                    };
                    match service.put(&call, "race", "k", &value, &options).await {
                        Ok(_) => created += 1,
                        Err(StorageError::RevisionConflict { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                    continue;
                };
                let at = Precondition::Revision(current.revision);
                let outcome = match rng.below(3) {
                    0 => service.delete(&call, "race", "k", at).await,
                    1 => service.delete(&call, "race", "k", Precondition::None).await,
                    _ => {
                        let options = PutOptions {
                            precondition: at,
                            ..Default::default()
                        };
                        let written = service.put(&call, "race", "k", &value, &options).await;
                        written.map(|_| false)
                    }
                };
                match outcome {
                    Ok(true) => deleted += 1,
                    Ok(false) => {}
                    Err(StorageError::RevisionConflict {
                        current_revision, ..
                    }) => assert_ne!(current_revision, Some(current.revision)),
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            (created, deleted)
        }));
    }
    let (mut created, mut deleted) = (1, 0);
    for task in tasks {
        let (c, d) = task.await.unwrap();
        (created, deleted) = (created + c, deleted + d);
    }
    assert!(deleted > 0, "no delete succeeded: the race was not run");
    let exists = service.get(&call, "race", "k").await.unwrap().is_some();
    assert_eq!(
        created - deleted,
        u32::from(exists),
        "{created} created, {deleted} deleted"
    );
    let audited = store
        .sql(
            "SELECT count(*) FROM ext_storage_audit WHERE operation = 'delete'",
            "SELECT count(*) FROM audit WHERE operation = 'delete'",
        )
        .await;
    assert_eq!(audited[0][0], deleted.to_string());
    assert_eq!(service.recount(&call, false).await.unwrap(), []);
}

/// A delete meets an expired record that is still stored (no write has swept it): without a
/// precondition, or one that it be absent, the record is removed as TTL cleanup and the delete
/// reports nothing deleted; at its old revision the delete is a conflict with no current
/// revision and removes nothing. A live record is a conflict for a delete that needs it absent;
/// a key never written is not.
async fn deletes_meet_expired_records(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let short = PutOptions {
        ttl: Some(std::time::Duration::from_millis(200)),
        ..Default::default()
    };
    // A namespace per case: a delete sweeps its namespace's other expired records.
    for ns in ["plain", "at-revision", "if-absent"] {
        service.put(&call, ns, "k", "1", &short).await.unwrap();
    }
    service
        .put(&call, "live", "k", "1", &PutOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let conflict = |result: Result<bool, StorageError>| match result {
        Err(StorageError::RevisionConflict {
            current_revision, ..
        }) => current_revision,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert!(
        !service
            .delete(&call, "plain", "k", Precondition::None)
            .await
            .unwrap()
    );
    let at_revision = service.delete(&call, "at-revision", "k", Precondition::Revision(1));
    assert_eq!(conflict(at_revision.await), None);
    assert!(
        !service
            .delete(&call, "if-absent", "k", Precondition::Absent)
            .await
            .unwrap()
    );
    let never = service.delete(&call, "if-absent", "never", Precondition::Absent);
    assert!(
        !never.await.unwrap(),
        "an absent key is what the precondition asks"
    );
    let live = service.delete(&call, "live", "k", Precondition::Absent);
    assert_eq!(conflict(live.await), Some(1));

    let stored = store
        .sql(
            "SELECT namespace, count(*) FROM ext_storage_records GROUP BY 1 ORDER BY 1",
            "SELECT namespace, count(*) FROM records GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(stored, [["at-revision", "1"], ["live", "1"]]);
    let audited = store
        .sql(
            "SELECT namespace, operation, actor, revision FROM ext_storage_audit \
             WHERE operation <> 'put' ORDER BY 1",
            "SELECT namespace, operation, actor, revision FROM audit \
             WHERE operation <> 'put' ORDER BY 1",
        )
        .await;
    assert_eq!(
        audited,
        [
            ["if-absent", "expire", "system:ttl", "1"],
            ["plain", "expire", "system:ttl", "1"]
        ]
    );
    assert_eq!(service.recount(&call, false).await.unwrap(), []);
}

/// A delete at a revision that waits for the record's deletion, while the key is written again
/// at that same revision by the same transaction, deletes the new record: its `DELETE` finds
/// the row it waited for gone, and the record it then reads matches, so it tries again rather
/// than report a conflict at the revision it asked for.
#[tokio::test]
async fn a_delete_that_waited_deletes_the_record_written_again() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i");
    service
        .put(&call, "ns", "k", "1", &PutOptions::default())
        .await
        .unwrap();
    // Another transaction deletes the record and writes it again, unchanged, at revision 1.
    let other = db.client().await;
    other
        .batch_execute(
            "BEGIN;
             CREATE TEMP TABLE held ON COMMIT DROP AS
                 SELECT * FROM ext_storage_records WHERE tenant_id = 't' AND key = 'k';
             DELETE FROM ext_storage_records
              WHERE tenant_id = 't' AND extension_install_id = 'i' AND namespace = 'ns'
                AND key = 'k';
             INSERT INTO ext_storage_records SELECT * FROM held;",
        )
        .await
        .unwrap();
    let delete = tokio::spawn({
        let (service, call) = (service.clone(), call.clone());
        async move {
            service
                .delete(&call, "ns", "k", Precondition::Revision(1))
                .await
        }
    });
    // Commit once the delete waits for the other transaction's row lock.
    let watcher = db.client().await;
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..500 {
        let row = watcher.query_one(waiting, &[]).await.unwrap();
        if row.get::<_, i64>(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        !delete.is_finished(),
        "the delete did not wait for the other transaction"
    );
    other.batch_execute("COMMIT").await.unwrap();
    assert!(
        delete.await.unwrap().unwrap(),
        "the record written again was not deleted"
    );
    assert!(service.get(&call, "ns", "k").await.unwrap().is_none());
    assert_eq!(service.recount(&call, false).await.unwrap(), []);
}

/// Counters equal what is stored after a mix of writes, overwrites, deletes and bulk puts.
#[tokio::test]
async fn counters_match_stored_rows() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i");
    for i in 0..30u32 {
        let ns = format!("ns{}", i % 3);
        let value = "x".repeat((i % 7) as usize);
        service
            .put(
                &call,
                &ns,
                &format!("k{}", i % 11),
                &format!("\"{value}\""),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        if i % 4 == 0 {
            service
                .delete(
                    &call,
                    &ns,
                    &format!("k{}", (i + 5) % 11),
                    Precondition::None,
                )
                .await
                .unwrap();
        }
    }
    let items: Vec<PutItem> = (0..10)
        .map(|i| PutItem {
            key: format!("b{i}"),
            value: "[1]".into(),
            options: PutOptions::default(),
        })
        .collect();
    service.bulk_put(&call, "ns1", &items).await.unwrap();

    let client = db.client().await;
    let stored = client
        .query(
            "SELECT namespace::text, count(*), sum(size_bytes)::bigint FROM ext_storage_records \
             WHERE tenant_id = 't' AND extension_install_id = 'i' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let usage = service.usage(&call).await.unwrap();
    assert_eq!(usage.per_namespace.len(), stored.len());
    for (row, ns) in stored.iter().zip(&usage.per_namespace) {
        assert_eq!(ns.namespace, row.get::<_, String>(0));
        assert_eq!(ns.keys.used as i64, row.get::<_, i64>(1));
        assert_eq!(ns.bytes as i64, row.get::<_, i64>(2));
    }
    let install = client
        .query_one(
            "SELECT namespace_count, byte_count FROM ext_storage_install_usage \
             WHERE tenant_id = 't' AND extension_install_id = 'i'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(install.get::<_, i64>(0), stored.len() as i64);
    assert_eq!(install.get::<_, i64>(1) as u64, usage.total_bytes.used);
}

/// Every committed mutation has exactly one audit row; failed ones have none.
#[tokio::test]
async fn audit_rows_follow_commits_only() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i").request_id("req-1");
    service
        .put(&call, "ns", "k", "1", &PutOptions::default())
        .await
        .unwrap();
    let stale = PutOptions {
        precondition: Precondition::Revision(9),
        ..Default::default()
    };
    service
        .put(&call, "ns", "k", "2", &stale)
        .await
        .unwrap_err();
    service
        .delete(&call, "ns", "k", Precondition::Revision(9))
        .await
        .unwrap_err();
    service
        .delete(&call, "ns", "k", Precondition::None)
        .await
        .unwrap();
    service
        .delete(&call, "ns", "missing", Precondition::None)
        .await
        .unwrap();

    let client = db.client().await;
    let rows = client
        .query(
            "SELECT operation, key::text, revision, actor, request_id FROM ext_storage_audit \
             WHERE tenant_id = 't' ORDER BY occurred_at, id",
            &[],
        )
        .await
        .unwrap();
    let ops: Vec<(String, String, i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        ops,
        [
            ("put".into(), "k".into(), 1, "test".into(), "req-1".into()),
            (
                "delete".into(),
                "k".into(),
                1,
                "test".into(),
                "req-1".into()
            ),
        ]
    );
}

/// A database that cannot be reached is `unavailable`, never a panic or `internal`.
#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let backend = alga_storage::backend::postgres::PgBackend::connect(
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
        1,
    )
    .unwrap();
    let service = StorageService::new(Arc::new(backend));
    let call = granted("t", "i");
    let err = service.get(&call, "ns", "k").await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    let err = service
        .put(&call, "ns", "k", "1", &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
}

/// Keys that look like SQL or LIKE patterns are stored and listed literally.
async fn hostile_looking_keys_are_data(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let keys = [
        "'; DROP TABLE ext_storage_records; --",
        "%",
        "_",
        "\\",
        "a'b\"c",
        "🦀",
    ];
    for k in keys {
        service
            .put(&call, "ns", k, "1", &PutOptions::default())
            .await
            .unwrap();
        assert!(service.get(&call, "ns", k).await.unwrap().is_some(), "{k}");
        let page = service
            .list(
                &call,
                "ns",
                &ListOptions {
                    prefix: Some(k.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "prefix {k:?}");
    }
}

on_both_engines!(
    tenants_and_installs_are_scoped,
    concurrent_if_absent_has_one_winner,
    concurrent_revision_checked_increments_lose_nothing,
    concurrent_deletes_and_overwrites_agree,
    deletes_meet_expired_records,
    hostile_looking_keys_are_data,
);
