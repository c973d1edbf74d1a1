//! The schema registry on real PostgreSQL: registration rules, validation of every write,
//! version negotiation, two host processes sharing a database, and the dry run.

use alga_storage::backend::StoredSchema;
use alga_storage::model::{ListOptions, PutItem, PutOptions};
use alga_storage::{StorageError, StorageService};
use alga_storage_tests::*;

fn pinned(version: u32) -> PutOptions {
    PutOptions {
        schema_version: Some(version),
        ..PutOptions::default()
    }
}

fn violations(e: StorageError) -> Vec<(String, String)> {
    match e {
        StorageError::ValidationFailed(v) => {
            let mut found: Vec<_> = v
                .into_iter()
                .map(|v| (v.instance_path, v.keyword))
                .collect();
            found.sort();
            found
        }
        other => panic!("expected validation-failed, got {other:?}"),
    }
}

const NAME_REQUIRED: &str =
    r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"}}}"#;

#[tokio::test]
async fn registration_checks_the_document() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i");
    let refused = |e: StorageError| match e {
        StorageError::InvalidInput {
            field: "schema",
            message,
        } => message,
        other => panic!("expected invalid-input on schema, got {other:?}"),
    };
    for (document, needle) in [
        ("{not json", "not valid JSON"),
        (
            r#"{"$schema":"http://json-schema.org/draft-04/schema#"}"#,
            "draft-04",
        ),
        (
            r#"{"$ref":"https://example.com/remote.json"}"#,
            "only local references",
        ),
        (r#"{"type":12}"#, "not a valid schema"),
        ("[]", "object or boolean"),
    ] {
        let message = refused(
            service
                .register_schema(&call, "ns", document)
                .await
                .unwrap_err(),
        );
        assert!(message.contains(needle), "{document}: {message}");
    }
    assert!(
        service.schema(&call, "ns").await.unwrap().is_none(),
        "nothing registered"
    );
    assert!(
        service
            .register_schema(&call, "Bad NS", NAME_REQUIRED)
            .await
            .is_err()
    );

    assert_eq!(
        service
            .register_schema(&call, "ns", NAME_REQUIRED)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        service.register_schema(&call, "ns", "true").await.unwrap(),
        2
    );
    assert_eq!(
        service
            .register_schema(&call, "other", "true")
            .await
            .unwrap(),
        1
    );
    let current = service.schema(&call, "ns").await.unwrap().unwrap();
    assert_eq!((current.version, current.document.as_str()), (2, "true"));
    // Another install of the same tenant has no schema.
    assert!(
        service
            .schema(&granted("t", "j"), "ns")
            .await
            .unwrap()
            .is_none()
    );

    let client = db.client().await;
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM ext_storage_audit WHERE operation = 'schema-register'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 3);
}

