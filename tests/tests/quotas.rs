//! Quotas, limits and TTL on both engines (PostgreSQL and the embedded store): race-free under concurrency, exact at the limits,
//! counters always equal to what is stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alga_storage::backend::DriftScope;
use alga_storage::limits::{
    EXPIRED_LOOKUP_LIMIT, MAX_JSON_DEPTH, MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_VALUE_BYTES,
};
use alga_storage::model::{ListOptions, Precondition, PutItem, PutOptions};
use alga_storage::observe::{QuotaThreshold, StorageObserver};
use alga_storage::{CallContext, Limits, Quota, StorageError, StorageService};
use alga_storage_tests::*;

fn limited(tenant: &str, install: &str, limits: Limits) -> CallContext {
    granted(tenant, install).limits(limits)
}

fn put_options() -> PutOptions {
    PutOptions::default()
}

/// Stored rows and bytes of one install, per namespace, straight from the records.
async fn stored(store: &TestStore, tenant: &str, install: &str) -> Vec<(String, i64, i64)> {
    let rows = store
        .sql(
            &format!(
                "SELECT namespace::text, count(*), sum(size_bytes)::bigint \
                 FROM ext_storage_records WHERE tenant_id = '{tenant}' \
                 AND extension_install_id = '{install}' GROUP BY 1 ORDER BY 1"
            ),
            &format!(
                "SELECT namespace, count(*), sum(size_bytes) FROM records \
                 WHERE tenant_id = '{tenant}' AND install_id = '{install}' \
                 GROUP BY 1 ORDER BY 1"
            ),
        )
        .await;
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap(), r[2].parse().unwrap()))
        .collect()
}

/// Bulk items `{prefix}0000`, `{prefix}0001`, … (numbered over `range`) of the value 1.
fn numbered(prefix: &str, range: std::ops::Range<usize>, options: &PutOptions) -> Vec<PutItem> {
    range
        .map(|i| PutItem {
            key: format!("{prefix}{i:04}"),
            value: "1".into(),
            options: options.clone(),
        })
        .collect()
}

/// A JSON string value that makes a record of `size` bytes under `key`.
fn sized(key: &str, size: usize) -> String {
    format!("\"{}\"", "x".repeat(size - key.len() - 2))
}

/// Writes `count` records into each `(namespace, count)`, keys `k0000`, `k0001`, … in bulks of
/// 100, all expiring after `ttl`, and waits until every one has expired. The TTL must outlast
/// the writing (checked): a write would sweep its namespace's expired records.
async fn write_expired(
    service: &StorageService,
    call: &CallContext,
    namespaces: &[(&str, usize)],
    ttl: Duration,
) {
    let started = tokio::time::Instant::now();
    let options = PutOptions {
        ttl: Some(ttl),
        ..put_options()
    };
    for &(ns, count) in namespaces {
        for start in (0..count).step_by(100) {
            let items = numbered("k", start..count.min(start + 100), &options);
            service.bulk_put(call, ns, &items).await.unwrap();
        }
    }
    assert!(started.elapsed() < ttl, "writing took longer than the TTL");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
}

/// Asserts that `result` is a refusal by `quota` at `usage` of `limit`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
    quota: Quota,
    limit: u64,
    usage: u64,
) {
    match result {
        Err(StorageError::QuotaExceeded {
            quota: q,
            limit: l,
            usage: u,
        }) if (q, l, u) == (quota, limit, usage) => {}
        other => panic!("expected {quota:?} refused at {usage} of {limit}, got {other:?}"),
    }
}

/// Runs `writers` tasks, each putting `per_writer` keys made by `item(writer, i)`; returns the
/// number of successes and the quota errors.
async fn race(
    service: &StorageService,
    call: &CallContext,
    writers: usize,
    per_writer: usize,
    item: fn(usize, usize) -> (String, String, String),
) -> (usize, Vec<StorageError>) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (service, call) = (service.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..per_writer {
                let (ns, key, value) = item(w, i);
                outcomes.push(service.put(&call, &ns, &key, &value, &put_options()).await);
            }
            outcomes
        }));
    }
    let (mut ok, mut errors) = (0, Vec::new());
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome {
                Ok(_) => ok += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    (ok, errors)
}

