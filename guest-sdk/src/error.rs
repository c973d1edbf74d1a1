//! The typed error of every storage call.

use std::fmt;

use crate::raw;

/// One JSON Schema violation reported by `validation-failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer to the offending part of the value.
    pub instance_path: String,
    /// The schema keyword that failed.
    pub keyword: String,
    /// A human-readable explanation.
    pub message: String,
}

/// Why a storage call failed. The host's cases keep their stable codes (see [`Error::code`]);
/// `Encode` and `Decode` are this crate's own serde failures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The install lacks the `alga.storage` capability.
    CapabilityDenied(String),
    /// The addressed object does not exist.
    NotFound(String),
    /// A precondition failed; `current_revision` is `None` when the key is absent.
    RevisionConflict {
        /// The key.
        key: String,
        /// Its current revision.
        current_revision: Option<u64>,
    },
    /// A quota would be exceeded.
    QuotaExceeded {
        /// `namespaces`, `keys-per-namespace` or `total-bytes`.
        quota: String,
        /// The install's limit.
        limit: u64,
        /// Usage before the rejected write.
        usage: u64,
    },
    /// The value does not satisfy the namespace's schema.
    ValidationFailed(Vec<Violation>),
    /// The pinned schema version is not the namespace's current one.
    SchemaMismatch {
        /// The pinned version.
        expected: u32,
        /// The current version, `None` without a schema.
        current: Option<u32>,
    },
    /// An argument was malformed or out of limits.
    InvalidInput {
        /// Which argument.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Storage is temporarily unreachable; retry later.
    Unavailable(String),
    /// An unexpected host failure.
    Internal(String),
    /// The value could not be serialised to JSON (nothing was sent).
    Encode(String),
    /// A stored value could not be deserialised into the requested type.
    Decode {
        /// The record's key.
        key: String,
        /// The serde error.
        message: String,
    },
}

impl Error {
    /// The stable code, as in WIT and REST (`encode` / `decode` for this crate's own cases).
    pub fn code(&self) -> &'static str {
        match self {
            Error::CapabilityDenied(_) => "capability-denied",
            Error::NotFound(_) => "not-found",
            Error::RevisionConflict { .. } => "revision-conflict",
            Error::QuotaExceeded { .. } => "quota-exceeded",
            Error::ValidationFailed(_) => "validation-failed",
            Error::SchemaMismatch { .. } => "schema-mismatch",
            Error::InvalidInput { .. } => "invalid-input",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            Error::Encode(_) => "encode",
            Error::Decode { .. } => "decode",
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CapabilityDenied(m) => write!(f, "capability denied: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::RevisionConflict {
                key,
                current_revision,
            } => write!(
                f,
                "revision conflict on {key:?} (current revision {current_revision:?})"
            ),
            Error::QuotaExceeded {
                quota,
                limit,
                usage,
            } => write!(f, "quota {quota} exceeded (limit {limit}, usage {usage})"),
            Error::ValidationFailed(v) => write!(f, "validation failed ({} violations)", v.len()),
            Error::SchemaMismatch { expected, current } => write!(
                f,
                "schema mismatch: built for version {expected}, namespace at {current:?}"
            ),
            Error::InvalidInput { field, message } => write!(f, "invalid {field}: {message}"),
            Error::Unavailable(m) => write!(f, "storage unavailable: {m}"),
            Error::Internal(m) => write!(f, "internal storage error: {m}"),
            Error::Encode(m) => write!(f, "cannot encode value as JSON: {m}"),
            Error::Decode { key, message } => {
                write!(f, "cannot decode value of {key:?}: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<raw::Error> for Error {
    fn from(e: raw::Error) -> Self {
        match e {
            raw::Error::CapabilityDenied(m) => Error::CapabilityDenied(m),
            raw::Error::NotFound(m) => Error::NotFound(m),
            raw::Error::RevisionConflict(c) => Error::RevisionConflict {
                key: c.key,
                current_revision: c.current_revision,
            },
            raw::Error::QuotaExceeded(q) => Error::QuotaExceeded {
                quota: q.quota,
                limit: q.limit,
                usage: q.usage,
            },
            raw::Error::ValidationFailed(v) => Error::ValidationFailed(
                v.into_iter()
                    .map(|v| Violation {
                        instance_path: v.instance_path,
                        keyword: v.keyword,
                        message: v.message,
                    })
                    .collect(),
            ),
            raw::Error::SchemaMismatch(s) => Error::SchemaMismatch {
                expected: s.expected,
                current: s.current,
            },
            raw::Error::InvalidInput(i) => Error::InvalidInput {
                field: i.field,
                message: i.message,
            },
            raw::Error::Unavailable(m) => Error::Unavailable(m),
            raw::Error::Internal(m) => Error::Internal(m),
        }
    }
}

/// Why a bulk put wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// Index of the failing item; `None` when the whole call failed.
    pub item: Option<usize>,
    /// What failed.
    pub error: Error,
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "bulk put item {i}: {}", self.error),
            None => write!(f, "bulk put: {}", self.error),
        }
    }
}

impl std::error::Error for BulkError {}

impl From<raw::BulkError> for BulkError {
    fn from(e: raw::BulkError) -> Self {
        BulkError {
            item: e.item.map(|i| i as usize),
            error: e.error.into(),
        }
    }
}
