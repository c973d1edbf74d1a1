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

pub mod cluster;
pub mod gateway;
pub mod handler;

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

/// One unconditional put of `key` (charged `size` bytes) in `namespace` of tenant "t", install
/// "i", by the write function inside `tx`: a write a test holds in flight (its checks done, not
/// yet committed) to force an interleaving.
pub async fn put_in(
    tx: &tokio_postgres::Transaction<'_>,
    namespace: &str,
    key: &str,
    value: &str,
    size: i64,
) {
    tx.execute(
        "SELECT * FROM alga_storage_put('t', 'i', $1, ARRAY[$2], ARRAY[$3::text::jsonb], \
         ARRAY[NULL::jsonb], ARRAY[$4::bigint], ARRAY[0::smallint], ARRAY[NULL::bigint], \
         ARRAY[NULL::timestamptz], NULL, now(), 'ext', 'writer', 'req', 100, 1000, 1000000, \
         10)",
        &[&namespace, &key, &value, &size],
    )
    .await
    .expect("the write function accepts the put");
}

/// Waits until `sessions` sessions of `client`'s database wait for a lock (a row, a transaction,
/// an advisory lock): how a test knows a concurrent operation has reached the point where it
/// blocks. Panics after 30 s.
pub async fn wait_for_lock_waits(client: &Client, sessions: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity is readable")
            .get(0);
        if waiting >= sessions {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} of {sessions} sessions waited for a lock within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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

/// A storage engine the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL (a fresh test database).
    Postgres,
    /// The embedded SQLite store (a fresh file in a temporary directory).
    Sqlite,
}

/// Both engines: every conformance case runs on each.
pub const ENGINES: [Engine; 2] = [Engine::Postgres, Engine::Sqlite];

/// A fresh store of one engine, removed when dropped.
pub struct TestStore {
    /// Which engine.
    pub engine: Engine,
    /// The PostgreSQL database, for the PostgreSQL engine (direct SQL checks).
    pub db: Option<TestDb>,
    service: StorageService,
    dir: Option<std::path::PathBuf>,
}

impl TestStore {
    /// Creates an empty, migrated store of `engine`.
    pub async fn new(engine: Engine) -> Self {
        match engine {
            Engine::Postgres => {
                let db = TestDb::new().await;
                Self {
                    engine,
                    service: db.service(),
                    db: Some(db),
                    dir: None,
                }
            }
            Engine::Sqlite => {
                static COUNTER: AtomicU32 = AtomicU32::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "alga-test-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&dir).expect("temporary directory");
                let backend =
                    alga_storage::backend::sqlite::SqliteBackend::open(&dir.join("store.db"))
                        .expect("open the embedded store");
                Self {
                    engine,
                    service: StorageService::new(Arc::new(backend)),
                    db: None,
                    dir: Some(dir),
                }
            }
        }
    }

    /// The embedded store's file, for the SQLite engine.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|dir| dir.join("store.db"))
    }

    /// The service over this store (clones share it).
    pub fn service(&self) -> StorageService {
        self.service.clone()
    }

    /// Runs one SQL statement (or, on PostgreSQL, a `;`-separated batch) directly on the store
    /// — `postgres` or `sqlite`, as the engine's tables are named — and returns the rows of the
    /// last one as text (`NULL` as `"NULL"`). For checks the service cannot make.
    pub async fn sql(&self, postgres: &str, sqlite: &str) -> Vec<Vec<String>> {
        match (&self.db, &self.dir) {
            (Some(db), _) => {
                let messages = db.client().await.simple_query(postgres).await.unwrap();
                messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            }
            (None, Some(dir)) => {
                let conn = rusqlite::Connection::open(dir.join("store.db")).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                if sqlite.trim().trim_end_matches(';').contains(';') {
                    conn.execute_batch(sqlite).unwrap();
                    return Vec::new();
                }
                let mut statement = conn.prepare(sqlite).unwrap();
                let columns = statement.column_count();
                let rows = statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                                    rusqlite::types::ValueRef::Real(x) => x.to_string(),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        String::from_utf8_lossy(t).into_owned()
                                    }
                                    rusqlite::types::ValueRef::Blob(_) => "<blob>".to_owned(),
                                })
                            })
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .unwrap();
                rows.collect::<rusqlite::Result<_>>().unwrap()
            }
            _ => unreachable!("a store is one engine"),
        }
    }
}

/// Declares `#[tokio::test]`s running each named `async fn(Engine)` on PostgreSQL and on the
/// embedded store: `on_both_engines!(a, b)` makes `postgres::a`, `sqlite::a`, … so the same
/// case proves the same behaviour on both.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Engine::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::Engine::Sqlite).await
                }
            )*
        }
    };
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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

/// A tiny deterministic generator (xorshift): randomized tests reproduce from their seed
/// without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// An empty directory for one test, `alga-{name}-{pid}` under the system's temporary directory
/// (emptied first: a failed earlier run with the same process id may have left files).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("alga-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Percent-encodes `text` as one URL path segment or query value (everything outside the
/// unreserved set; `.` too, so keys made of dots stay inside their segment).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `guest-sdk/iframe`, checked to be installed and built (`scripts/test.sh` does both).
pub fn iframe_sdk_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/iframe");
    assert!(
        dir.join("dist/index.js").exists() && dir.join("node_modules/playwright-core").exists(),
        "the iframe SDK is not built: run scripts/test.sh (or `npm ci && npm run build` in {})",
        dir.display()
    );
    dir
}
