//! `alga-storage export` / `import` between the two engines: every record, revision, TTL,
//! timestamp and schema version survives PostgreSQL → embedded → PostgreSQL; an interrupted
//! import resumes from its checkpoint; bad files are refused.

use std::path::Path;
use std::time::Duration;

use alga_storage::StorageService;
use alga_storage::model::{Precondition, PutItem, PutOptions, Record};
use alga_storage_tests::*;
use serde_json::Value;

const TENANT: &str = "tenant-x";
const INSTALL: &str = "install-x";

/// The CLI's arguments selecting `store`.
fn engine_args(store: &TestStore) -> Vec<String> {
    match (&store.db, store.sqlite_file()) {
        (Some(db), _) => vec!["--database-url".into(), db.url.clone()],
        (None, Some(file)) => vec!["--store".into(), file.display().to_string()],
        _ => unreachable!(),
    }
}

async fn cli(store_args: &[String], rest: &[&str]) -> anyhow::Result<()> {
    let mut args: Vec<String> = vec!["alga-storage".into()];
    args.extend(store_args.iter().cloned());
    args.extend(rest.iter().map(|s| s.to_string()));
    alga_storage::cli::run(args).await
}

/// Fills the install with records of every kind and two schema versions.
async fn fill(service: &StorageService) {
    let ctx = granted(TENANT, INSTALL);
    service
        .register_schema(&ctx, "typed", r#"{"type":"object"}"#)
        .await
        .unwrap();
    let typed = PutOptions::default();
    service
        .put(&ctx, "typed", "v1-record", r#"{"a":1}"#, &typed)
        .await
        .unwrap();
    service
        .register_schema(&ctx, "typed", r#"{"type":"object","required":["a"]}"#)
        .await
        .unwrap();
    service
        .put(&ctx, "typed", "v2-record", r#"{"a":2}"#, &typed)
        .await
        .unwrap();
    service
        .register_schema(&ctx, "empty-ns", r#"true"#)
        .await
        .unwrap();
    for i in 0..1200 {
        service
            .put(
                &ctx,
                "bulk",
                &format!("k{i:05}"),
                &format!(r#"{{"i":{i}}}"#),
                &typed,
            )
            .await
            .unwrap();
    }
    let options = PutOptions {
        ttl: Some(Duration::from_secs(3600)),
        metadata: Some(r#"{"by":"test","n":[1,2]}"#.into()),
        ..Default::default()
    };
    // Numbers beyond f64 must survive exactly (no re-parsing into floats on the way).
    service
        .put(
            &ctx,
            "misc",
            "big-numbers",
            r#"{"id":12345678901234567890123,"pi":3.141592653589793238}"#,
            &typed,
        )
        .await
        .unwrap();
    for key in ["ünï/✓ key", "a%b_c", "plain"] {
        service
            .put(
                &ctx,
                "misc",
                key,
                r#"{"s":"x","deep":[[1],{"z":null}]}"#,
                &options,
            )
            .await
            .unwrap();
    }
    for revision in 1..4 {
        let update = PutOptions {
            precondition: Precondition::Revision(revision),
            ..Default::default()
        };
        service
            .put(&ctx, "misc", "plain", &format!("[{revision}]"), &update)
            .await
            .unwrap();
    }
    let items: Vec<PutItem> = (0..5)
        .map(|i| PutItem {
            key: format!("b{i}"),
            value: "\"text\"".into(),
            options: PutOptions::default(),
        })
        .collect();
    service.bulk_put(&ctx, "misc", &items).await.unwrap();
}

/// Everything an export carries, normalised for comparison (JSON parsed).
async fn snapshot(
    service: &StorageService,
) -> (
    Vec<(String, u32, Value)>,
    Vec<(String, Vec<Comparable>)>,
    (u64, u64),
) {
    let ctx = granted(TENANT, INSTALL);
    let schemas = service
        .schema_versions(&ctx)
        .await
        .unwrap()
        .into_iter()
        .map(|(ns, s)| (ns, s.version, serde_json::from_str(&s.document).unwrap()))
        .collect();
    let mut namespaces = Vec::new();
    for (ns, _) in service.namespaces(&ctx).await.unwrap() {
        let mut records = Vec::new();
        let mut cursor = None;
        loop {
            let page = service.export_page(&ctx, &ns, cursor).await.unwrap();
            records.extend(page.entries.iter().map(comparable));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        namespaces.push((ns, records));
    }
    let usage = service.usage(&ctx).await.unwrap();
    (
        schemas,
        namespaces,
        (usage.namespaces.used, usage.total_bytes.used),
    )
}

type Comparable = (
    String,
    Value,
    Option<Value>,
    u64,
    Option<u32>,
    Option<u128>,
    u128,
    u128,
);

fn comparable(r: &Record) -> Comparable {
    let micros =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    (
        r.key.clone(),
        serde_json::from_str(r.value.as_deref().unwrap()).unwrap(),
        r.metadata
            .as_deref()
            .map(|m| serde_json::from_str(m).unwrap()),
        r.revision,
        r.schema_version,
        r.expires_at.map(micros),
        micros(r.created_at),
        micros(r.updated_at),
    )
}

#[tokio::test]
async fn postgres_to_embedded_and_back_round_trips_everything() {
    let dir = fresh_dir("transfer-round-trip");
    let source = TestStore::new(Engine::Postgres).await;
    fill(&source.service()).await;
    let original = snapshot(&source.service()).await;
    assert_eq!(
        original.1.iter().map(|(_, r)| r.len()).sum::<usize>(),
        2 + 1200 + 9
    );

    let export = dir.join("export.ndjson");
    let out = export.display().to_string();
    cli(
        &engine_args(&source),
        &[
            "export",
            "--tenant",
            TENANT,
            "--install",
            INSTALL,
            "--output",
            &out,
        ],
    )
    .await
    .unwrap();

    let embedded_file = dir.join("embedded.db");
    let embedded_args = vec!["--store".to_owned(), embedded_file.display().to_string()];
    cli(&embedded_args, &["import", &out]).await.unwrap();
    let embedded = StorageService::new(std::sync::Arc::new(
        alga_storage::backend::sqlite::SqliteBackend::open(&embedded_file).unwrap(),
    ));
    assert_eq!(snapshot(&embedded).await, original, "PostgreSQL → embedded");
    assert!(
        embedded
            .recount(&granted(TENANT, INSTALL), false)
            .await
            .unwrap()
            .is_empty()
    );

    let back = dir.join("back.ndjson");
    let back_out = back.display().to_string();
    cli(
        &embedded_args,
        &[
            "export",
            "--tenant",
            TENANT,
            "--install",
            INSTALL,
            "--output",
            &back_out,
        ],
    )
    .await
    .unwrap();
    let target = TestStore::new(Engine::Postgres).await;
    cli(&engine_args(&target), &["import", &back_out])
        .await
        .unwrap();
    assert_eq!(
        snapshot(&target.service()).await,
        original,
        "embedded → PostgreSQL"
    );

    // Writes continue from the restored revisions and schema versions.
    let ctx = granted(TENANT, INSTALL);
    let next = PutOptions {
        precondition: Precondition::Revision(4),
        ..Default::default()
    };
    let written = target
        .service()
        .put(&ctx, "misc", "plain", "[5]", &next)
        .await
        .unwrap();
    assert_eq!(written.revision, 5);
    let refused = target
        .service()
        .put(&ctx, "typed", "x", "{}", &PutOptions::default())
        .await;
    assert!(
        refused.is_err(),
        "schema version 2 (requires a) is current after the import"
    );
    // The import is audited, one row per record.
    let audit = target
        .sql(
            "SELECT count(*) FROM ext_storage_audit WHERE operation = 'import'",
            "",
        )
        .await;
    assert_eq!(audit[0][0], "1211");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_interrupted_import_resumes_from_its_checkpoint() {
    let dir = fresh_dir("transfer-resume");
    let source = TestStore::new(Engine::Sqlite).await;
    fill(&source.service()).await;
    let original = snapshot(&source.service()).await;
    let export = dir.join("export.ndjson");
    let out = export.display().to_string();
    cli(
        &engine_args(&source),
        &[
            "export",
            "--tenant",
            TENANT,
            "--install",
            INSTALL,
            "--output",
            &out,
        ],
    )
    .await
    .unwrap();
    let full = std::fs::read_to_string(&export).unwrap();

    // The first run sees the file cut after 700 lines, as if the copy or the import died.
    let lines: Vec<&str> = full.lines().collect();
    std::fs::write(&export, lines[..700].join("\n") + "\n").unwrap();
    let target_file = dir.join("target.db");
    let target_args = vec!["--store".to_owned(), target_file.display().to_string()];
    let error = cli(&target_args, &["import", &out])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("truncated"), "{error}");
    let checkpoint = std::fs::read_to_string(format!("{out}.progress")).unwrap();
    let (line, identity) = checkpoint.trim().split_once(' ').unwrap();
    assert_eq!(line, "700");
    assert!(identity.starts_with("tenant-x/install-x "), "{identity}");

    // The checkpoint is for this export into this install only: importing the same file into
    // another install starts from the first line (and stops at the cut the same way); what it
    // imported before the cut is counted.
    let other = dir.join("other.db");
    let other_args = vec!["--store".to_owned(), other.display().to_string()];
    let error = cli(&other_args, &["import", "--install", "elsewhere", &out])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    let elsewhere = StorageService::new(std::sync::Arc::new(
        alga_storage::backend::sqlite::SqliteBackend::open(&other).unwrap(),
    ));
    let partial = elsewhere
        .usage(&granted(TENANT, "elsewhere"))
        .await
        .unwrap();
    assert!(
        partial.total_bytes.used > 0,
        "the lines before the cut are counted"
    );

    // The second run, on the whole file, skips the committed lines and finishes.
    std::fs::write(&export, &full).unwrap();
    cli(&target_args, &["import", &out]).await.unwrap();
    assert!(
        !Path::new(&format!("{out}.progress")).exists(),
        "checkpoint removed when done"
    );
    let restored = StorageService::new(std::sync::Arc::new(
        alga_storage::backend::sqlite::SqliteBackend::open(&target_file).unwrap(),
    ));
    assert_eq!(snapshot(&restored).await, original);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_files_are_refused() {
    let dir = fresh_dir("transfer-bad");
    let store_args = vec!["--store".to_owned(), dir.join("s.db").display().to_string()];
    let file = dir.join("bad.ndjson");
    let path = file.display().to_string();
    for (content, expected) in [
        ("", "empty"),
        ("{\"type\":\"end\",\"schemas\":0,\"records\":0}\n", "header"),
        (
            "{\"type\":\"header\",\"format\":\"other\",\"version\":1,\"tenant\":\"t\",\"install\":\"i\",\"exportedAtUs\":0}\n",
            "unsupported",
        ),
        (
            "{\"type\":\"header\",\"format\":\"alga-storage-export\",\"version\":1,\"tenant\":\"t\",\"install\":\"i\",\"exportedAtUs\":0}\nnot json\n",
            "line 2",
        ),
        (
            "{\"type\":\"header\",\"format\":\"alga-storage-export\",\"version\":1,\"tenant\":\"t\",\"install\":\"i\",\"exportedAtUs\":0}\n{\"type\":\"record\",\"namespace\":\"BAD NS\",\"key\":\"k\",\"value\":1,\"metadata\":null,\"revision\":1,\"schemaVersion\":null,\"expiresAtUs\":null,\"createdAtUs\":0,\"updatedAtUs\":0}\n{\"type\":\"end\",\"schemas\":0,\"records\":1}\n",
            "namespace",
        ),
        (
            "{\"type\":\"header\",\"format\":\"alga-storage-export\",\"version\":1,\"tenant\":\"t\",\"install\":\"i\",\"exportedAtUs\":0}\n{\"type\":\"end\",\"schemas\":0,\"records\":5}\n",
            "announces",
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        let error = cli(&store_args, &["import", "--restart", &path])
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains(expected),
            "{expected}: {error:#}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
