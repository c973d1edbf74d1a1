//! Writes of the embedded store: each one immediate transaction doing what the PostgreSQL
//! functions do (migrations/0002): preconditions, records, TTL sweep, counters with quotas, and
//! an audit row per mutation. A refusal returns before commit, so nothing of it remains.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{db_error, micros, time};
use crate::backend::{
    CounterChange, CounterDrift, DriftScope, StoredSchema, WriteBatch, WriteOutcome, record_size,
};
use crate::context::CallContext;
use crate::error::{BulkError, Quota, StorageError};
use crate::limits::{EXPIRED_LOOKUP_LIMIT, Limits};
use crate::model::{Precondition, Record, WriteResult};

/// One audit row.
struct Audit<'a> {
    namespace: Option<&'a str>,
    key: Option<&'a str>,
    operation: &'a str,
    actor: &'a str,
    revision: Option<i64>,
    bytes: i64,
}

fn audit(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    row: Audit<'_>,
    now: SystemTime,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (tenant_id, install_id, extension_id, namespace, key, operation, \
         actor, revision, bytes, request_id, occurred_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        ctx.tenant_id,
        ctx.install_id,
        ctx.extension_id,
        row.namespace,
        row.key,
        row.operation,
        row.actor,
        row.revision,
        row.bytes,
        ctx.request_id,
        micros(now)
    ])?;
    Ok(())
}

/// The current state of a key: (revision, size, expired).
fn current(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    namespace: &str,
    key: &str,
    now: SystemTime,
) -> rusqlite::Result<Option<Stored>> {
    tx.prepare_cached(
        "SELECT revision, size_bytes, expires_at, updated_at FROM records \
         WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
    )?
    .query_row(
        params![ctx.tenant_id, ctx.install_id, namespace, key],
        |row| {
            let expires_at: Option<i64> = row.get(2)?;
            Ok(Stored {
                revision: row.get(0)?,
                size: row.get(1)?,
                expired: expires_at.is_some_and(|e| e <= micros(now)),
                updated_at: row.get(3)?,
            })
        },
    )
    .optional()
}

/// The stored version of a key, as a write or delete finds it.
struct Stored {
    revision: i64,
    size: i64,
    /// Past its TTL: replaced or removed as if absent.
    expired: bool,
    /// Microseconds since the epoch.
    updated_at: i64,
}

impl Stored {
    /// The time of a write replacing this version: `now`, unless this version carries a later
    /// one. A key's time never goes back: a write that waited for a later-clocked write of the
    /// key (host clocks are read before the wait) takes that write's time, so its updated_at and
    /// audit row follow the revisions.
    fn next_time(&self, now: SystemTime) -> i64 {
        micros(now).max(self.updated_at)
    }
}

/// Whether `precondition` holds for a key whose visible revision is `visible` (`None`: absent
/// or expired).
fn holds(precondition: Precondition, visible: Option<i64>) -> bool {
    match precondition {
        Precondition::None => true,
        Precondition::Absent => visible.is_none(),
        Precondition::Revision(r) => visible == Some(r as i64),
    }
}