async fn keys_quota_holds_under_32_concurrent_writers(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_keys_per_namespace: 100,
            ..Limits::DEFAULT
        },
    );
    let (ok, errors) = race(&service, &call, 32, 10, |w, i| {
        ("ns".into(), format!("w{w:02}-{i:02}"), "1".into())
    })
    .await;
    assert_eq!(ok, 100);
    assert_eq!(errors.len(), 220);
    for e in &errors {
        let expected = StorageError::QuotaExceeded {
            quota: Quota::KeysPerNamespace,
            limit: 100,
            usage: 100,
        };
        assert_eq!(e, &expected);
    }
    assert_eq!(stored(&store, "t", "i").await, [("ns".into(), 100, 700)]);
    let usage = service.usage(&call).await.unwrap();
    assert_eq!(usage.per_namespace[0].keys.used, 100);
    assert_eq!(usage.total_bytes.used, 700);
    assert!(service.recount(&call, false).await.unwrap().is_empty());
}

async fn byte_quota_holds_under_32_concurrent_writers(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_total_bytes: 5_000,
            ..Limits::DEFAULT
        },
    );
    // Every write is exactly 100 bytes: a 7-byte key and a 93-byte value.
    let (ok, errors) = race(&service, &call, 32, 10, |w, i| {
        let value = format!("\"{}\"", "x".repeat(91));
        (format!("ns{}", w % 3), format!("w{w:02}k{i:03}"), value)
    })
    .await;
    assert_eq!(ok, 50);
    assert_eq!(errors.len(), 270);
    assert!(errors.iter().all(|e| matches!(
        e,
        StorageError::QuotaExceeded {
            quota: Quota::TotalBytes,
            limit: 5_000,
            usage: 5_000
        }
    )));
    let rows = stored(&store, "t", "i").await;
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 5_000);
    assert_eq!(service.usage(&call).await.unwrap().total_bytes.used, 5_000);
    assert!(service.recount(&call, false).await.unwrap().is_empty());
}

async fn namespace_quota_holds_under_concurrent_writers(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_namespaces: 3,
            ..Limits::DEFAULT
        },
    );
    let (ok, errors) = race(&service, &call, 16, 4, |w, i| {
        (format!("ns-{w}"), format!("k{i}"), "1".into())
    })
    .await;
    let rows = stored(&store, "t", "i").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(ok, 12);
    assert!(errors.iter().all(|e| matches!(
        e,
        StorageError::QuotaExceeded {
            quota: Quota::Namespaces,
            limit: 3,
            usage: 3
        }
    )));
    // Emptying a namespace frees its slot.
    let victim = &rows[0].0;
    for i in 0..4 {
        assert!(
            service
                .delete(&call, victim, &format!("k{i}"), Precondition::None)
                .await
                .unwrap()
        );
    }
    service
        .put(&call, "fresh", "k", "1", &put_options())
        .await
        .unwrap();
    assert_eq!(service.usage(&call).await.unwrap().namespaces.used, 3);
}

async fn sizes_are_exact_at_the_limits(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let json_string = |bytes: usize| format!("\"{}\"", "x".repeat(bytes - 2));
    let invalid = |e: StorageError, field: &str| match e {
        StorageError::InvalidInput { field: f, message } => {
            assert_eq!(f, field, "{message}");
            message
        }
        other => panic!("expected invalid-input on {field}, got {other:?}"),
    };

    let value = json_string(MAX_VALUE_BYTES);
    service
        .put(&call, "ns", "value", &value, &put_options())
        .await
        .unwrap();
    let got = service.get(&call, "ns", "value").await.unwrap().unwrap();
    assert_eq!(got.value.unwrap().len(), MAX_VALUE_BYTES);
    let err = service
        .put(
            &call,
            "ns",
            "value",
            &json_string(MAX_VALUE_BYTES + 1),
            &put_options(),
        )
        .await;
    let message = invalid(err.unwrap_err(), "value");
    assert!(message.contains("262145 bytes"), "{message}");

    let with_meta = |bytes| PutOptions {
        metadata: Some(json_string(bytes)),
        ..put_options()
    };
    service
        .put(&call, "ns", "meta", "1", &with_meta(MAX_METADATA_BYTES))
        .await
        .unwrap();
    let err = service
        .put(&call, "ns", "meta", "1", &with_meta(MAX_METADATA_BYTES + 1))
        .await;
    invalid(err.unwrap_err(), "metadata");

    let key = "k".repeat(MAX_KEY_BYTES);
    service
        .put(&call, "ns", &key, "1", &put_options())
        .await
        .unwrap();
    let err = service
        .put(
            &call,
            "ns",
            &"k".repeat(MAX_KEY_BYTES + 1),
            "1",
            &put_options(),
        )
        .await;
    invalid(err.unwrap_err(), "key");

    let nested = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    service
        .put(&call, "ns", "deep", &nested(MAX_JSON_DEPTH), &put_options())
        .await
        .unwrap();
    let err = service
        .put(
            &call,
            "ns",
            "deep",
            &nested(MAX_JSON_DEPTH + 1),
            &put_options(),
        )
        .await;
    invalid(err.unwrap_err(), "value");
    let deep_meta = PutOptions {
        metadata: Some(nested(MAX_JSON_DEPTH + 1)),
        ..put_options()
    };
    invalid(
        service
            .put(&call, "ns", "deep", "1", &deep_meta)
            .await
            .unwrap_err(),
        "metadata",
    );

    // Failed writes left the accepted ones untouched.
    assert_eq!(
        service
            .get(&call, "ns", "deep")
            .await
            .unwrap()
            .unwrap()
            .revision,
        1
    );
}

