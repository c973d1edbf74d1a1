//! Database faults under load: a crash-restart of PostgreSQL, connections killed in the middle
//! of transactions, and statement timeouts. Every operation either succeeded and is durable or
//! returned `unavailable`; no acknowledged write is lost; bulk writes stay all-or-nothing; the
//! pool recovers without restarting anything; nothing panics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alga_storage::backend::postgres::{PgBackend, migrate};
use alga_storage::model::{PutItem, PutOptions};
use alga_storage::{StorageError, StorageService};
use alga_storage_tests::cluster::PgCluster;
use alga_storage_tests::*;

/// What the writers saw: acknowledged single writes, every bulk attempted, and errors.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, String>,
    bulks: Vec<Vec<String>>,
    unavailable: u64,
    acked_after_fault: u64,
}

/// Writers putting fresh keys (and bulks of 5) until `stop`, recording outcomes. Any error
/// other than `unavailable` fails the test.
async fn writers(
    service: StorageService,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    faulted: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (service, ledger, stop, faulted) = (
            service.clone(),
            ledger.clone(),
            stop.clone(),
            faulted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let call = granted("tenant-f", "install-f");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if i.is_multiple_of(10) {
                    let keys: Vec<String> = (0..5).map(|j| format!("bulk-{w}-{i}-{j}")).collect();
                    let items: Vec<PutItem> = keys
                        .iter()
                        .map(|k| PutItem {
                            key: k.clone(),
                            value: "1".into(),
                            options: PutOptions::default(),
                        })
                        .collect();
                    let result = service.bulk_put(&call, "ns", &items).await;
                    let mut ledger = ledger.lock().unwrap();
                    ledger.bulks.push(keys);
                    match result {
                        Ok(_) => {}
                        Err(e) if matches!(e.error, StorageError::Unavailable(_)) => {
                            ledger.unavailable += 1
                        }
                        Err(e) => panic!("bulk: unexpected {e}"),
                    }
                    continue;
                }
                let key = format!("k-{w}-{i}");
                let value = format!("{{\"w\":{w},\"i\":{i}}}");
                let result = service
                    .put(&call, "ns", &key, &value, &PutOptions::default())
                    .await;
                let mut ledger = ledger.lock().unwrap();
                match result {
                    Ok(written) => {
                        assert_eq!(written.revision, 1);
                        ledger.acked.insert(key, value);
                        if faulted.load(Ordering::Relaxed) {
                            ledger.acked_after_fault += 1;
                        }
                    }
                    Err(StorageError::Unavailable(_)) => ledger.unavailable += 1,
                    Err(other) => panic!("put: unexpected {other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("no writer panicked");
    }
}

/// Every acknowledged write is stored with its value; every bulk is all or nothing.
async fn check_durable(service: &StorageService, ledger: &Ledger) {
    let call = granted("tenant-f", "install-f");
    for (key, value) in &ledger.acked {
        let record = service
            .get(&call, "ns", key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} was lost"));
        let stored: serde_json::Value = serde_json::from_str(&record.value.unwrap()).unwrap();
        let written: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(stored, written, "{key}");
    }
    for keys in &ledger.bulks {
        let mut present = 0;
        for key in keys {
            present += usize::from(service.get(&call, "ns", key).await.unwrap().is_some());
        }
        assert!(
            present == 0 || present == keys.len(),
            "bulk {keys:?} half applied"
        );
    }
    assert_eq!(
        service.recount(&call, false).await.unwrap(),
        [],
        "counters agree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_database_crash_and_the_pool_recovers() {
    let cluster = Arc::new(PgCluster::start());
    let (mut client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    migrate::up(&mut client).await.unwrap();
    drop(client);
    let service = StorageService::new(Arc::new(PgBackend::connect(&cluster.url(), 8).unwrap()));
    let (ledger, stop, faulted) = Default::default();
    let load = tokio::spawn(writers(
        service.clone(),
        Arc::clone(&ledger),
        Arc::clone(&stop),
        Arc::clone(&faulted),
    ));

    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.crash_and_restart())
        .await
        .unwrap();
    faulted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!(
        "crash-restart: {} writes acknowledged, {} bulks, {} unavailable, {} acknowledged after",
        ledger.acked.len(),
        ledger.bulks.len(),
        ledger.unavailable,
        ledger.acked_after_fault
    );
    assert!(
        ledger.acked.len() > 50,
        "load ran: {} acked",
        ledger.acked.len()
    );
    assert!(ledger.unavailable > 0, "the crash was seen as unavailable");
    assert!(
        ledger.acked_after_fault > 10,
        "the pool recovered by itself"
    );
    check_durable(&service, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_transaction_lose_nothing_acknowledged() {
    let db = TestDb::new().await;
    let service = StorageService::new(Arc::new(PgBackend::connect(&db.url, 8).unwrap()));
    let (ledger, stop, faulted): (Arc<Mutex<Ledger>>, Arc<AtomicBool>, Arc<AtomicBool>) =
        Default::default();
    let load = tokio::spawn(writers(
        service.clone(),
        ledger.clone(),
        stop.clone(),
        faulted.clone(),
    ));

    // Kill every other backend of the test database, repeatedly, while the writers run.
    let killer = db.client().await;
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    let mut killed = 0u64;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let rows = killer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&database],
            )
            .await
            .unwrap();
        killed += rows.len() as u64;
    }
    faulted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!(
        "kills: {killed} backends terminated, {} writes acknowledged, {} bulks, {} unavailable",
        ledger.acked.len(),
        ledger.bulks.len(),
        ledger.unavailable
    );
    assert!(killed > 10, "backends were killed: {killed}");
    assert!(
        ledger.unavailable > 0,
        "killed transactions surfaced as unavailable"
    );
    assert!(
        ledger.acked_after_fault > 10,
        "the pool recovered by itself"
    );
    check_durable(&service, &ledger).await;
}

#[tokio::test]
async fn a_statement_timeout_is_unavailable_and_changes_nothing() {
    let db = TestDb::new().await;
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {database} SET statement_timeout = '300ms'"
        ))
        .await
        .unwrap();
    let service = StorageService::new(Arc::new(PgBackend::connect(&db.url, 2).unwrap()));
    let call = granted("t", "i");
    service
        .put(&call, "ns", "k", "1", &PutOptions::default())
        .await
        .unwrap();

    // Another session holds the record's row lock: the write waits, then times out.
    let mut holder = db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM ext_storage_records WHERE tenant_id = 't' AND key = 'k' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let blocked = service
        .put(&call, "ns", "k", "2", &PutOptions::default())
        .await;
    assert!(
        matches!(blocked, Err(StorageError::Unavailable(_))),
        "{blocked:?}"
    );
    // Reads are not blocked by the lock.
    assert_eq!(
        service
            .get(&call, "ns", "k")
            .await
            .unwrap()
            .unwrap()
            .revision,
        1
    );
    tx.rollback().await.unwrap();

    let written = service
        .put(&call, "ns", "k", "3", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(written.revision, 2, "the timed-out write left no trace");
    assert_eq!(service.recount(&call, false).await.unwrap(), []);
}
