//! The storage outcomes a caller can act on, one case per stable error code.

use std::fmt;

/// Which quota a write would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quota {
    /// Namespaces per install.
    Namespaces,
    /// Keys in one namespace.
    KeysPerNamespace,
    /// Bytes across the install.
    TotalBytes,
}

impl Quota {
    /// The stable name shared by WIT and REST.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Namespaces => "namespaces",
            Quota::KeysPerNamespace => "keys-per-namespace",
            Quota::TotalBytes => "total-bytes",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "namespaces" => Some(Quota::Namespaces),
            "keys-per-namespace" => Some(Quota::KeysPerNamespace),
            "total-bytes" => Some(Quota::TotalBytes),
            _ => None,
        }
    }
}

/// One JSON Schema violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the offending part of the value.
    pub instance_path: String,
    /// The schema keyword that failed.
    pub keyword: String,
    /// A human-readable explanation.
    pub message: String,
}

/// Why a storage operation failed. Each case is a stable code shared by WIT and REST.
///
/// Exhaustive on purpose: the cases are the WIT `error` variant's, so a new one is a new contract
/// version, and the host's wasm and REST mappings must stop compiling until they handle it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The install may not use storage.
    #[error("capability denied: {0}")]
    CapabilityDenied(String),
    /// The addressed object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A write precondition failed.
    #[error("revision conflict on key {key:?} ({})", current(*current_revision))]
    RevisionConflict {
        /// The key whose precondition failed.
        key: String,
        /// Its current revision, `None` when absent.
        current_revision: Option<u64>,
    },
    /// A quota would be exceeded.
    #[error("quota exceeded: {} (limit {limit}, usage {usage})", quota.as_str())]
    QuotaExceeded {
        /// Which quota.
        quota: Quota,
        /// The install's limit.
        limit: u64,
        /// Usage before the rejected write.
        usage: u64,
    },
    /// The value does not satisfy the namespace's schema.
    #[error("validation failed ({} violations)", .0.len())]
    ValidationFailed(Vec<Violation>),
    /// The writer pinned a schema version that is not current.
    #[error("schema mismatch: expected version {expected}, current {}", version(*current))]
    SchemaMismatch {
        /// The pinned version.
        expected: u32,
        /// The current version, `None` without a schema.
        current: Option<u32>,
    },
    /// An argument is malformed or out of limits.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The argument at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Storage is temporarily unreachable; retrying may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure in the host.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StorageError {
    /// The stable code, as in WIT and REST.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::CapabilityDenied(_) => "capability-denied",
            StorageError::NotFound(_) => "not-found",
            StorageError::RevisionConflict { .. } => "revision-conflict",
            StorageError::QuotaExceeded { .. } => "quota-exceeded",
            StorageError::ValidationFailed(_) => "validation-failed",
            StorageError::SchemaMismatch { .. } => "schema-mismatch",
            StorageError::InvalidInput { .. } => "invalid-input",
            StorageError::Unavailable(_) => "unavailable",
            StorageError::Internal(_) => "internal",
        }
    }

    /// An `invalid-input` error naming the offending field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StorageError::InvalidInput {
            field,
            message: message.into(),
        }
    }
}

/// Why a bulk put wrote nothing: the error, and the item it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// Zero-based index of the failing item; `None` when the whole call failed.
    pub item: Option<u32>,
    /// What failed.
    pub error: StorageError,
}

impl BulkError {
    /// An error of the whole call, not of one item.
    pub fn whole(error: StorageError) -> Self {
        Self { item: None, error }
    }

    /// An error of item `index`.
    pub fn at(index: usize, error: StorageError) -> Self {
        Self {
            item: Some(u32::try_from(index).unwrap_or(u32::MAX)),
            error,
        }
    }
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "item {i}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl std::error::Error for BulkError {}

/// A conflict's current revision, in words: messages reach REST callers and logs.
fn current(revision: Option<u64>) -> String {
    match revision {
        Some(revision) => format!("current revision {revision}"),
        None => "the key is absent".into(),
    }
}

/// A schema version, or `none`.
fn version(version: Option<u32>) -> String {
    version.map_or_else(|| "none".into(), |v| v.to_string())
}