async fn per_install_limits_apply_and_are_capped(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service().with_limits(
        Limits::DEFAULT,
        Limits {
            max_keys_per_namespace: 5,
            ..Limits::CONTRACT
        },
    );
    // Asking for more than the maximum gets the maximum.
    let greedy = limited(
        "t",
        "i",
        Limits {
            max_keys_per_namespace: 1_000,
            ..Limits::DEFAULT
        },
    );
    for i in 0..5 {
        service
            .put(&greedy, "ns", &format!("k{i}"), "1", &put_options())
            .await
            .unwrap();
    }
    let err = service
        .put(&greedy, "ns", "k5", "1", &put_options())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::QuotaExceeded {
            quota: Quota::KeysPerNamespace,
            limit: 5,
            usage: 5
        }
    );
    assert_eq!(
        service.usage(&greedy).await.unwrap().per_namespace[0]
            .keys
            .limit,
        5
    );

    // Size limits can be lowered per install.
    let small = limited(
        "t",
        "j",
        Limits {
            max_value_bytes: 10,
            max_bulk_items: 2,
            max_page_size: 3,
            ..Limits::DEFAULT
        },
    );
    service
        .put(&small, "ns", "k", "1234567890", &put_options())
        .await
        .unwrap();
    let err = service
        .put(&small, "ns", "k", "12345678901", &put_options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 10"), "{err}");
    let items: Vec<PutItem> = (0..3)
        .map(|i| PutItem {
            key: format!("b{i}"),
            value: "1".into(),
            options: put_options(),
        })
        .collect();
    let err = service.bulk_put(&small, "ns", &items).await.unwrap_err();
    assert_eq!(err.item, None);
    let list = ListOptions {
        limit: Some(4),
        ..Default::default()
    };
    assert!(service.list(&small, "ns", &list).await.is_err());
}

async fn overwrites_charge_the_difference_and_shrinking_is_always_allowed(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let roomy = granted("t", "i");
    service
        .put(
            &roomy,
            "ns",
            "a",
            &format!("\"{}\"", "x".repeat(98)),
            &put_options(),
        )
        .await
        .unwrap(); // 101 bytes
    service
        .put(&roomy, "ns", "b", "1", &put_options())
        .await
        .unwrap(); // 2 bytes
    assert_eq!(service.usage(&roomy).await.unwrap().total_bytes.used, 103);

    // The install's quota is lowered below its usage: growth is refused, shrinking is not.
    let tight = limited(
        "t",
        "i",
        Limits {
            max_total_bytes: 50,
            max_keys_per_namespace: 1,
            ..Limits::DEFAULT
        },
    );
    let err = service
        .put(&tight, "ns", "b", "12", &put_options())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::QuotaExceeded {
            quota: Quota::TotalBytes,
            limit: 50,
            usage: 103
        }
    );
    service
        .put(&tight, "ns", "a", "\"short\"", &put_options())
        .await
        .unwrap(); // 1 + 7
    assert_eq!(service.usage(&tight).await.unwrap().total_bytes.used, 10);
    // Same size: no counter moves, no quota is consulted.
    service
        .put(&tight, "ns", "b", "2", &put_options())
        .await
        .unwrap();
    // A new key is refused by the key quota; a delete gives everything back.
    assert!(matches!(
        service
            .put(&tight, "ns", "c", "1", &put_options())
            .await
            .unwrap_err(),
        StorageError::QuotaExceeded {
            quota: Quota::KeysPerNamespace,
            limit: 1,
            usage: 2
        }
    ));
    assert!(
        service
            .delete(&tight, "ns", "a", Precondition::None)
            .await
            .unwrap()
    );
    assert!(
        service
            .delete(&tight, "ns", "b", Precondition::None)
            .await
            .unwrap()
    );
    let usage = service.usage(&tight).await.unwrap();
    assert_eq!((usage.total_bytes.used, usage.namespaces.used), (0, 0));
    assert!(service.recount(&tight, false).await.unwrap().is_empty());
}

