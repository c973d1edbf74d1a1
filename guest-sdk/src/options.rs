//! Options of a write, as a builder.

use std::time::Duration;

use crate::raw;

/// Options of a write: precondition, TTL, metadata and schema pin.
///
/// ```
/// use alga_storage_guest::PutOptions;
/// use std::time::Duration;
/// let create_only = PutOptions::new().if_absent().ttl(Duration::from_secs(60));
/// let update = PutOptions::new().if_revision(7).metadata(serde_json::json!({"by": "sync"}));
/// # let _ = (create_only, update);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOptions {
    precondition: Precondition,
    ttl: Option<Duration>,
    metadata: Option<serde_json::Value>,
    schema_version: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Precondition {
    #[default]
    None,
    Absent,
    Revision(u64),
}

impl PutOptions {
    /// Unconditional write, no TTL, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write only if the key does not exist (create-only).
    pub fn if_absent(mut self) -> Self {
        self.precondition = Precondition::Absent;
        self
    }

    /// Write only if the key is at `revision` (compare-and-set on revisions).
    pub fn if_revision(mut self, revision: u64) -> Self {
        self.precondition = Precondition::Revision(revision);
        self
    }

    /// Expire the record after `ttl`, rounded up to the millisecond (the contract's precision),
    /// so a record never expires before it was asked to. A zero TTL is refused.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Store JSON metadata beside the value (at most 4 KiB).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Pin the schema version this code was built for.
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }

    pub(crate) fn to_raw(&self) -> raw::PutOptions {
        raw::PutOptions {
            precondition: match self.precondition {
                Precondition::None => raw::Precondition::None,
                Precondition::Absent => raw::Precondition::Absent,
                Precondition::Revision(r) => raw::Precondition::Revision(r),
            },
            ttl_ms: self
                .ttl
                .map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)),
            metadata: self.metadata.as_ref().map(|m| m.to_string()),
            schema_version: self.schema_version,
        }
    }
}
