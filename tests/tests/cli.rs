//! The `alga-storage` command, driven through the same entry point as the binary.

use alga_storage::cli;
use alga_storage_tests::*;

async fn alga(args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["alga-storage"];
    argv.extend_from_slice(args);
    cli::run(argv).await
}

async fn applied(db: &TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT version FROM alga_storage_migrations ORDER BY 1",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn migrate_up_status_down() {
    let db = TestDb::empty().await;
    let url = db.url.as_str();
    alga(&["--database-url", url, "migrate", "status"])
        .await
        .unwrap();
    assert!(applied(&db).await.is_empty());
    alga(&["--database-url", url, "migrate", "up"])
        .await
        .unwrap();
    assert_eq!(applied(&db).await, [1, 2]);
    alga(&["--database-url", url, "migrate", "down"])
        .await
        .unwrap();
    assert_eq!(
        applied(&db).await,
        [1],
        "down without --to reverts one migration"
    );
    alga(&["--database-url", url, "migrate", "down", "--to", "0"])
        .await
        .unwrap();
    assert!(applied(&db).await.is_empty());
    alga(&["migrate", "up", "--database-url", url])
        .await
        .unwrap();
    assert_eq!(applied(&db).await, [1, 2]);
}

#[tokio::test]
async fn run_attaches_storage_for_the_given_install() {
    let db = TestDb::empty().await;
    let url = db.url.as_str();
    let args = ["--database-url", url, "run", DEMO_NOTES, "--migrate"];
    alga(&[&args[..], &["--tenant", "t1", "--install", "i1"]].concat())
        .await
        .unwrap();

    let service = db.service();
    let notes = service
        .list(&granted("t1", "i1"), "notes", &Default::default())
        .await
        .unwrap();
    let keys: Vec<&str> = notes.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["note-1", "note-2"]);
    let other = service
        .list(&granted("t1", "i2"), "notes", &Default::default())
        .await
        .unwrap();
    assert!(other.entries.is_empty());
}

#[tokio::test]
async fn run_failures_are_reported() {
    let db = TestDb::new().await;
    let url = db.url.as_str();
    let denied = alga(&["--database-url", url, "run", DEMO_NOTES, "--no-grant"]).await;
    let message = format!("{:#}", denied.unwrap_err());
    assert!(message.contains("component failed"), "{message}");

    let missing = alga(&["--database-url", url, "run", "/nonexistent.wasm"]).await;
    assert!(format!("{:#}", missing.unwrap_err()).contains("cannot read"));

    let not_wasm = std::env::temp_dir().join(format!("not-wasm-{}.wasm", std::process::id()));
    std::fs::write(&not_wasm, b"definitely not wasm").unwrap();
    let bad = alga(&["--database-url", url, "run", not_wasm.to_str().unwrap()]).await;
    std::fs::remove_file(&not_wasm).unwrap();
    assert!(bad.is_err());

    let usage = alga(&["migrate", "sideways"]).await;
    assert!(usage.unwrap_err().to_string().contains("sideways"));
    let bad_url = alga(&["--database-url", "not a url", "migrate", "up"]).await;
    assert!(format!("{:#}", bad_url.unwrap_err()).contains("connect"));
}

