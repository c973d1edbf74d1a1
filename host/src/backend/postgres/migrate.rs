//! The migration runner: numbered `up`/`down` SQL pairs from `migrations/`, applied one
//! transaction each, recorded in `alga_storage_migrations`, under an advisory lock so that hosts
//! starting together cannot race.

use std::time::SystemTime;

use tokio_postgres::Client;

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; applied in ascending order.
    pub version: i32,
    /// A short name.
    pub name: &'static str,
    /// SQL that applies it.
    pub up: &'static str,
    /// SQL that reverts it.
    pub down: &'static str,
}

macro_rules! migration {
    ($version:literal, $file_stem:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!("../../../../migrations/", $file_stem, ".up.sql")),
            down: include_str!(concat!("../../../../migrations/", $file_stem, ".down.sql")),
        }
    };
}

/// Every migration, in order. A unit test checks this matches the files in `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_tables", "tables"),
    migration!(2, "0002_write_functions", "write_functions"),
];

/// Key of the advisory lock held while migrating ("alga-mig" in ASCII).
const LOCK_KEY: i64 = 0x616c_6761_2d6d_6967;

const CREATE_HISTORY: &str = "\
CREATE TABLE IF NOT EXISTS alga_storage_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// A migration failure.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A migration's SQL failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Step {
        /// The migration.
        version: i32,
        /// Its name.
        name: &'static str,
        /// The error.
        source: tokio_postgres::Error,
    },
    /// The database has migrations this host does not know (it is older than the schema).
    #[error("the database has migration {0}, which this build does not know; upgrade the host")]
    UnknownVersion(i32),
}

/// Whether one migration is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's number.
    pub version: i32,
    /// Its name.
    pub name: &'static str,
    /// When it was applied, if it was.
    pub applied_at: Option<SystemTime>,
}

/// Applies every pending migration; returns the versions applied.
pub async fn up(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    with_lock(client, async |client| {
        let applied = applied_versions(client).await?;
        let mut done = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let tx = client.transaction().await?;
            tx.batch_execute(m.up)
                .await
                .map_err(|source| MigrateError::Step {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
            tx.execute(
                "INSERT INTO alga_storage_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
            done.push(m.version);
        }
        Ok(done)
    })
    .await
}

/// Reverts applied migrations above `target` (0 reverts all), newest first; returns the versions
/// reverted.
pub async fn down(client: &mut Client, target: i32) -> Result<Vec<i32>, MigrateError> {
    with_lock(client, async |client| {
        let applied = applied_versions(client).await?;
        let mut done = Vec::new();
        for m in MIGRATIONS
            .iter()
            .rev()
            .filter(|m| m.version > target && applied.contains(&m.version))
        {
            let tx = client.transaction().await?;
            tx.batch_execute(m.down)
                .await
                .map_err(|source| MigrateError::Step {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
            tx.execute(
                "DELETE FROM alga_storage_migrations WHERE version = $1",
                &[&m.version],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "reverted migration");
            done.push(m.version);
        }
        Ok(done)
    })
    .await
}

/// The status of every known migration.
pub async fn status(client: &mut Client) -> Result<Vec<MigrationStatus>, MigrateError> {
    client.batch_execute(CREATE_HISTORY).await?;
    let rows = client
        .query(
            "SELECT version, applied_at FROM alga_storage_migrations ORDER BY version",
            &[],
        )
        .await?;
    let applied: Vec<(i32, SystemTime)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if let Some((unknown, _)) = applied
        .iter()
        .find(|(v, _)| !MIGRATIONS.iter().any(|m| m.version == *v))
    {
        return Err(MigrateError::UnknownVersion(*unknown));
    }
    Ok(MIGRATIONS
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            name: m.name,
            applied_at: applied
                .iter()
                .find(|(v, _)| *v == m.version)
                .map(|(_, at)| *at),
        })
        .collect())
}

async fn applied_versions(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    let rows = client
        .query("SELECT version FROM alga_storage_migrations", &[])
        .await?;
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(unknown) = versions
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|m| m.version == **v))
    {
        return Err(MigrateError::UnknownVersion(*unknown));
    }
    Ok(versions)
}

/// Runs `f` holding the migration advisory lock (session-level: released on error too, and by
/// the server if the connection dies).
async fn with_lock<T>(
    client: &mut Client,
    f: impl AsyncFnOnce(&mut Client) -> Result<T, MigrateError>,
) -> Result<T, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = match client.batch_execute(CREATE_HISTORY).await {
        Ok(()) => f(client).await,
        Err(e) => Err(e.into()),
    };
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let value = result?;
    unlocked?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `migrations/` is listed, in order, with both halves.
    #[test]
    fn list_matches_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| {
                [
                    format!("{:04}_{}.down.sql", m.version, m.name),
                    format!("{:04}_{}.up.sql", m.version, m.name),
                ]
            })
            .collect();
        assert_eq!(files, expected);
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