pub fn put(
    conn: &mut Connection,
    ctx: &CallContext,
    batch: &WriteBatch<'_>,
) -> Result<WriteOutcome, BulkError> {
    let whole = |e: rusqlite::Error| BulkError::whole(db_error(e));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(whole)?;
    let ns = batch.namespace;
    let now = batch.now;
    let current_schema: Option<u32> = tx
        .prepare_cached(
            "SELECT max(version) FROM schemas \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3",
        )
        .and_then(|mut s| s.query_row(params![ctx.tenant_id, ctx.install_id, ns], |r| r.get(0)))
        .map_err(whole)?;
    if current_schema != batch.schema_version {
        // The service reloads the schema and validates again.
        return Err(BulkError::whole(StorageError::SchemaMismatch {
            expected: batch.schema_version.unwrap_or(0),
            current: current_schema,
        }));
    }

    let mut change = Change::default();
    let mut results = Vec::with_capacity(batch.items.len());
    for (index, item) in batch.items.iter().enumerate() {
        let state = current(&tx, ctx, ns, item.key, now).map_err(whole)?;
        let visible = state.as_ref().filter(|s| !s.expired).map(|s| s.revision);
        if !holds(item.precondition, visible) {
            return Err(BulkError::at(
                index,
                StorageError::RevisionConflict {
                    key: item.key.to_owned(),
                    current_revision: visible.map(|r| r as u64),
                },
            ));
        }
        let size = item.size_bytes as i64;
        let expires_at = item.expires_at.map(micros);
        let (revision, created, written_at) = match state {
            Some(old) => {
                let (expired, written_at) = (old.expired, old.next_time(now));
                let revision = if expired { 1 } else { old.revision + 1 };
                tx.prepare_cached(
                    "UPDATE records SET value = ?5, metadata = ?6, revision = ?7, \
                     schema_version = ?8, size_bytes = ?9, expires_at = ?10, \
                     created_at = CASE WHEN ?11 THEN ?12 ELSE created_at END, updated_at = ?13 \
                     WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        ctx.tenant_id,
                        ctx.install_id,
                        ns,
                        item.key,
                        item.value,
                        item.metadata,
                        revision,
                        batch.schema_version,
                        size,
                        expires_at,
                        expired,
                        micros(now),
                        written_at
                    ])
                })
                .map_err(whole)?;
                change.bytes += size - old.size;
                if expired {
                    change.added_keys += 1;
                    change.added_bytes += size;
                } else {
                    change.added_bytes += size - old.size;
                }
                (revision, expired, written_at)
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO records (tenant_id, install_id, namespace, key, value, metadata, \
                     revision, schema_version, size_bytes, expires_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9, ?10, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        ctx.tenant_id,
                        ctx.install_id,
                        ns,
                        item.key,
                        item.value,
                        item.metadata,
                        batch.schema_version,
                        size,
                        expires_at,
                        micros(now)
                    ])
                })
                .map_err(whole)?;
                change.keys += 1;
                change.bytes += size;
                change.added_keys += 1;
                change.added_bytes += size;
                (1, true, micros(now))
            }
        };
        let row = Audit {
            namespace: Some(ns),
            key: Some(item.key),
            operation: "put",
            actor: &ctx.actor,
            revision: Some(revision),
            bytes: size,
        };
        audit(&tx, ctx, row, time(written_at)).map_err(whole)?;
        results.push(WriteResult {
            key: item.key.to_owned(),
            revision: revision as u64,
            created,
        });
    }

    let (freed_keys, freed_bytes) = sweep(&tx, ctx, ns, now, batch.sweep_limit).map_err(whole)?;
    change.keys -= freed_keys;
    change.bytes -= freed_bytes;
    let counters = if change.visits_counters() {
        Some(count(&tx, ctx, ns, &change, now, Some(&batch.limits)).map_err(BulkError::whole)?)
    } else {
        None
    };
    tx.commit().map_err(whole)?;
    Ok(WriteOutcome { results, counters })
}

pub fn delete(
    conn: &mut Connection,
    ctx: &CallContext,
    ns: &str,
    key: &str,
    precondition: Precondition,
    now: SystemTime,
    sweep_limit: u32,
) -> Result<bool, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let state = current(&tx, ctx, ns, key, now).map_err(db_error)?;
    let visible = state.as_ref().filter(|s| !s.expired).map(|s| s.revision);
    if !holds(precondition, visible) {
        return Err(StorageError::RevisionConflict {
            key: key.to_owned(),
            current_revision: visible.map(|r| r as u64),
        });
    }
    let mut change = Change::default();
    if let Some(old) = state {
        tx.prepare_cached(
            "DELETE FROM records \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
        )
        .and_then(|mut s| s.execute(params![ctx.tenant_id, ctx.install_id, ns, key]))
        .map_err(db_error)?;
        change.keys = -1;
        change.bytes = -old.size;
        // An expired record is removed as TTL cleanup, not as the caller's delete.
        let row = Audit {
            namespace: Some(ns),
            key: Some(key),
            operation: if old.expired { "expire" } else { "delete" },
            actor: if old.expired {
                "system:ttl"
            } else {
                &ctx.actor
            },
            revision: Some(old.revision),
            bytes: old.size,
        };
        audit(&tx, ctx, row, time(old.next_time(now))).map_err(db_error)?;
    }
    let (freed_keys, freed_bytes) = sweep(&tx, ctx, ns, now, sweep_limit).map_err(db_error)?;
    change.keys -= freed_keys;
    change.bytes -= freed_bytes;
    if change.visits_counters() {
        // Only shrinks: no quota can trip.
        count(&tx, ctx, ns, &change, now, None)?;
    }
    tx.commit().map_err(db_error)?;
    Ok(visible.is_some())
}