async fn expired_records_are_never_returned_and_free_their_quota_once_touched(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_keys_per_namespace: 5,
            ..Limits::DEFAULT
        },
    );
    let short = PutOptions {
        ttl: Some(Duration::from_millis(600)),
        ..put_options()
    };
    for i in 0..5 {
        service
            .put(&call, "ns", &format!("k{i}"), "\"v\"", &short)
            .await
            .unwrap();
    }
    let err = service
        .put(&call, "ns", "k5", "1", &put_options())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StorageError::QuotaExceeded {
            quota: Quota::KeysPerNamespace,
            ..
        }
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Before any cleanup: not returned by get, list or usage.
    assert!(service.get(&call, "ns", "k0").await.unwrap().is_none());
    assert!(
        service
            .list(&call, "ns", &ListOptions::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let usage = service.usage(&call).await.unwrap();
    assert!(usage.per_namespace.is_empty());
    assert_eq!((usage.namespaces.used, usage.total_bytes.used), (0, 0));
    assert_eq!(
        stored(&store, "t", "i").await.len(),
        1,
        "still stored until touched"
    );

    // The next write to the namespace sweeps them and gets their quota back.
    service
        .put(&call, "ns", "k5", "1", &put_options())
        .await
        .unwrap();
    assert_eq!(stored(&store, "t", "i").await, [("ns".into(), 1, 3)]);
    assert!(service.recount(&call, false).await.unwrap().is_empty());
    let swept = store
        .sql(
            "SELECT count(*) FROM ext_storage_audit WHERE tenant_id = 't' \
             AND operation = 'expire' AND actor = 'system:ttl'",
            "SELECT count(*) FROM audit WHERE tenant_id = 't' \
             AND operation = 'expire' AND actor = 'system:ttl'",
        )
        .await;
    assert_eq!(swept[0][0], "5");
}

/// Records expired but not yet swept (a write sweeps only its own namespace, 100 at a time)
/// count for no quota: what refuses a write is the live usage `usage()` shows, and the refusal
/// reports it.
async fn quotas_count_only_live_records(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_namespaces: 2,
            max_total_bytes: 100,
            ..Limits::DEFAULT
        },
    );
    let value = |size| sized("k", size);
    let short = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..put_options()
    };
    service
        .put(&call, "a", "k", &value(60), &short)
        .await
        .unwrap();
    service
        .put(&call, "b", "k", &value(10), &put_options())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // "a" has expired, unswept: a second live namespace and its bytes fit.
    service
        .put(&call, "c", "k", &value(50), &put_options())
        .await
        .unwrap();
    let usage = service.usage(&call).await.unwrap();
    assert_eq!((usage.namespaces.used, usage.total_bytes.used), (2, 60));

    assert_refused(
        service
            .put(&call, "d", "k", &value(10), &put_options())
            .await,
        Quota::Namespaces,
        2,
        2,
    );
    assert_refused(
        service
            .put(&call, "b", "k", &value(51), &put_options())
            .await,
        Quota::TotalBytes,
        100,
        60,
    );
    service
        .put(&call, "b", "k", &value(50), &put_options())
        .await
        .unwrap();
    assert_eq!(service.usage(&call).await.unwrap().total_bytes.used, 100);
    // A namespace holding only expired records comes back into use with its next live record.
    assert_refused(
        service
            .put(&call, "a", "k2", &value(4), &put_options())
            .await,
        Quota::Namespaces,
        2,
        2,
    );

    // Keys: a namespace of 250 expired records, after the install's limit dropped to 100. A
    // write sweeps 100 of them (the earliest to expire); the 150 left count for nothing.
    let roomy = granted("t", "j");
    write_expired(&service, &roomy, &[("ns", 250)], Duration::from_secs(2)).await;
    let tight = limited(
        "t",
        "j",
        Limits {
            max_keys_per_namespace: 100,
            ..Limits::DEFAULT
        },
    );
    service
        .put(&tight, "ns", "live", "1", &put_options())
        .await
        .unwrap();
    let items = numbered("more-", 0..100, &put_options());
    assert_refused(
        service
            .bulk_put(&tight, "ns", &items)
            .await
            .map_err(|e| e.error),
        Quota::KeysPerNamespace,
        100,
        1,
    );
    service.bulk_put(&tight, "ns", &items[..99]).await.unwrap();
    assert_eq!(
        service.usage(&tight).await.unwrap().per_namespace[0]
            .keys
            .used,
        100
    );
    // Writing over an expired key adds a live one: refused at the limit (the counters do not
    // grow, as the write's sweep frees more than it adds).
    assert_refused(
        service
            .put(&tight, "ns", "k0200", "1", &put_options())
            .await,
        Quota::KeysPerNamespace,
        100,
        100,
    );
    assert!(service.recount(&call, false).await.unwrap().is_empty());
    assert!(service.recount(&tight, false).await.unwrap().is_empty());
}