#[tokio::test]
async fn usage_and_counter_repair_commands() {
    let db = TestDb::new().await;
    let url = db.url.as_str();
    let service = db.service();
    let call = granted("t1", "i1");
    service
        .put(&call, "ns", "k", "1", &Default::default())
        .await
        .unwrap();
    let install = ["--tenant", "t1", "--install", "i1"];
    alga(&[&["--database-url", url, "usage"][..], &install].concat())
        .await
        .unwrap();
    alga(&[&["--database-url", url, "counters", "check"][..], &install].concat())
        .await
        .unwrap();

    let client = db.client().await;
    client
        .batch_execute("UPDATE ext_storage_namespace_usage SET key_count = 42")
        .await
        .unwrap();
    alga(&[&["--database-url", url, "counters", "check"][..], &install].concat())
        .await
        .unwrap();
    assert_eq!(
        service.recount(&call, false).await.unwrap().len(),
        1,
        "check repairs nothing"
    );
    alga(&[&["--database-url", url, "counters", "repair"][..], &install].concat())
        .await
        .unwrap();
    assert!(service.recount(&call, false).await.unwrap().is_empty());
    let actor: String = client
        .query_one(
            "SELECT actor FROM ext_storage_audit WHERE operation = 'counter-repair'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(actor, "operator:cli");
    // The install is required.
    assert!(
        alga(&["--database-url", url, "counters", "check"])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn schema_and_manifest_commands() {
    let db = TestDb::new().await;
    let url = db.url.as_str();
    let service = db.service();
    let call = granted("t1", "i1");
    service
        .put(&call, "ns", "bad", r#"{"n":"x"}"#, &Default::default())
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("alga-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    let schema = dir.join("schemas/n.json");
    std::fs::write(&schema, r#"{"properties":{"n":{"type":"integer"}}}"#).unwrap();
    let schema_path = schema.to_str().unwrap();
    let install = ["--tenant", "t1", "--install", "i1", "--namespace", "ns"];
    let register = [
        &["--database-url", url, "schema", "register"][..],
        &install,
        &[schema_path],
    ]
    .concat();

    // A dry run registers nothing.
    alga(&[&register[..], &["--dry-run"]].concat())
        .await
        .unwrap();
    assert!(service.schema(&call, "ns").await.unwrap().is_none());
    alga(&register).await.unwrap();
    assert_eq!(
        service.schema(&call, "ns").await.unwrap().unwrap().version,
        1
    );
    alga(&[&["--database-url", url, "schema", "show"][..], &install].concat())
        .await
        .unwrap();
    let missing = [
        &["--database-url", url, "schema", "register"][..],
        &install,
        &["/nope.json"],
    ]
    .concat();
    assert!(format!("{:#}", alga(&missing).await.unwrap_err()).contains("cannot read"));

    // A manifest whose schema rejects the stored record is refused, naming the field.
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"storage":{"namespaces":{"other":{"schema":"schemas/n.json"},
            "ns":{"schema":"schemas/strict.json"}}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("schemas/strict.json"),
        r#"{"required":["n"],"properties":{"n":{"type":"integer","minimum":0}}}"#,
    )
    .unwrap();
    let apply = [
        "--database-url",
        url,
        "manifest",
        "--tenant",
        "t1",
        "--install",
        "i1",
        manifest.to_str().unwrap(),
    ];
    let err = format!("{:#}", alga(&apply).await.unwrap_err());
    assert!(
        err.contains("storage.namespaces.ns.schema") && err.contains("\"bad\""),
        "{err}"
    );
    assert!(
        service.schema(&call, "other").await.unwrap().is_none(),
        "a refused manifest changes nothing"
    );
    assert!(
        service
            .delete(&call, "ns", "bad", Default::default())
            .await
            .unwrap()
    );
    alga(&apply).await.unwrap();
    assert_eq!(
        service.schema(&call, "ns").await.unwrap().unwrap().version,
        2
    );
    assert_eq!(
        service
            .schema(&call, "other")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An operator command that reads or repairs, without a database URL, must not create an empty
/// embedded store and report on it ("counters match the records") as if it were the real data;
/// the commands that set a store up (`serve`, `run`, `import`, `manifest`, `schema register`)
/// create one.
#[tokio::test]
async fn operator_commands_refuse_an_embedded_store_that_does_not_exist() {
    let dir = fresh_dir("cli-missing");
    let file = dir.join("never-created.db");
    let store = file.display().to_string();
    let install = ["--tenant", "t", "--install", "i"];
    let schema = dir.join("s.json");
    std::fs::write(&schema, "{}").unwrap();
    let schema = schema.display().to_string();
    let commands: [Vec<&str>; 7] = [
        vec!["usage"],
        vec!["counters", "check"],
        vec!["counters", "repair"],
        vec!["schema", "show", "--namespace", "ns"],
        vec![
            "schema",
            "register",
            "--dry-run",
            "--namespace",
            "ns",
            &schema,
        ],
        vec!["audit", "list"],
        vec!["export", "--output", "out.ndjson"],
    ];
    for command in commands {
        let args = [&["--store", &store][..], &command, &install].concat();
        let error = alga(&args).await.unwrap_err().to_string();
        assert!(
            error.contains("does not exist") && error.contains("ALGA_STORAGE_DATABASE_URL"),
            "{command:?}: {error}"
        );
        assert!(!file.exists(), "{command:?} created the store");
    }
    for command in [
        vec!["audit", "prune", "--older-than-days", "1"],
        vec!["audit", "relay", "--to", "stdout"],
    ] {
        let args = [&["--store", &store][..], &command].concat();
        let error = alga(&args).await.unwrap_err().to_string();
        assert!(error.contains("does not exist"), "{command:?}: {error}");
    }
    assert!(!file.exists());

    // Registering a schema sets the store up; then the reading commands work on it.
    let register = [
        &[
            "--store",
            &store,
            "schema",
            "register",
            "--namespace",
            "ns",
            &schema,
        ][..],
        &install,
    ]
    .concat();
    alga(&register).await.unwrap();
    assert!(file.exists());
    let show = [
        &["--store", &store, "schema", "show", "--namespace", "ns"][..],
        &install,
    ]
    .concat();
    alga(&show).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
