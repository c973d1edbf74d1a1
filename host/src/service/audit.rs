//! The audit trail for operators: paging an install's rows by time, retention in bounded
//! batches, and the outbox relay that ships rows to the central log pipeline at least once.
//! Rows are written by the backends in the mutation's transaction; this only reads and prunes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{StorageService, unix_millis};
use crate::backend::AuditRange;
use crate::context::CallContext;
use crate::error::StorageError;
use crate::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::model::{AuditPage, AuditQuery, AuditRecord};

/// Where the relay ships audit rows. `ship` must return only once the rows are durable on the
/// other side: the rows are marked shipped after it returns, and shipped again if it fails.
#[async_trait::async_trait]
pub trait AuditSink: Send {
    /// Ships `records` (one tenant's, oldest first).
    async fn ship(&mut self, records: &[AuditRecord]) -> std::io::Result<()>;
}

/// The JSON line of one audit row, as shipped by the relay and printed by the CLI.
pub fn audit_json(record: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "tenant": record.tenant_id,
        "install": record.install_id,
        "extension": record.extension_id,
        "namespace": record.namespace,
        "key": record.key,
        "operation": record.operation,
        "actor": record.actor,
        "revision": record.revision,
        "bytes": record.bytes,
        "requestId": record.request_id,
        "occurredAtMs": unix_millis(record.occurred_at),
    })
}

impl StorageService {
    /// Operator: one page of `ctx`'s install's audit trail, oldest first, within the query's
    /// time range. Needs no grant: it is not an extension's call.
    pub async fn audit(
        &self,
        ctx: &CallContext,
        query: &AuditQuery,
    ) -> Result<AuditPage, StorageError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        super::validate::page_size(limit, MAX_PAGE_SIZE)?;
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let range = AuditRange {
            since: query.since,
            until: query.until,
            after,
            limit: limit + 1,
        };
        let mut records = self.backend.audit_page(ctx, &range).await?;
        let next_cursor = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(encode_cursor)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_cursor,
        })
    }

    /// Operator: deletes audit rows older than `before`, tenant by tenant, in batches of at
    /// most `batch` rows (each a short single-shard transaction). Returns how many it deleted.
    pub async fn prune_audit(&self, before: SystemTime, batch: u32) -> Result<u64, StorageError> {
        if batch == 0 {
            return Err(StorageError::invalid("batch", "must be at least 1"));
        }
        let mut deleted = 0;
        for tenant in self.backend.audit_tenants_before(before).await? {
            loop {
                let n = self.backend.prune_audit(&tenant, before, batch).await?;
                deleted += n;
                if n < u64::from(batch) {
                    break;
                }
            }
        }
        tracing::info!(deleted, "pruned audit rows");
        Ok(deleted)
    }

    /// Relay: ships every audit row not shipped yet to `sink`, tenant by tenant in batches of
    /// `batch`, marking each batch shipped after the sink accepted it. At least once: a crash
    /// between shipping and marking ships the batch again; no row is ever skipped. Returns how
    /// many rows were shipped.
    pub async fn relay_audit(
        &self,
        sink: &mut dyn AuditSink,
        batch: u32,
    ) -> Result<u64, StorageError> {
        if batch == 0 {
            return Err(StorageError::invalid("batch", "must be at least 1"));
        }
        let mut shipped = 0;
        for tenant in self.backend.unrelayed_tenants().await? {
            loop {
                let records = self.backend.unrelayed(&tenant, batch).await?;
                if records.is_empty() {
                    break;
                }
                sink.ship(&records)
                    .await
                    .map_err(|e| StorageError::Unavailable(format!("audit sink: {e}")))?;
                let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
                self.backend
                    .mark_relayed(&tenant, &ids, SystemTime::now())
                    .await?;
                shipped += records.len() as u64;
                if records.len() < batch as usize {
                    break;
                }
            }
        }
        Ok(shipped)
    }
}

/// `<microseconds since the epoch>.<id>`, base64url.
fn encode_cursor(record: &AuditRecord) -> String {
    let micros = record
        .occurred_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    URL_SAFE_NO_PAD.encode(format!("{micros}.{}", record.id))
}

fn decode_cursor(cursor: &str) -> Result<(SystemTime, i64), StorageError> {
    let invalid = || StorageError::invalid("cursor", "not a cursor of this audit trail");
    let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
    let micros: u64 = micros.parse().map_err(|_| invalid())?;
    let id: i64 = id.parse().map_err(|_| invalid())?;
    Ok((UNIX_EPOCH + Duration::from_micros(micros), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let record = AuditRecord {
            id: -42,
            tenant_id: "t".into(),
            install_id: "i".into(),
            extension_id: "e".into(),
            namespace: None,
            key: None,
            operation: "put".into(),
            actor: "a".into(),
            revision: None,
            bytes: None,
            request_id: None,
            occurred_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        };
        let cursor = encode_cursor(&record);
        assert_eq!(decode_cursor(&cursor).unwrap(), (record.occurred_at, -42));
        for bad in ["", "!!", "bm90IGEgY3Vyc29y", &URL_SAFE_NO_PAD.encode("1.x")] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
