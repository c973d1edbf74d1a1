//! Test support: a fresh PostgreSQL database per test, and the guest fixtures.
//!
//! Tests need `DATABASE_URL` pointing at a server where they may create databases; the README's
//! test command (`scripts/test.sh`) starts a throwaway cluster and sets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use alga_storage::backend::postgres::{PgBackend, migrate};
use alga_storage::wasm::command::{CommandRunner, RunOptions, RunOutcome};
use alga_storage::{CallContext, STORAGE_CAPABILITY, StorageService};
use tokio_postgres::{Client, NoTls};

pub mod gateway;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// A database created for one test, migrated, and dropped when the value is dropped (also when
/// the test panics).
pub struct TestDb {
    /// URL of the test's own database.
    pub url: String,
    name: String,
    admin_url: String,
}

/// The maintenance database URL from the environment.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a throwaway \
         PostgreSQL, or point DATABASE_URL at a server where tests may create databases",
    )
}

impl TestDb {
    /// Creates and migrates a new database on the `DATABASE_URL` server.
    pub async fn new() -> Self {
        Self::new_on(&admin_url()).await
    }

    /// Creates and migrates a new database on the server of `admin_url`.
    pub async fn new_on(admin_url: &str) -> Self {
        let db = Self::empty_on(admin_url).await;
        let mut client = db.client().await;
        migrate::up(&mut client).await.expect("migrations apply");
        db
    }

    /// Creates a new database without migrating it.
    pub async fn empty() -> Self {
        Self::empty_on(&admin_url()).await
    }

    /// Creates a new database on the server of `admin_url` without migrating it.
    pub async fn empty_on(admin_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin_url = admin_url.to_owned();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "alga_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_dbname(&admin_url, &name);
        Self {
            url,
            name,
            admin_url,
        }
    }

    /// A new connection to the test database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// A storage service over this database.
    pub fn service(&self) -> StorageService {
        StorageService::new(Arc::new(self.backend()))
    }

    /// A PostgreSQL backend over this database with a small pool.
    pub fn backend(&self) -> PgBackend {
        PgBackend::connect(&self.url, 4).expect("valid URL")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(&admin_url).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `url` with its database name replaced by `dbname`.
fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{dbname}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A context for `(tenant, install)` holding the storage grant.
pub fn granted(tenant: &str, install: &str) -> CallContext {
    CallContext::new(tenant, install)
        .grant(STORAGE_CAPABILITY)
        .actor("test")
}

/// Runs the fixture at `path` for `call` and returns how it ended, output captured.
pub async fn run_fixture_as(
    service: StorageService,
    path: &str,
    call: CallContext,
    env: &[(&str, &str)],
) -> RunOutcome {
    let runner = CommandRunner::new(service).expect("engine");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let component = runner.compile(&bytes).expect("fixture compiles");
    let options = RunOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        capture_output: true,
        ..RunOptions::default()
    };
    runner
        .run(&component, call, &options)
        .await
        .expect("fixture instantiates")
}

/// Panics with the fixture's output unless it succeeded.
#[track_caller]
pub fn assert_success(name: &str, outcome: &RunOutcome) {
    assert!(
        outcome.success(),
        "fixture {name} failed: {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        outcome.result,
        outcome.stderr,
        outcome.stdout
    );
}