/// Deletes up to `limit` expired records of the namespace (audited as `system:ttl`); returns
/// the keys and bytes freed.
fn sweep(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    ns: &str,
    now: SystemTime,
    limit: u32,
) -> rusqlite::Result<(i64, i64)> {
    let expired: Vec<(String, i64, i64)> = tx
        .prepare_cached(
            "SELECT key, revision, size_bytes FROM records \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 \
               AND expires_at IS NOT NULL AND expires_at <= ?4 \
             ORDER BY expires_at LIMIT ?5",
        )?
        .query_map(
            params![ctx.tenant_id, ctx.install_id, ns, micros(now), limit],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    let (mut keys, mut bytes) = (0, 0);
    for (key, revision, size) in &expired {
        tx.prepare_cached(
            "DELETE FROM records \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
        )?
        .execute(params![ctx.tenant_id, ctx.install_id, ns, key])?;
        let row = Audit {
            namespace: Some(ns),
            key: Some(key),
            operation: "expire",
            actor: "system:ttl",
            revision: Some(*revision),
            bytes: *size,
        };
        audit(tx, ctx, row, now)?;
        keys += 1;
        bytes += size;
    }
    Ok((keys, bytes))
}

/// A write's effect on usage: how the counters change, and how much live usage grows (records
/// created; bytes beyond those of the live records replaced). The two differ because the
/// counters also hold records expired but not yet swept.
#[derive(Default)]
struct Change {
    keys: i64,
    bytes: i64,
    added_keys: i64,
    added_bytes: i64,
}

impl Change {
    /// Whether the counters are to be updated or checked: same-size overwrites leave them be.
    fn visits_counters(&self) -> bool {
        self.keys != 0 || self.bytes != 0 || self.added_keys > 0 || self.added_bytes > 0
    }
}

/// Applies a change to the namespace and install counters and, on growth, enforces `limits`.
///
/// Quotas count live records, as usage does. A write that grows live usage and leaves a counter
/// over its limit has the expired records not yet swept subtracted (a write sweeps only its own
/// namespace, a batch at a time) before it is refused; the refusal reports the live usage. Live
/// usage never exceeds the counters: a write within them, the usual case, never looks, and the
/// look is bounded ([`EXPIRED_LOOKUP_LIMIT`] records of the write's namespace, as many across
/// the install).
fn count(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    ns: &str,
    change: &Change,
    now: SystemTime,
    limits: Option<&Limits>,
) -> Result<CounterChange, StorageError> {
    let (delta_keys, delta_bytes) = (change.keys, change.bytes);
    let (old_keys, old_ns_bytes): (i64, i64) = tx
        .prepare_cached(
            "SELECT key_count, byte_count FROM namespace_usage \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![ctx.tenant_id, ctx.install_id, ns], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_error)?
        .unwrap_or((0, 0));
    let keys = old_keys + delta_keys;
    tx.prepare_cached(
        "INSERT INTO namespace_usage (tenant_id, install_id, namespace, key_count, byte_count) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE \
         SET key_count = excluded.key_count, byte_count = excluded.byte_count",
    )
    .and_then(|mut s| {
        s.execute(params![
            ctx.tenant_id,
            ctx.install_id,
            ns,
            keys,
            old_ns_bytes + delta_bytes
        ])
    })
    .map_err(db_error)?;
    let namespaces_delta = match (old_keys, keys) {
        (0, k) if k > 0 => 1,
        (o, 0) if o > 0 => -1,
        _ => 0,
    };
    let (old_namespaces, old_bytes): (i64, i64) = tx
        .prepare_cached(
            "SELECT namespace_count, byte_count FROM install_usage \
             WHERE tenant_id = ?1 AND install_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![ctx.tenant_id, ctx.install_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_error)?
        .unwrap_or((0, 0));
    let (namespaces, total_bytes) = (old_namespaces + namespaces_delta, old_bytes + delta_bytes);
    tx.prepare_cached(
        "INSERT INTO install_usage (tenant_id, install_id, namespace_count, byte_count) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE \
         SET namespace_count = excluded.namespace_count, byte_count = excluded.byte_count",
    )
    .and_then(|mut s| {
        s.execute(params![
            ctx.tenant_id,
            ctx.install_id,
            namespaces,
            total_bytes
        ])
    })
    .map_err(db_error)?;
    if let Some(limits) = limits {
        let exceeded = |quota, limit: u64, usage: i64| StorageError::QuotaExceeded {
            quota,
            limit,
            usage: usage.max(0) as u64,
        };
        let max_keys = capped(limits.max_keys_per_namespace);
        let max_namespaces = capped(limits.max_namespaces);
        // A namespace's first live records add a namespace in use (its records that had
        // expired, unswept, did not count); other namespaces count if any record is live.
        let mut new_namespace = false;
        if change.added_keys > 0 && (keys > max_keys || namespaces > max_namespaces) {
            let lookup = i64::from(EXPIRED_LOOKUP_LIMIT);
            let live_keys = keys - expired(tx, ctx, ns, now, lookup).map_err(db_error)?.0;
            if live_keys > max_keys {
                return Err(exceeded(
                    Quota::KeysPerNamespace,
                    limits.max_keys_per_namespace,
                    live_keys - change.added_keys,
                ));
            }
            new_namespace = live_keys == change.added_keys;
        }
        let max_bytes = capped(limits.max_total_bytes);
        let namespaces_over = new_namespace && namespaces > max_namespaces;
        let bytes_over = change.added_bytes > 0 && total_bytes > max_bytes;
        if namespaces_over || bytes_over {
            let needed = (
                if namespaces_over {
                    namespaces - max_namespaces
                } else {
                    0
                },
                if bytes_over {
                    total_bytes - max_bytes
                } else {
                    0
                },
            );
            let (gone, expired_bytes) =
                expired_in_install(tx, ctx, now, needed).map_err(db_error)?;
            if namespaces_over && namespaces - gone > max_namespaces {
                let usage = namespaces - gone - 1;
                return Err(exceeded(Quota::Namespaces, limits.max_namespaces, usage));
            }
            if bytes_over && total_bytes - expired_bytes > max_bytes {
                let usage = total_bytes - expired_bytes - change.added_bytes;
                return Err(exceeded(Quota::TotalBytes, limits.max_total_bytes, usage));
            }
        }
    }
    Ok(CounterChange {
        namespace_keys: keys.max(0) as u64,
        namespace_keys_delta: delta_keys,
        total_bytes: total_bytes.max(0) as u64,
        total_bytes_delta: delta_bytes,
        namespaces: namespaces.max(0) as u64,
        namespaces_delta,
    })
}

/// A quota as a counter value.
fn capped(limit: u64) -> i64 {
    limit.min(i64::MAX as u64) as i64
}

/// Keys and bytes of up to `limit` records of `ns` expired but not yet swept.
fn expired(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    ns: &str,
    now: SystemTime,
    limit: i64,
) -> rusqlite::Result<(i64, i64)> {
    tx.prepare_cached(
        "SELECT count(*), coalesce(sum(size_bytes), 0) FROM \
           (SELECT size_bytes FROM records \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 \
               AND expires_at IS NOT NULL AND expires_at <= ?4 LIMIT ?5)",
    )?
    .query_row(
        params![ctx.tenant_id, ctx.install_id, ns, micros(now), limit],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Expired records not yet swept across the install, for a write left over a quota's counter:
/// the namespaces found to hold only expired records, and the bytes of those found. The
/// namespaces are read in order until `namespaces_needed` and `bytes_needed` are found or
/// [`EXPIRED_LOOKUP_LIMIT`] records have been read.
fn expired_in_install(
    tx: &Transaction<'_>,
    ctx: &CallContext,
    now: SystemTime,
    (namespaces_needed, bytes_needed): (i64, i64),
) -> rusqlite::Result<(i64, i64)> {
    let counted: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT namespace, key_count FROM namespace_usage \
             WHERE tenant_id = ?1 AND install_id = ?2 AND key_count > 0 ORDER BY namespace",
        )?
        .query_map(params![ctx.tenant_id, ctx.install_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let (mut budget, mut namespaces, mut bytes) = (i64::from(EXPIRED_LOOKUP_LIMIT), 0, 0);
    for (ns, key_count) in counted {
        if budget == 0 || (namespaces >= namespaces_needed && bytes >= bytes_needed) {
            break;
        }
        let (expired_keys, expired_bytes) = expired(tx, ctx, &ns, now, budget)?;
        budget -= expired_keys;
        namespaces += i64::from(expired_keys >= key_count);
        bytes += expired_bytes;
    }
    Ok((namespaces, bytes))
}

pub fn register_schema(
    conn: &mut Connection,
    ctx: &CallContext,
    ns: &str,
    document: &str,
    now: SystemTime,
) -> Result<u32, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let version: u32 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM schemas \
             WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3",
            params![ctx.tenant_id, ctx.install_id, ns],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    tx.execute(
        "INSERT INTO schemas (tenant_id, install_id, namespace, version, schema, registered_by, \
         registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            ctx.tenant_id,
            ctx.install_id,
            ns,
            version,
            document,
            ctx.actor,
            micros(now)
        ],
    )
    .map_err(db_error)?;
    let row = Audit {
        namespace: Some(ns),
        key: None,
        operation: "schema-register",
        actor: &ctx.actor,
        revision: Some(i64::from(version)),
        bytes: document.len() as i64,
    };
    audit(&tx, ctx, row, now).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(version)
}

pub fn recount(
    conn: &mut Connection,
    ctx: &CallContext,
    apply: bool,
    now: SystemTime,
) -> Result<Vec<CounterDrift>, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    // (namespace, counted keys, actual keys, counted bytes, actual bytes), namespace order.
    let rows: Vec<(String, i64, i64, i64, i64)> = tx
        .prepare(
            "SELECT n.namespace, coalesce(u.key_count, 0), coalesce(a.keys, 0), \
                    coalesce(u.byte_count, 0), coalesce(a.bytes, 0) \
               FROM (SELECT namespace FROM records WHERE tenant_id = ?1 AND install_id = ?2 \
                     UNION \
                     SELECT namespace FROM namespace_usage WHERE tenant_id = ?1 AND install_id = ?2) n \
               LEFT JOIN (SELECT namespace, count(*) AS keys, sum(size_bytes) AS bytes FROM records \
                           WHERE tenant_id = ?1 AND install_id = ?2 GROUP BY namespace) a \
                      ON a.namespace = n.namespace \
               LEFT JOIN namespace_usage u ON u.tenant_id = ?1 AND u.install_id = ?2 \
                      AND u.namespace = n.namespace \
              ORDER BY n.namespace",
        )
        .and_then(|mut s| {
            s.query_map(params![ctx.tenant_id, ctx.install_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let mut drift = Vec::new();
    let (mut namespaces, mut bytes) = (0i64, 0i64);
    for (ns, counted_keys, actual_keys, counted_bytes, actual_bytes) in rows {
        if actual_keys > 0 {
            namespaces += 1;
        }
        bytes += actual_bytes;
        if counted_keys == actual_keys && counted_bytes == actual_bytes {
            continue;
        }
        if apply {
            tx.execute(
                "INSERT INTO namespace_usage (tenant_id, install_id, namespace, key_count, \
                 byte_count) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE \
                 SET key_count = excluded.key_count, byte_count = excluded.byte_count",
                params![ctx.tenant_id, ctx.install_id, ns, actual_keys, actual_bytes],
            )
            .map_err(db_error)?;
            let row = Audit {
                namespace: Some(&ns),
                key: None,
                operation: "counter-repair",
                actor: &ctx.actor,
                revision: None,
                bytes: actual_bytes - counted_bytes,
            };
            audit(&tx, ctx, row, now).map_err(db_error)?;
        }
        drift.push(CounterDrift {
            scope: DriftScope::Namespace(ns),
            counted_keys,
            actual_keys,
            counted_bytes,
            actual_bytes,
        });
    }
    let (counted_namespaces, counted_bytes): (i64, i64) = tx
        .query_row(
            "SELECT namespace_count, byte_count FROM install_usage \
             WHERE tenant_id = ?1 AND install_id = ?2",
            params![ctx.tenant_id, ctx.install_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_error)?
        .unwrap_or((0, 0));
    if counted_namespaces != namespaces || counted_bytes != bytes {
        if apply {
            tx.execute(
                "INSERT INTO install_usage (tenant_id, install_id, namespace_count, byte_count) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE \
                 SET namespace_count = excluded.namespace_count, byte_count = excluded.byte_count",
                params![ctx.tenant_id, ctx.install_id, namespaces, bytes],
            )
            .map_err(db_error)?;
            let row = Audit {
                namespace: None,
                key: None,
                operation: "counter-repair",
                actor: &ctx.actor,
                revision: None,
                bytes: bytes - counted_bytes,
            };
            audit(&tx, ctx, row, now).map_err(db_error)?;
        }
        drift.push(CounterDrift {
            scope: DriftScope::Install,
            counted_keys: counted_namespaces,
            actual_keys: namespaces,
            counted_bytes,
            actual_bytes: bytes,
        });
    }
    tx.commit().map_err(db_error)?;
    Ok(drift)
}

pub fn restore_records(
    conn: &mut Connection,
    ctx: &CallContext,
    ns: &str,
    records: &[Record],
    now: SystemTime,
) -> Result<(), StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    for record in records {
        let size = record_size(record) as i64;
        tx.prepare_cached(
            "INSERT INTO records (tenant_id, install_id, namespace, key, value, metadata, \
             revision, schema_version, size_bytes, expires_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT DO UPDATE SET value = excluded.value, metadata = excluded.metadata, \
             revision = excluded.revision, schema_version = excluded.schema_version, \
             size_bytes = excluded.size_bytes, expires_at = excluded.expires_at, \
             created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .and_then(|mut s| {
            s.execute(params![
                ctx.tenant_id,
                ctx.install_id,
                ns,
                record.key,
                record.value.as_deref().unwrap_or("null"),
                record.metadata,
                record.revision as i64,
                record.schema_version,
                size,
                record.expires_at.map(micros),
                micros(record.created_at),
                micros(record.updated_at)
            ])
        })
        .map_err(db_error)?;
        let row = Audit {
            namespace: Some(ns),
            key: Some(&record.key),
            operation: "import",
            actor: &ctx.actor,
            revision: Some(record.revision as i64),
            bytes: size,
        };
        audit(&tx, ctx, row, now).map_err(db_error)?;
    }
    tx.commit().map_err(db_error)
}

pub fn restore_schema(
    conn: &mut Connection,
    ctx: &CallContext,
    ns: &str,
    schema: &StoredSchema,
    now: SystemTime,
) -> Result<bool, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let added = tx
        .execute(
            "INSERT INTO schemas (tenant_id, install_id, namespace, version, schema, \
             registered_by, registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT DO NOTHING",
            params![
                ctx.tenant_id,
                ctx.install_id,
                ns,
                schema.version,
                schema.document,
                ctx.actor,
                micros(now)
            ],
        )
        .map_err(db_error)?;
    if added == 1 {
        let row = Audit {
            namespace: Some(ns),
            key: None,
            operation: "schema-import",
            actor: &ctx.actor,
            revision: Some(i64::from(schema.version)),
            bytes: schema.document.len() as i64,
        };
        audit(&tx, ctx, row, now).map_err(db_error)?;
    }
    tx.commit().map_err(db_error)?;
    Ok(added == 1)
}
