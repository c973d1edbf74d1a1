//! The raw baseline: tokio-postgres executing by hand the minimal SQL that does the same durable
//! work as the service, on the same pool. A write is one pipelined transaction (all statements
//! sent before any reply is awaited): the record, its audit row, and its counters when they
//! change. With `scoped`, the same SQL runs behind row level security (`crate::rls`): the session's
//! tenant and install are set first, in the same pipeline.

use std::time::SystemTime;

use alga_storage::model::Precondition;
use anyhow::Context;
use deadpool_postgres::{Client, Pool};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use crate::target::Request;
use crate::workload::{TENANT, VALUE_BYTES};

const GET: &str = "\
SELECT key, value, metadata, revision, schema_version, ttl_expires_at, created_at, updated_at
  FROM ext_storage_records
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4
   AND (ttl_expires_at IS NULL OR ttl_expires_at > $5)";

const LIST: &str = "\
SELECT key, value, metadata, revision, schema_version, ttl_expires_at, created_at, updated_at
  FROM ext_storage_records
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key > ''
   AND (ttl_expires_at IS NULL OR ttl_expires_at > $4)
 ORDER BY key LIMIT 101";

const INSERT: &str = "\
INSERT INTO ext_storage_records
    (tenant_id, extension_install_id, namespace, key, value, revision, size_bytes,
     created_at, updated_at)
VALUES ($1, $2, $3, $4, $5::text::jsonb, 1, $6, $7, $7)";

const UPDATE: &str = "\
UPDATE ext_storage_records
   SET value = $5::text::jsonb, revision = revision + 1, size_bytes = $6, updated_at = $7
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4
   AND revision = $8";

const DELETE: &str = "\
DELETE FROM ext_storage_records
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3 AND key = $4
   AND revision = $5";

/// Adds `$4` keys and `$5` bytes to a namespace's counters (negative for a delete).
const COUNT_NAMESPACE: &str = "\
UPDATE ext_storage_namespace_usage SET key_count = key_count + $4, byte_count = byte_count + $5
 WHERE tenant_id = $1 AND extension_install_id = $2 AND namespace = $3";

/// Adds `$3` bytes to an install's counter (negative for a delete).
const COUNT_INSTALL: &str = "\
UPDATE ext_storage_install_usage SET byte_count = byte_count + $3
 WHERE tenant_id = $1 AND extension_install_id = $2";

/// A write's audit row: `$5` is the operation (`put` or `delete`).
const AUDIT: &str = "\
INSERT INTO ext_storage_audit
    (tenant_id, extension_install_id, extension_id, namespace, key, operation, actor, revision,
     bytes, request_id, occurred_at)
VALUES ($1, $2, $2, $3, $4, $5, 'bench', $6, $7, NULL, $8)";

const BARE: &str = "\
INSERT INTO ext_storage_records AS r
    (tenant_id, extension_install_id, namespace, key, value, revision, size_bytes,
     created_at, updated_at)
VALUES ($1, $2, $3, $4, $5::text::jsonb, 1, $6, $7, $7)
ON CONFLICT (tenant_id, extension_install_id, namespace, key) DO UPDATE
   SET value = EXCLUDED.value, revision = r.revision + 1, size_bytes = EXCLUDED.size_bytes,
       updated_at = EXCLUDED.updated_at";

/// The prepared RLS scope statement, when `scoped` (prepared before the pipeline starts, so the
/// scope is the first statement sent).
async fn scope_statement(client: &Client, scoped: bool) -> anyhow::Result<Option<Statement>> {
    Ok(match scoped {
        true => Some(client.prepare_cached(crate::rls::SCOPE).await?),
        false => None,
    })
}

/// Sets the RLS scope of the session; joined ahead of the operation's statements so it travels
/// in the same pipeline.
async fn scope(
    client: &Client,
    statement: &Option<Statement>,
    req: &Request<'_>,
) -> anyhow::Result<()> {
    if let Some(statement) = statement {
        client
            .query_one(statement, &[&TENANT, &req.install])
            .await?;
    }
    Ok(())
}

/// A point read.
pub async fn get(pool: &Pool, req: &Request<'_>, scoped: bool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let scoped = scope_statement(&client, scoped).await?;
    let statement = client.prepare_cached(GET).await?;
    let now = SystemTime::now();
    let params: [&(dyn ToSql + Sync); 5] = [&TENANT, &req.install, &req.namespace, &req.key, &now];
    let (scoped, row) = tokio::join!(
        scope(&client, &scoped, req),
        client.query_opt(&statement, &params)
    );
    scoped?;
    row?.context("missing")?;
    Ok(())
}

/// The first keyset page of 100.
pub async fn list(pool: &Pool, req: &Request<'_>, scoped: bool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let scoped = scope_statement(&client, scoped).await?;
    let statement = client.prepare_cached(LIST).await?;
    let now = SystemTime::now();
    let params: [&(dyn ToSql + Sync); 4] = [&TENANT, &req.install, &req.namespace, &now];
    let (scoped, rows) = tokio::join!(
        scope(&client, &scoped, req),
        client.query(&statement, &params)
    );
    scoped?;
    anyhow::ensure!(rows?.len() > 100, "short page");
    Ok(())
}