/// Growth the counters' change hides is checked too: a write over an expired record (the
/// counters drop by the old size), beside a sweep (they drop by what was swept), or of the same
/// size over an expired record (they do not change).
async fn growth_the_counters_do_not_show_is_checked(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let bytes_limited = |install| {
        limited(
            "t",
            install,
            Limits {
                max_total_bytes: 100,
                ..Limits::DEFAULT
            },
        )
    };
    let short = PutOptions {
        ttl: Some(Duration::from_millis(300)),
        ..put_options()
    };

    let over_expired = bytes_limited("over-expired");
    let beside_sweep = bytes_limited("beside-sweep");
    let roomy = granted("t", "same-size");
    service
        .put(&over_expired, "a", "k", &sized("k", 60), &short)
        .await
        .unwrap();
    service
        .put(&beside_sweep, "c", "k1", &sized("k1", 60), &short)
        .await
        .unwrap();
    // (Written before "x" expires: a write would sweep it.)
    for key in ["y", "z"] {
        service
            .put(&roomy, "n", key, "1", &put_options())
            .await
            .unwrap();
    }
    service.put(&roomy, "n", "x", "1", &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Live records beside the expired ones: live usage 50 and 40 bytes.
    service
        .put(&over_expired, "b", "k", &sized("k", 50), &put_options())
        .await
        .unwrap();
    service
        .put(&beside_sweep, "b", "k", &sized("k", 40), &put_options())
        .await
        .unwrap();

    let write = |call, ns, key, size| {
        let service = service.clone();
        async move {
            service
                .put(&call, ns, key, &sized(key, size), &put_options())
                .await
        }
    };
    assert_refused(
        write(over_expired.clone(), "a", "k", 55).await,
        Quota::TotalBytes,
        100,
        50,
    );
    write(over_expired.clone(), "a", "k", 50).await.unwrap();
    assert_refused(
        write(beside_sweep.clone(), "c", "k2", 65).await,
        Quota::TotalBytes,
        100,
        40,
    );
    write(beside_sweep.clone(), "c", "k2", 60).await.unwrap();
    for call in [&over_expired, &beside_sweep] {
        assert_eq!(service.usage(call).await.unwrap().total_bytes.used, 100);
    }
    // After the install's key limit dropped to 2: writing "x" again adds a live key.
    let tight = limited(
        "t",
        "same-size",
        Limits {
            max_keys_per_namespace: 2,
            ..Limits::DEFAULT
        },
    );
    assert_refused(
        service.put(&tight, "n", "x", "1", &put_options()).await,
        Quota::KeysPerNamespace,
        2,
        2,
    );
}

/// The look at expired records is bounded ([`EXPIRED_LOOKUP_LIMIT`] records across the install,
/// the namespaces in order): a refusal never counts an install's records. Past the bound,
/// expired records count until swept.
async fn a_refusal_looks_at_a_bounded_number_of_expired_records(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = limited(
        "t",
        "i",
        Limits {
            max_namespaces: 2,
            ..Limits::DEFAULT
        },
    );
    let bound = EXPIRED_LOOKUP_LIMIT as usize;
    let namespaces = [("at-bound", bound), ("past-bound", bound + 1)];
    write_expired(&service, &call, &namespaces, Duration::from_secs(5)).await;

    // "at-bound" is seen to hold only expired records; "past-bound" is not.
    service
        .put(&call, "x", "k", "1", &put_options())
        .await
        .unwrap();
    assert_refused(
        service.put(&call, "y", "k", "1", &put_options()).await,
        Quota::Namespaces,
        2,
        2,
    );
    assert_eq!(service.usage(&call).await.unwrap().namespaces.used, 1);
}

async fn sweeps_are_bounded_per_request(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let short = PutOptions {
        ttl: Some(Duration::from_millis(1000)),
        ..put_options()
    };
    for chunk in 0..3 {
        let items = numbered(&format!("k{chunk}-"), 0..100, &short);
        service.bulk_put(&call, "ns", &items).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    service
        .put(&call, "ns", "live", "1", &put_options())
        .await
        .unwrap();
    let left = |rows: Vec<(String, i64, i64)>| rows.first().map_or(0, |r| r.1);
    assert_eq!(left(stored(&store, "t", "i").await), 300 - 100 + 1);
    service
        .delete(&call, "ns", "missing", Precondition::None)
        .await
        .unwrap();
    assert_eq!(left(stored(&store, "t", "i").await), 300 - 200 + 1);
    assert_eq!(
        service.usage(&call).await.unwrap().per_namespace[0]
            .keys
            .used,
        1
    );
    assert!(service.recount(&call, false).await.unwrap().is_empty());
}

async fn counters_equal_records_after_2000_random_operations(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let installs: Vec<CallContext> = (0..4)
        .map(|i| {
            limited(
                &format!("tenant-{}", i % 2),
                &format!("install-{i}"),
                Limits {
                    max_keys_per_namespace: 40,
                    max_total_bytes: 6_000,
                    ..Limits::DEFAULT
                },
            )
        })
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut committed, mut refused) = (0, 0);
    for op in 0..2000 {
        let call = &installs[rng.below(4)];
        let ns = format!("ns{}", rng.below(3));
        let key = format!("k{}", rng.below(60));
        let value = format!("\"{}\"", "v".repeat(rng.below(120)));
        let ttl = (rng.below(5) == 0).then(|| Duration::from_millis(1 + rng.below(40) as u64));
        let precondition = match rng.below(6) {
            0 => Precondition::Absent,
            1 => Precondition::Revision(1 + rng.below(3) as u64),
            _ => Precondition::None,
        };
        let options = PutOptions {
            precondition,
            ttl,
            ..put_options()
        };
        let result = match rng.below(10) {
            0..=4 => service
                .put(call, &ns, &key, &value, &options)
                .await
                .map(|_| ()),
            5..=6 => service
                .delete(call, &ns, &key, precondition)
                .await
                .map(|_| ()),
            7 => {
                let items: Vec<PutItem> = (0..1 + rng.below(8))
                    .map(|i| PutItem {
                        key: format!("b{}-{i}", rng.below(20)),
                        value: value.clone(),
                        options: PutOptions {
                            ttl,
                            ..put_options()
                        },
                    })
                    .collect();
                service
                    .bulk_put(call, &ns, &items)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.error)
            }
            8 => service.get(call, &ns, &key).await.map(|_| ()),
            _ => service
                .list(call, &ns, &ListOptions::default())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => committed += 1,
            Err(StorageError::RevisionConflict { .. } | StorageError::QuotaExceeded { .. }) => {
                refused += 1
            }
            Err(other) => panic!("operation {op}: unexpected {other}"),
        }
        if op % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await; // let some TTLs run out
        }
    }
    assert!(
        committed > 1000 && refused > 50,
        "{committed} committed, {refused} refused"
    );

    for call in &installs {
        // Counters (stored rows, expired or not) equal COUNT/SUM over the records.
        assert_eq!(service.recount(call, false).await.unwrap(), []);
        let (tenant, install) = (&call.tenant_id, &call.install_id);
        let counted = store
            .sql(
                &format!(
                    "SELECT namespace::text, key_count, byte_count \
                     FROM ext_storage_namespace_usage WHERE tenant_id = '{tenant}' \
                     AND extension_install_id = '{install}' AND key_count > 0 ORDER BY 1"
                ),
                &format!(
                    "SELECT namespace, key_count, byte_count FROM namespace_usage \
                     WHERE tenant_id = '{tenant}' AND install_id = '{install}' \
                     AND key_count > 0 ORDER BY 1"
                ),
            )
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap(), r[2].parse().unwrap()))
            .collect::<Vec<(String, i64, i64)>>();
        assert_eq!(
            counted,
            stored(&store, &call.tenant_id, &call.install_id).await
        );
        // Usage (live only) equals COUNT/SUM over the records without a TTL: every TTL in this
        // test is under 41 ms, and usage is read after sleeping longer.
        let live = store
            .sql(
                &format!(
                    "SELECT namespace::text, count(*), sum(size_bytes)::bigint \
                     FROM ext_storage_records WHERE tenant_id = '{tenant}' \
                     AND extension_install_id = '{install}' AND ttl_expires_at IS NULL \
                     GROUP BY 1 ORDER BY 1"
                ),
                &format!(
                    "SELECT namespace, count(*), sum(size_bytes) FROM records \
                     WHERE tenant_id = '{tenant}' AND install_id = '{install}' \
                     AND expires_at IS NULL GROUP BY 1 ORDER BY 1"
                ),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await; // every short TTL has run out
        let usage = service.usage(call).await.unwrap();
        assert_eq!(usage.per_namespace.len(), live.len());
        for (ns, row) in usage.per_namespace.iter().zip(&live) {
            assert_eq!(ns.namespace, row[0]);
            assert_eq!(ns.keys.used.to_string(), row[1]);
            assert_eq!(ns.bytes.to_string(), row[2]);
        }
    }
}