async fn writes_are_validated_against_the_current_version(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    service
        .put(
            &call,
            "ns",
            "before",
            r#"{"anything":1}"#,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    service
        .register_schema(&call, "ns", NAME_REQUIRED)
        .await
        .unwrap();

    let err = service
        .put(&call, "ns", "k", r#"{"name":7}"#, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(violations(err), [("/name".to_string(), "type".to_string())]);
    service
        .put(&call, "ns", "k", r#"{"name":"ok"}"#, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        service
            .get(&call, "ns", "k")
            .await
            .unwrap()
            .unwrap()
            .schema_version,
        Some(1)
    );
    assert_eq!(
        service
            .get(&call, "ns", "before")
            .await
            .unwrap()
            .unwrap()
            .schema_version,
        None
    );

    let stricter = r#"{"type":"object","required":["name","email"]}"#;
    assert_eq!(
        service
            .register_schema(&call, "ns", stricter)
            .await
            .unwrap(),
        2
    );
    let err = service
        .put(&call, "ns", "k2", r#"{"name":"x"}"#, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(violations(err), [(String::new(), "required".to_string())]);
    service
        .put(
            &call,
            "ns",
            "k2",
            r#"{"name":"x","email":"e"}"#,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    // Records keep the version they were validated against; reads return it.
    let page = service
        .list(&call, "ns", &ListOptions::default())
        .await
        .unwrap();
    let versions: Vec<(&str, Option<u32>)> = page
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.schema_version))
        .collect();
    assert_eq!(
        versions,
        [("before", None), ("k", Some(1)), ("k2", Some(2))]
    );
    // Other namespaces are unaffected.
    service
        .put(&call, "free", "k", "[1,2]", &PutOptions::default())
        .await
        .unwrap();
}

async fn twenty_violations_are_reported_with_json_pointers(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let properties: Vec<String> = (0..10)
        .map(|i| format!(r#""f{i}":{{"type":"integer"}}"#))
        .collect();
    let schema = format!(
        r#"{{"type":"object","properties":{{{},"list":{{"type":"array","items":{{"type":"boolean"}}}},"deep":{{"properties":{{"a/b":{{"properties":{{"c~d":{{"maximum":1}}}}}}}}}}}}}}"#,
        properties.join(",")
    );
    service.register_schema(&call, "ns", &schema).await.unwrap();
    let fields: Vec<String> = (0..10).map(|i| format!(r#""f{i}":"x""#)).collect();
    let value = format!(
        r#"{{{},"list":[1,2,3,4,5,6,7,8,true,9],"deep":{{"a/b":{{"c~d":5}}}}}}"#,
        fields.join(",")
    );
    let err = service
        .put(&call, "ns", "k", &value, &PutOptions::default())
        .await
        .unwrap_err();
    let found = violations(err);
    assert_eq!(found.len(), 20, "{found:?}");
    let mut expected: Vec<(String, String)> = (0..10)
        .map(|i| (format!("/f{i}"), "type".to_string()))
        .chain(
            [0, 1, 2, 3, 4, 5, 6, 7, 9]
                .iter()
                .map(|i| (format!("/list/{i}"), "type".to_string())),
        )
        .chain([("/deep/a~1b/c~0d".to_string(), "maximum".to_string())])
        .collect();
    expected.sort();
    assert_eq!(found, expected);
}

async fn bulk_put_validates_every_item_and_names_the_failing_one(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    service
        .register_schema(&call, "ns", NAME_REQUIRED)
        .await
        .unwrap();
    let items: Vec<PutItem> = (0..10)
        .map(|i| PutItem {
            key: format!("k{i}"),
            value: if i == 7 {
                "{}".into()
            } else {
                format!(r#"{{"name":"n{i}"}}"#)
            },
            options: PutOptions::default(),
        })
        .collect();
    let err = service.bulk_put(&call, "ns", &items).await.unwrap_err();
    assert_eq!(err.item, Some(7));
    assert_eq!(
        violations(err.error),
        [(String::new(), "required".to_string())]
    );
    assert!(
        service
            .list(&call, "ns", &ListOptions::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );

    // A pinned item in a bulk is named too.
    let mut items = items;
    items[7].value = r#"{"name":"fixed"}"#.into();
    items[3].options = pinned(9);
    let err = service.bulk_put(&call, "ns", &items).await.unwrap_err();
    assert_eq!(err.item, Some(3));
    assert_eq!(
        err.error,
        StorageError::SchemaMismatch {
            expected: 9,
            current: Some(1)
        }
    );
    items[3].options = pinned(1);
    let written = service.bulk_put(&call, "ns", &items).await.unwrap();
    assert_eq!(written.len(), 10);
}

async fn pinned_versions_are_negotiated(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let err = service
        .put(&call, "ns", "k", "{}", &pinned(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::SchemaMismatch {
            expected: 1,
            current: None
        }
    );
    service.register_schema(&call, "ns", "true").await.unwrap();
    service
        .put(&call, "ns", "k", "{}", &pinned(1))
        .await
        .unwrap();
    service.register_schema(&call, "ns", "true").await.unwrap();
    let err = service
        .put(&call, "ns", "k", "{}", &pinned(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::SchemaMismatch {
            expected: 1,
            current: Some(2)
        }
    );
    let w = service
        .put(&call, "ns", "k", "{}", &pinned(2))
        .await
        .unwrap();
    assert_eq!(w.revision, 2);
}

/// Two host processes (two services, two caches) on one database: the one that did not register
/// validates its very next write against the new version.
#[tokio::test]
async fn a_second_process_never_validates_against_a_stale_schema() {
    let db = TestDb::new().await;
    let (host_a, host_b): (StorageService, StorageService) = (db.service(), db.service());
    let call = granted("t", "i");

    // A caches "no schema"; B registers one; A's next write is validated against it.
    host_a
        .put(&call, "ns", "k", r#"{"free":true}"#, &PutOptions::default())
        .await
        .unwrap();
    host_b
        .register_schema(&call, "ns", NAME_REQUIRED)
        .await
        .unwrap();
    let err = host_a
        .put(&call, "ns", "k", r#"{"free":true}"#, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(violations(err), [(String::new(), "required".to_string())]);
    host_a
        .put(&call, "ns", "k", r#"{"name":"a"}"#, &PutOptions::default())
        .await
        .unwrap();

    // A caches version 1; B registers a stricter version 2; A's next write obeys version 2.
    host_b
        .register_schema(
            &call,
            "ns",
            r#"{"required":["name"],"properties":{"name":{"maxLength":2}}}"#,
        )
        .await
        .unwrap();
    let err = host_a
        .put(
            &call,
            "ns",
            "k",
            r#"{"name":"too long"}"#,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        violations(err),
        [("/name".to_string(), "maxLength".to_string())]
    );
    host_a
        .put(&call, "ns", "k", r#"{"name":"ok"}"#, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        host_b
            .get(&call, "ns", "k")
            .await
            .unwrap()
            .unwrap()
            .schema_version,
        Some(2)
    );

    // The same through bulk puts, and with a pin that A's cache would wrongly accept.
    host_b.register_schema(&call, "ns", "true").await.unwrap();
    let err = host_a
        .put(&call, "ns", "k", "1", &pinned(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::SchemaMismatch {
            expected: 2,
            current: Some(3)
        }
    );
}

/// A write that waits for another process's registration (holding the namespace's lock until it
/// commits) is checked against the version that registration commits, not the one before it.
#[tokio::test]
async fn a_write_waiting_for_a_registration_is_checked_against_it() {
    let db = TestDb::new().await;
    let (host, call) = (db.service(), granted("t", "i"));
    // The host caches "no schema".
    host.put(&call, "ns", "k", r#"{"free":true}"#, &PutOptions::default())
        .await
        .unwrap();

    let mut other = db.client().await;
    let registration = other.transaction().await.unwrap();
    registration
        .execute(
            "SELECT alga_storage_register_schema('t', 'i', 'ns', $1::text::jsonb, now(), \
             'ext', 'other-host', 'req')",
            &[&NAME_REQUIRED],
        )
        .await
        .unwrap();
    let write = tokio::spawn({
        let (host, call) = (host.clone(), call.clone());
        async move {
            host.put(
                &call,
                "ns",
                "k",
                r#"{"free":false}"#,
                &PutOptions::default(),
            )
            .await
        }
    });
    // Commit only once the write waits for the registration's lock.
    wait_for_lock_waits(&db.client().await, 1).await;
    registration.commit().await.unwrap();

    let err = write.await.unwrap().unwrap_err();
    assert_eq!(violations(err), [(String::new(), "required".to_string())]);
    let kept = host.get(&call, "ns", "k").await.unwrap().unwrap();
    assert_eq!(
        (kept.value.as_deref(), kept.revision),
        (Some(r#"{"free": true}"#), 1)
    );
}

/// An imported schema version is ordered with writes as a registration is: it waits for a
/// write in flight, and the writes after it are checked against it.
#[tokio::test]
async fn an_imported_schema_version_is_ordered_with_writes() {
    let db = TestDb::new().await;
    let (host, call) = (db.service(), granted("t", "i"));
    let mut writer = db.client().await;
    let write = writer.transaction().await.unwrap();
    put_in(&write, "ns", "k", r#"{"free":true}"#, 15).await;

    let import = tokio::spawn({
        let (host, call) = (host.clone(), call.clone());
        async move {
            let stored = StoredSchema {
                version: 1,
                document: NAME_REQUIRED.into(),
            };
            host.restore_schema(&call, "ns", &stored).await
        }
    });
    wait_for_lock_waits(&db.client().await, 1).await;
    write.commit().await.unwrap();
    assert!(import.await.unwrap().unwrap());

    let err = host
        .put(
            &call,
            "ns",
            "k2",
            r#"{"free":true}"#,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(violations(err), [(String::new(), "required".to_string())]);
}

async fn a_dry_run_reports_failing_keys_page_by_page(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let items: Vec<PutItem> = (0..250)
        .map(|i| PutItem {
            key: format!("k{i:03}"),
            value: if i % 9 == 0 {
                r#"{"n":"text"}"#.into()
            } else {
                format!(r#"{{"n":{i}}}"#)
            },
            options: PutOptions::default(),
        })
        .collect();
    for chunk in items.chunks(100) {
        service.bulk_put(&call, "ns", chunk).await.unwrap();
    }
    let schema = r#"{"properties":{"n":{"type":"integer"}}}"#;
    let (mut checked, mut failing, mut cursor, mut pages) = (0, Vec::new(), None, 0);
    loop {
        let page = service
            .check_schema(&call, "ns", schema, cursor.as_deref(), 100)
            .await
            .unwrap();
        assert!(page.checked <= 100);
        checked += page.checked;
        failing.extend(page.failing.into_iter().map(|f| {
            assert_eq!(f.violations[0].instance_path, "/n");
            f.key
        }));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!((checked, pages), (250, 3));
    let expected: Vec<String> = (0..250)
        .filter(|i| i % 9 == 0)
        .map(|i| format!("k{i:03}"))
        .collect();
    assert_eq!(failing, expected);
    assert!(
        service.schema(&call, "ns").await.unwrap().is_none(),
        "a dry run registers nothing"
    );
    let refused = service
        .check_schema(&call, "ns", "{bad", None, 100)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        StorageError::InvalidInput {
            field: "schema",
            ..
        }
    ));
}

async fn manifests_register_schemas_and_refuse_incompatible_upgrades(engine: Engine) {
    let store = TestStore::new(engine).await;
    let service = store.service();
    let call = granted("t", "i");
    let files = |path: &str| -> Result<String, String> {
        match path {
            "v1.json" => Ok(r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#.into()),
            "v2.json" => Ok(
                r#"{"type":"object","properties":{"n":{"type":"integer","maximum":10}}}"#.into(),
            ),
            other => Err(format!("{other} not found")),
        }
    };
    let install = r#"{"storage":{"namespaces":{"counters":{"schema":"v1.json"},"cache":{}},
                      "limits":{"maxKeysPerNamespace":500}}}"#;
    let applied = service
        .apply_manifest(&call, install, &files)
        .await
        .unwrap();
    assert_eq!(applied.registered, [("counters".to_string(), 1)]);
    assert_eq!(applied.unchanged, ["cache"]);
    assert_eq!(applied.limits.max_keys_per_namespace, 500);

    // Applying the same manifest again registers nothing.
    let again = service
        .apply_manifest(&call, install, &files)
        .await
        .unwrap();
    assert!(again.registered.is_empty());

    // Records that version 2 would reject block the upgrade, which then changes nothing.
    for (key, n) in [("a", 5), ("b", 50), ("c", 7)] {
        service
            .put(
                &call,
                "counters",
                key,
                &format!(r#"{{"n":{n}}}"#),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let upgrade = r#"{"storage":{"namespaces":{"counters":{"schema":"v2.json"}}}}"#;
    let err = service
        .apply_manifest(&call, upgrade, &files)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("storage.namespaces.counters.schema") && message.contains("\"b\""),
        "{message}"
    );
    assert_eq!(
        service
            .schema(&call, "counters")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );

    // Saying how to proceed registers it; the old record stays readable with its version.
    let anyway = r#"{"storage":{"namespaces":{"counters":{"schema":"v2.json"}},
                     "onIncompatibleSchema":"register-anyway"}}"#;
    let applied = service.apply_manifest(&call, anyway, &files).await.unwrap();
    assert_eq!(applied.registered, [("counters".to_string(), 2)]);
    let b = service.get(&call, "counters", "b").await.unwrap().unwrap();
    assert_eq!(b.schema_version, Some(1));
    let err = service
        .put(
            &call,
            "counters",
            "b",
            r#"{"n":50}"#,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(violations(err), [("/n".to_string(), "maximum".to_string())]);

    // A missing schema file is named.
    let missing = r#"{"storage":{"namespaces":{"x":{"schema":"nope.json"}}}}"#;
    let message = service
        .apply_manifest(&call, missing, &files)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("storage.namespaces.x.schema: nope.json"),
        "{message}"
    );
}

on_both_engines!(
    writes_are_validated_against_the_current_version,
    twenty_violations_are_reported_with_json_pointers,
    bulk_put_validates_every_item_and_names_the_failing_one,
    pinned_versions_are_negotiated,
    a_dry_run_reports_failing_keys_page_by_page,
    manifests_register_schemas_and_refuse_incompatible_upgrades,
);