/// An insert (with counters) or a revision-checked same-size update (counters unchanged), each
/// with its audit row, in one pipelined transaction.
pub async fn write(pool: &Pool, req: &Request<'_>, scoped: bool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let scope_sql = scope_statement(&client, scoped).await?;
    let now = SystemTime::now();
    let value = req.value;
    let size = (req.key.len() + req.value.len()) as i64;
    match req.precondition {
        Precondition::Revision(expected) => {
            let update = client.prepare_cached(UPDATE).await?;
            let expected = expected as i64;
            let update_params: [&(dyn ToSql + Sync); 8] = [
                &TENANT,
                &req.install,
                &req.namespace,
                &req.key,
                &value,
                &size,
                &now,
                &expected,
            ];
            let change = Change::put(expected + 1, size, 0, now);
            let updated =
                pipelined_write(&client, &scope_sql, req, (&update, &update_params), &change)
                    .await?;
            anyhow::ensure!(updated == 1, "revision conflict");
        }
        _ => {
            let insert = client.prepare_cached(INSERT).await?;
            let insert_params: [&(dyn ToSql + Sync); 7] = [
                &TENANT,
                &req.install,
                &req.namespace,
                &req.key,
                &value,
                &size,
                &now,
            ];
            let change = Change::put(1, size, 1, now);
            pipelined_write(&client, &scope_sql, req, (&insert, &insert_params), &change).await?;
        }
    }
    Ok(())
}

/// A delete at `revision`, with its counters and its audit row, in one pipelined transaction.
/// Every value the harness writes is [`VALUE_BYTES`] long, so the counters need no read first.
/// As with the update, a record not found is reported after the commit: the harness deletes
/// only keys its worker made, so that is a failed run (whose counters are then off), not a case
/// to serve.
pub async fn delete(
    pool: &Pool,
    req: &Request<'_>,
    revision: u64,
    scoped: bool,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let scope_sql = scope_statement(&client, scoped).await?;
    let delete = client.prepare_cached(DELETE).await?;
    let revision = revision as i64;
    let params: [&(dyn ToSql + Sync); 5] =
        [&TENANT, &req.install, &req.namespace, &req.key, &revision];
    let size = (req.key.len() + VALUE_BYTES) as i64;
    let change = Change {
        operation: "delete",
        revision,
        size,
        keys: -1,
        bytes: -size,
        at: SystemTime::now(),
    };
    let deleted = pipelined_write(&client, &scope_sql, req, (&delete, &params), &change).await?;
    anyhow::ensure!(deleted == 1, "{} missing at revision {revision}", req.key);
    Ok(())
}

/// What a write records in the audit trail and adds to the counters.
struct Change {
    /// The audit row's operation.
    operation: &'static str,
    /// The audit row's revision: the record's after a put, the deleted one's for a delete.
    revision: i64,
    /// The audit row's bytes: the record's size.
    size: i64,
    /// Keys added to the namespace's counter (−1 for a delete).
    keys: i64,
    /// Bytes added to both counters (negative for a delete). With no keys and no bytes, no
    /// counter row is written.
    bytes: i64,
    /// When it happened.
    at: SystemTime,
}

impl Change {
    /// A put to `revision` of a record of `size`, adding `keys` (an insert) or none.
    fn put(revision: i64, size: i64, keys: i64, at: SystemTime) -> Self {
        let bytes = if keys == 0 { 0 } else { size };
        Change {
            operation: "put",
            revision,
            size,
            keys,
            bytes,
            at,
        }
    }
}

/// A write in one pipelined transaction: the record's statement (`record`, with its
/// parameters), its audit row, and, when `change` moves them, the namespace's and install's
/// counter rows. Those, which every write of the install contends on, go last, so their locks
/// are held only until the commit (as the write function does). Returns the rows the record's
/// statement changed.
async fn pipelined_write(
    client: &Client,
    scope_sql: &Option<Statement>,
    req: &Request<'_>,
    (record, record_params): (&Statement, &[&(dyn ToSql + Sync)]),
    change: &Change,
) -> anyhow::Result<u64> {
    let audit = client.prepare_cached(AUDIT).await?;
    let counters = if change.keys != 0 || change.bytes != 0 {
        Some((
            client.prepare_cached(COUNT_NAMESPACE).await?,
            client.prepare_cached(COUNT_INSTALL).await?,
        ))
    } else {
        None
    };
    let audit_params: [&(dyn ToSql + Sync); 8] = [
        &TENANT,
        &req.install,
        &req.namespace,
        &req.key,
        &change.operation,
        &change.revision,
        &change.size,
        &change.at,
    ];
    let namespace_params: [&(dyn ToSql + Sync); 5] = [
        &TENANT,
        &req.install,
        &req.namespace,
        &change.keys,
        &change.bytes,
    ];
    let install_params: [&(dyn ToSql + Sync); 3] = [&TENANT, &req.install, &change.bytes];
    // Each future sends its statement when first polled, in the order given: one round trip.
    let counted = async {
        let Some((namespace, install)) = &counters else {
            return Ok(());
        };
        let (counted_ns, counted_install) = tokio::join!(
            client.execute(namespace, &namespace_params),
            client.execute(install, &install_params),
        );
        counted_ns?;
        counted_install?;
        anyhow::Ok(())
    };
    let (begin, scoped, recorded, audited, counted, commit) = tokio::join!(
        client.batch_execute("BEGIN"),
        scope(client, scope_sql, req),
        client.execute(record, record_params),
        client.execute(&audit, &audit_params),
        counted,
        client.batch_execute("COMMIT"),
    );
    begin?;
    scoped?;
    let recorded = recorded?;
    audited?;
    counted?;
    commit?;
    Ok(recorded)
}

/// One upsert statement, nothing else.
pub async fn bare_upsert(pool: &Pool, req: &Request<'_>) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(BARE).await?;
    let now = SystemTime::now();
    let value = req.value;
    let size = (req.key.len() + req.value.len()) as i64;
    client
        .execute(
            &statement,
            &[
                &TENANT,
                &req.install,
                &req.namespace,
                &req.key,
                &value,
                &size,
                &now,
            ],
        )
        .await?;
    Ok(())
}
