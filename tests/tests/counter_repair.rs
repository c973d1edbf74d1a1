//! Counter repair (`recount`) on PostgreSQL while writes go on: a repair never overwrites a
//! concurrent write's change, never deadlocks with one, and a check never reports a write that
//! commits meanwhile as drift. The interleavings are forced with transactions held open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alga_storage::model::PutOptions;
use alga_storage::{CallContext, StorageService};
use alga_storage_tests::*;

fn operator() -> CallContext {
    granted("t", "i").actor("operator:test")
}

/// Records written behind the counters' back (as a restore does before its repair): `count`
/// records of 10 bytes in namespace `namespace`, no counter row.
async fn uncounted_records(db: &TestDb, namespace: &str, count: i32) {
    db.client()
        .await
        .execute(
            "INSERT INTO ext_storage_records (tenant_id, extension_install_id, namespace, key, \
             value, revision, size_bytes, created_at, updated_at) \
             SELECT 't', 'i', $1, 'k' || g, '1', 1, 10, now(), now() \
               FROM generate_series(1, $2) g",
            &[&namespace, &count],
        )
        .await
        .unwrap();
}

/// The install's counters (namespaces, bytes) and what its records give.
async fn counted_and_actual(service: &StorageService) -> ((u64, u64), Vec<(String, i64, i64)>) {
    let usage = service.usage(&operator()).await.unwrap();
    let drift = service.recount(&operator(), false).await.unwrap();
    let drift = drift
        .into_iter()
        .map(|d| {
            (
                format!("{:?}", d.scope),
                d.actual_keys - d.counted_keys,
                d.actual_bytes - d.counted_bytes,
            )
        })
        .collect();
    ((usage.namespaces.used, usage.total_bytes.used), drift)
}

/// A write creates the first counter rows of a namespace (and of the install) while a repair
/// starts: the repair waits for it and counts its record, instead of overwriting its counters
/// with what the records held before it.
#[tokio::test]
async fn a_repair_keeps_the_change_of_a_write_creating_counter_rows() {
    let db = TestDb::new().await;
    let service = db.service();
    uncounted_records(&db, "n", 3).await;

    let mut writer = db.client().await;
    let write = writer.transaction().await.unwrap();
    put_in(&write, "n", "new", "1", 5).await;
    let repair = tokio::spawn({
        let service = service.clone();
        async move { service.recount(&operator(), true).await }
    });
    wait_for_lock_waits(&db.client().await, 1).await;
    write.commit().await.unwrap();

    let repaired = repair.await.unwrap().unwrap();
    assert_eq!(
        repaired.len(),
        2,
        "the namespace and the install: {repaired:?}"
    );
    assert_eq!(counted_and_actual(&service).await, ((1, 35), vec![]));
}

/// A repair queued behind a lock on the install's counters, and a write to a namespace whose
/// counter row is missing: the write waits for the repair (it does not take the namespace row
/// the repair needs and then wait for the install row the repair holds), so neither fails.
#[tokio::test]
async fn a_repair_and_a_write_to_an_uncounted_namespace_do_not_deadlock() {
    let db = TestDb::new().await;
    let service = db.service();
    service
        .put(&operator(), "a", "k", "1", &PutOptions::default())
        .await
        .unwrap();
    uncounted_records(&db, "n", 3).await;

    let mut holder = db.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM ext_storage_install_usage \
         WHERE tenant_id = 't' AND extension_install_id = 'i' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let watcher = db.client().await;
    let repair = tokio::spawn({
        let service = service.clone();
        async move { service.recount(&operator(), true).await }
    });
    wait_for_lock_waits(&watcher, 1).await;
    let write = tokio::spawn({
        let service = service.clone();
        async move {
            service
                .put(&operator(), "n", "new", "1", &PutOptions::default())
                .await
        }
    });
    wait_for_lock_waits(&watcher, 2).await;
    hold.commit().await.unwrap();

    repair.await.unwrap().unwrap();
    write.await.unwrap().unwrap();
    let bytes = service.usage(&operator()).await.unwrap().total_bytes.used;
    assert_eq!(counted_and_actual(&service).await, ((2, bytes), vec![]));
    // "k" + "1", three uncounted records of 10, "new" + "1".
    assert_eq!(bytes, 2 + 30 + 4);
}

/// Checks run while writes commit all the time: each check reads records and counters at one
/// moment, so it finds no drift.
#[tokio::test]
async fn a_check_during_writes_reports_no_drift() {
    let db = TestDb::new().await;
    let service = db.service();
    // Enough records that one check takes a while, during which writes commit.
    uncounted_records(&db, "big", 100_000).await;
    service.recount(&operator(), true).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let (service, stop) = (service.clone(), stop.clone());
        async move {
            let mut written = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let namespace = format!("w{}", written % 7);
                service
                    .put(
                        &operator(),
                        &namespace,
                        &format!("k{written}"),
                        "1",
                        &PutOptions::default(),
                    )
                    .await
                    .unwrap();
                written += 1;
            }
            written
        }
    });
    let mut checks = Vec::new();
    for _ in 0..5 {
        checks.push(service.recount(&operator(), false).await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.unwrap();
    assert!(written > 0);
    assert!(
        checks.iter().all(Vec::is_empty),
        "drift reported: {checks:?}"
    );
    assert_eq!(counted_and_actual(&service).await.1, vec![]);
}