#[derive(Default)]
struct Recorder {
    thresholds: Mutex<Vec<(Quota, u8, u64)>>,
    exceeded: Mutex<Vec<Quota>>,
}

impl StorageObserver for Recorder {
    fn quota_threshold(&self, _: &CallContext, e: &QuotaThreshold) {
        self.thresholds
            .lock()
            .unwrap()
            .push((e.quota, e.percent, e.used));
    }
    fn quota_exceeded(&self, _: &CallContext, quota: Quota, _: u64, _: u64) {
        self.exceeded.lock().unwrap().push(quota);
    }
}

async fn near_limit_crossings_are_reported_once(engine: Engine) {
    let store = TestStore::new(engine).await;
    let recorder = Arc::new(Recorder::default());
    let service = store.service().with_observer(recorder.clone());
    let call = limited(
        "t",
        "i",
        Limits {
            max_keys_per_namespace: 10,
            ..Limits::DEFAULT
        },
    );
    for i in 0..11 {
        let _ = service
            .put(&call, "ns", &format!("k{i}"), "1", &put_options())
            .await;
    }
    // 80 % of 10 is crossed by the 8th key, 95 % by the 10th; the 11th is refused.
    let keys: Vec<_> = recorder
        .thresholds
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.0 == Quota::KeysPerNamespace)
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            (Quota::KeysPerNamespace, 80, 8),
            (Quota::KeysPerNamespace, 95, 10)
        ]
    );
    assert_eq!(
        *recorder.exceeded.lock().unwrap(),
        [Quota::KeysPerNamespace]
    );
    // Falling below and rising again reports again.
    service
        .delete(&call, "ns", "k0", Precondition::None)
        .await
        .unwrap();
    service
        .delete(&call, "ns", "k1", Precondition::None)
        .await
        .unwrap();
    service
        .delete(&call, "ns", "k2", Precondition::None)
        .await
        .unwrap();
    service
        .put(&call, "ns", "again", "1", &put_options())
        .await
        .unwrap();
    assert_eq!(
        recorder.thresholds.lock().unwrap().last(),
        Some(&(Quota::KeysPerNamespace, 80, 8))
    );
}

