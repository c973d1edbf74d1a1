//! Mapping database failures onto storage errors. Outcomes raised by the write functions carry
//! a stable SQLSTATE and a JSON detail; connectivity failures become `unavailable`; anything else
//! is `internal` and is logged, never shown to the caller.

use serde::Deserialize;
use tokio_postgres::error::SqlState;

use crate::error::{BulkError, Quota, StorageError};

/// SQLSTATE raised by the write functions for a failed precondition.
const REVISION_CONFLICT: &str = "AS409";
/// SQLSTATE raised by the write functions for an exceeded quota.
const QUOTA_EXCEEDED: &str = "AS429";
/// SQLSTATE raised by the write function when the values were validated against another schema
/// version than the namespace's current one.
const STALE_SCHEMA: &str = "AS412";

#[derive(Deserialize)]
struct ConflictDetail {
    item: u32,
    current_revision: Option<i64>,
}

#[derive(Deserialize)]
struct StaleSchemaDetail {
    current_version: Option<i32>,
}

#[derive(Deserialize)]
struct QuotaDetail {
    quota: String,
    limit: i64,
    usage: i64,
}

/// Maps an error of a write; `keys` are the batch's keys, to name the conflicting one, and
/// `validated_with` the schema version the service validated against.
pub fn write_error(
    error: tokio_postgres::Error,
    keys: &[&str],
    validated_with: Option<u32>,
) -> BulkError {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        if code == REVISION_CONFLICT {
            if let Some(detail) = db
                .detail()
                .and_then(|d| serde_json::from_str::<ConflictDetail>(d).ok())
            {
                let item = detail.item as usize;
                return BulkError::at(
                    item,
                    StorageError::RevisionConflict {
                        key: keys.get(item).copied().unwrap_or_default().to_owned(),
                        current_revision: detail.current_revision.map(|r| r as u64),
                    },
                );
            }
        } else if code == STALE_SCHEMA
            && let Some(detail) = db
                .detail()
                .and_then(|d| serde_json::from_str::<StaleSchemaDetail>(d).ok())
        {
            // The service treats this as "reload the schema and validate again".
            return BulkError::whole(StorageError::SchemaMismatch {
                expected: validated_with.unwrap_or(0),
                current: detail.current_version.map(|v| v as u32),
            });
        } else if code == QUOTA_EXCEEDED
            && let Some(detail) = db
                .detail()
                .and_then(|d| serde_json::from_str::<QuotaDetail>(d).ok())
            && let Some(quota) = Quota::parse(&detail.quota)
        {
            return BulkError::whole(StorageError::QuotaExceeded {
                quota,
                limit: detail.limit.max(0) as u64,
                usage: detail.usage.max(0) as u64,
            });
        }
    }
    BulkError::whole(query_error(error))
}

/// Maps an error of any statement to `unavailable` (retryable) or `internal`.
pub fn query_error(error: tokio_postgres::Error) -> StorageError {
    match error.as_db_error() {
        None => {
            // No server response: the connection broke or could not be used.
            tracing::warn!(%error, "database connection error");
            StorageError::Unavailable("the database connection failed".into())
        }
        Some(db) if retryable(db.code()) => {
            tracing::warn!(
                code = db.code().code(),
                message = db.message(),
                "retryable database error"
            );
            StorageError::Unavailable(format!(
                "the database is temporarily unavailable (SQLSTATE {})",
                db.code().code()
            ))
        }
        Some(db) => {
            tracing::error!(
                code = db.code().code(),
                message = db.message(),
                "database error"
            );
            StorageError::Internal(format!(
                "the database rejected the operation (SQLSTATE {})",
                db.code().code()
            ))
        }
    }
}

/// Maps a failure to get a pooled connection.
pub fn pool_error(error: deadpool_postgres::PoolError) -> StorageError {
    tracing::warn!(%error, "database pool error");
    StorageError::Unavailable("no database connection is available".into())
}

fn retryable(code: &SqlState) -> bool {
    let code = code.code();
    // 08 connection exceptions, 53 insufficient resources, 57 operator intervention (shutdown,
    // statement timeout / cancel), 40001 serialization failure, 40P01 deadlock.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "40001"
        || code == "40P01"
}
