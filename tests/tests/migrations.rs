//! Migrations: up → down → up round-trips, on an empty database and on one holding data;
//! concurrent runners do not race.

use alga_storage::backend::postgres::migrate::{self, MIGRATIONS};
use alga_storage_tests::*;

async fn tables(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn functions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT proname::text FROM pg_proc WHERE proname LIKE 'alga_storage_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn up_down_up_on_empty_database() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();

    assert!(
        migrate::status(&mut client)
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied_at.is_none())
    );
    assert_eq!(migrate::up(&mut client).await.unwrap(), all);
    assert!(
        migrate::up(&mut client).await.unwrap().is_empty(),
        "up is idempotent"
    );
    assert!(
        migrate::status(&mut client)
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied_at.is_some())
    );
    let expected_tables = tables(&client).await;
    assert!(expected_tables.contains(&"ext_storage_records".to_string()));
    assert_eq!(
        functions(&client).await,
        [
            "alga_storage_count",
            "alga_storage_delete",
            "alga_storage_expired",
            "alga_storage_put",
            "alga_storage_recount",
            "alga_storage_register_schema",
            "alga_storage_sweep"
        ]
    );

    let mut reverted = all.clone();
    reverted.reverse();
    assert_eq!(migrate::down(&mut client, 0).await.unwrap(), reverted);
    assert_eq!(tables(&client).await, ["alga_storage_migrations"]);
    assert!(functions(&client).await.is_empty());

    assert_eq!(migrate::up(&mut client).await.unwrap(), all);
    assert_eq!(tables(&client).await, expected_tables);
}

#[tokio::test]
async fn down_one_step_then_up_keeps_data() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i");
    service
        .put(&call, "ns", "k", r#"{"kept":true}"#, &Default::default())
        .await
        .unwrap();

    let mut client = db.client().await;
    // Reverting only the functions keeps the tables and their rows.
    let last = MIGRATIONS.last().unwrap().version;
    assert_eq!(migrate::down(&mut client, last - 1).await.unwrap(), [last]);
    assert!(functions(&client).await.is_empty());
    assert_eq!(migrate::up(&mut client).await.unwrap(), [last]);
    let record = service.get(&call, "ns", "k").await.unwrap().unwrap();
    assert_eq!(record.value.as_deref(), Some(r#"{"kept": true}"#));
    // The write path works again after the round trip.
    let w = service
        .put(&call, "ns", "k", "2", &Default::default())
        .await
        .unwrap();
    assert_eq!(w.revision, 2);
}

#[tokio::test]
async fn up_down_up_on_database_holding_data() {
    let db = TestDb::new().await;
    let service = db.service();
    let call = granted("t", "i");
    for i in 0..20 {
        service
            .put(&call, "ns", &format!("k{i}"), "1", &Default::default())
            .await
            .unwrap();
    }
    let mut client = db.client().await;
    migrate::down(&mut client, 0).await.unwrap();
    assert_eq!(tables(&client).await, ["alga_storage_migrations"]);
    migrate::up(&mut client).await.unwrap();
    // Down drops the data (documented); up recreates a working, empty schema.
    assert!(service.get(&call, "ns", "k0").await.unwrap().is_none());
    let w = service
        .put(&call, "ns", "k0", "1", &Default::default())
        .await
        .unwrap();
    assert_eq!(w.revision, 1);
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        runs.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            migrate::up(&mut client).await.unwrap()
        }));
    }
    let mut applied: Vec<i32> = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap());
    }
    applied.sort();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "each migration applied by exactly one runner");
}

#[tokio::test]
async fn unknown_applied_version_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .execute(
            "INSERT INTO alga_storage_migrations (version, name) VALUES (9999, 'future')",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::up(&mut client).await.unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
    assert!(migrate::status(&mut client).await.is_err());
}