async fn drifted_counters_are_reported_and_repaired(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i").actor("operator:test");
    for i in 0..5 {
        service
            .put(&call, "a", &format!("k{i}"), "1", &put_options())
            .await
            .unwrap();
    }
    service
        .put(&call, "b", "k", "22", &put_options())
        .await
        .unwrap();
    assert!(service.recount(&call, false).await.unwrap().is_empty());

    store
        .sql(
            "UPDATE ext_storage_namespace_usage SET key_count = 9, byte_count = 1 WHERE namespace = 'a';
             DELETE FROM ext_storage_namespace_usage WHERE namespace = 'b';
             UPDATE ext_storage_install_usage SET namespace_count = 7;",
            "UPDATE namespace_usage SET key_count = 9, byte_count = 1 WHERE namespace = 'a';
             DELETE FROM namespace_usage WHERE namespace = 'b';
             UPDATE install_usage SET namespace_count = 7;",
        )
        .await;
    let drift = service.recount(&call, false).await.unwrap();
    let scopes: Vec<_> = drift.iter().map(|d| d.scope.clone()).collect();
    assert_eq!(
        scopes,
        [
            DriftScope::Namespace("a".into()),
            DriftScope::Namespace("b".into()),
            DriftScope::Install
        ]
    );
    assert_eq!((drift[0].counted_keys, drift[0].actual_keys), (9, 5));
    assert_eq!((drift[0].counted_bytes, drift[0].actual_bytes), (1, 15));
    assert_eq!((drift[2].counted_keys, drift[2].actual_keys), (7, 2));
    // A check changes nothing.
    assert_eq!(service.recount(&call, false).await.unwrap().len(), 3);

    assert_eq!(service.recount(&call, true).await.unwrap().len(), 3);
    assert!(service.recount(&call, false).await.unwrap().is_empty());
    let usage = service.usage(&call).await.unwrap();
    assert_eq!((usage.namespaces.used, usage.total_bytes.used), (2, 15 + 3));
    let repairs = store
        .sql(
            "SELECT count(*) FROM ext_storage_audit WHERE operation = 'counter-repair' \
             AND actor = 'operator:test'",
            "SELECT count(*) FROM audit WHERE operation = 'counter-repair' \
             AND actor = 'operator:test'",
        )
        .await;
    assert_eq!(repairs[0][0], "3");
}

