//! Reads of the embedded store: single statements, scoped by tenant and install.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{db_error, micros, time};
use crate::backend::{AuditRange, ListQuery, NamespaceCounters, StoredSchema};
use crate::context::CallContext;
use crate::error::StorageError;
use crate::model::{AuditRecord, Record};

const RECORD_COLUMNS: &str =
    "key, value, metadata, revision, schema_version, expires_at, created_at, updated_at";

const AUDIT_COLUMNS: &str = "id, tenant_id, install_id, extension_id, namespace, key, operation, \
     actor, revision, bytes, request_id, occurred_at";

pub fn get(
    conn: &Connection,
    ctx: &CallContext,
    namespace: &str,
    key: &str,
    now: SystemTime,
) -> Result<Option<Record>, StorageError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records \
         WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4 \
           AND (expires_at IS NULL OR expires_at > ?5)"
    );
    conn.prepare_cached(&sql)
        .map_err(db_error)?
        .query_row(
            params![ctx.tenant_id, ctx.install_id, namespace, key, micros(now)],
            |row| record(row, true),
        )
        .optional()
        .map_err(db_error)
}

pub fn list(
    conn: &Connection,
    ctx: &CallContext,
    query: &ListQuery<'_>,
) -> Result<Vec<Record>, StorageError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records \
         WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 \
           AND key > ?4 AND key >= ?5 AND (?6 IS NULL OR key < ?6) \
           AND (expires_at IS NULL OR expires_at > ?7) \
         ORDER BY key LIMIT ?8"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = statement
        .query_map(
            params![
                ctx.tenant_id,
                ctx.install_id,
                query.namespace,
                query.after.unwrap_or(""),
                query.from.unwrap_or(""),
                query.until,
                micros(query.now),
                query.limit,
            ],
            |row| record(row, !query.keys_only),
        )
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

/// Live usage: the counters minus records already expired but not yet swept.
pub fn usage(
    conn: &Connection,
    ctx: &CallContext,
    now: SystemTime,
) -> Result<Vec<NamespaceCounters>, StorageError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT u.namespace, u.key_count - coalesce(e.keys, 0), \
                    u.byte_count - coalesce(e.bytes, 0) \
               FROM namespace_usage u \
               LEFT JOIN (SELECT namespace, count(*) AS keys, sum(size_bytes) AS bytes \
                            FROM records \
                           WHERE tenant_id = ?1 AND install_id = ?2 AND expires_at <= ?3 \
                           GROUP BY namespace) e ON e.namespace = u.namespace \
              WHERE u.tenant_id = ?1 AND u.install_id = ?2 \
                AND u.key_count - coalesce(e.keys, 0) > 0 \
              ORDER BY u.namespace",
        )
        .map_err(db_error)?;
    let rows = statement
        .query_map(params![ctx.tenant_id, ctx.install_id, micros(now)], |row| {
            let keys: i64 = row.get(1)?;
            let bytes: i64 = row.get(2)?;
            Ok(NamespaceCounters {
                namespace: row.get(0)?,
                keys: keys.max(0) as u64,
                bytes: bytes.max(0) as u64,
            })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub fn current_schema(
    conn: &Connection,
    ctx: &CallContext,
    namespace: &str,
) -> Result<Option<StoredSchema>, StorageError> {
    conn.prepare_cached(
        "SELECT version, schema FROM schemas \
         WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 \
         ORDER BY version DESC LIMIT 1",
    )
    .map_err(db_error)?
    .query_row(params![ctx.tenant_id, ctx.install_id, namespace], |row| {
        Ok(StoredSchema {
            version: row.get(0)?,
            document: row.get(1)?,
        })
    })
    .optional()
    .map_err(db_error)
}

pub fn audit_page(
    conn: &Connection,
    ctx: &CallContext,
    range: &AuditRange,
) -> Result<Vec<AuditRecord>, StorageError> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit \
         WHERE tenant_id = ?1 AND install_id = ?2 AND occurred_at >= ?3 AND occurred_at < ?4 \
           AND (occurred_at > ?5 OR (occurred_at = ?5 AND id > ?6)) \
         ORDER BY occurred_at, id LIMIT ?7"
    );
    let (after_time, after_id) = range
        .after
        .map_or((i64::MIN, i64::MIN), |(t, id)| (micros(t), id));
    let mut statement = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = statement
        .query_map(
            params![
                ctx.tenant_id,
                ctx.install_id,
                range.since.map_or(i64::MIN, micros),
                range.until.map_or(i64::MAX, micros),
                after_time,
                after_id,
                range.limit,
            ],
            audit_record,
        )
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub fn unrelayed(
    conn: &Connection,
    tenant_id: &str,
    limit: u32,
) -> Result<Vec<AuditRecord>, StorageError> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE tenant_id = ?1 AND relayed_at IS NULL \
         ORDER BY occurred_at, id LIMIT ?2"
    );
    let mut statement = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = statement
        .query_map(params![tenant_id, limit], audit_record)
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub fn tenants(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<String>, StorageError> {
    let mut statement = conn.prepare_cached(sql).map_err(db_error)?;
    let rows = statement
        .query_map(params, |row| row.get(0))
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn record(row: &Row<'_>, with_value: bool) -> rusqlite::Result<Record> {
    let revision: i64 = row.get(3)?;
    let expires_at: Option<i64> = row.get(5)?;
    Ok(Record {
        key: row.get(0)?,
        value: if with_value { row.get(1)? } else { None },
        metadata: if with_value { row.get(2)? } else { None },
        revision: revision.max(0) as u64,
        schema_version: row.get(4)?,
        expires_at: expires_at.map(time),
        created_at: time(row.get(6)?),
        updated_at: time(row.get(7)?),
    })
}

fn audit_record(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let revision: Option<i64> = row.get(8)?;
    Ok(AuditRecord {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        install_id: row.get(2)?,
        extension_id: row.get(3)?,
        namespace: row.get(4)?,
        key: row.get(5)?,
        operation: row.get(6)?,
        actor: row.get(7)?,
        revision: revision.map(|r| r.max(0) as u64),
        bytes: row.get(9)?,
        request_id: row.get(10)?,
        occurred_at: time(row.get(11)?),
    })
}

pub fn schema_versions(
    conn: &Connection,
    ctx: &CallContext,
) -> Result<Vec<(String, StoredSchema)>, StorageError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT namespace, version, schema FROM schemas \
             WHERE tenant_id = ?1 AND install_id = ?2 ORDER BY namespace, version",
        )
        .map_err(db_error)?;
    let rows = statement
        .query_map(params![ctx.tenant_id, ctx.install_id], |row| {
            Ok((
                row.get(0)?,
                StoredSchema {
                    version: row.get(1)?,
                    document: row.get(2)?,
                },
            ))
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}