/// 16 writers overwrite the same three keys with values of changing sizes, unconditionally and
/// with revisions, and delete them now and then: each write charges the difference to exactly
/// the version it replaces (the overwrite returns that version's size; a write that read the
/// record reads again when another writer got there first), so the counters still equal what is
/// stored.
async fn concurrent_overwrites_of_one_key_keep_counters_exact(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("tenant-o", "install-o");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let (service, call) = (service.clone(), call.clone());
        tasks.spawn(async move {
            let mut rng = Rng(worker + 1);
            for _ in 0..40 {
                let key = format!("k{}", rng.below(3));
                let value = format!("\"{}\"", "x".repeat(rng.below(200)));
                let precondition = match rng.below(4) {
                    0 => match service.get(&call, "ns", &key).await.unwrap() {
                        Some(record) => Precondition::Revision(record.revision),
                        None => Precondition::Absent,
                    },
                    1 if rng.below(5) == 0 => {
                        service
                            .delete(&call, "ns", &key, Precondition::None)
                            .await
                            .unwrap();
                        continue;
                    }
                    _ => Precondition::None,
                };
                let options = PutOptions {
                    precondition,
                    ..PutOptions::default()
                };
                match service.put(&call, "ns", &key, &value, &options).await {
                    Ok(_) | Err(StorageError::RevisionConflict { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    assert_eq!(service.recount(&call, false).await.unwrap(), []);
    let usage = service.usage(&call).await.unwrap();
    let stored = stored(&store, "tenant-o", "install-o").await;
    let bytes: i64 = stored.iter().map(|(_, _, bytes)| bytes).sum();
    assert_eq!(usage.total_bytes.used as i64, bytes, "{stored:?}");
}

on_both_engines!(
    keys_quota_holds_under_32_concurrent_writers,
    byte_quota_holds_under_32_concurrent_writers,
    namespace_quota_holds_under_concurrent_writers,
    sizes_are_exact_at_the_limits,
    per_install_limits_apply_and_are_capped,
    overwrites_charge_the_difference_and_shrinking_is_always_allowed,
    expired_records_are_never_returned_and_free_their_quota_once_touched,
    quotas_count_only_live_records,
    a_refusal_looks_at_a_bounded_number_of_expired_records,
    growth_the_counters_do_not_show_is_checked,
    sweeps_are_bounded_per_request,
    counters_equal_records_after_2000_random_operations,
    near_limit_crossings_are_reported_once,
    drifted_counters_are_reported_and_repaired,
    concurrent_overwrites_of_one_key_keep_counters_exact,
);
