//! Limits of the contract, as named constants. Per-install quotas can be overridden through
//! [`Quotas`]; the size limits are the platform's maximums.

use std::time::Duration;

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest namespace name, in bytes (the pattern is `[a-z0-9][a-z0-9._-]{0,62}`).
pub const MAX_NAMESPACE_BYTES: usize = 63;
/// Largest value, in bytes of JSON text.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Deepest nesting of arrays and objects in a value or metadata document.
pub const MAX_JSON_DEPTH: usize = 32;
/// Largest metadata document, in bytes of JSON text.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;
/// Largest page a `list` returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size of a `list` that names none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most items in one `bulk-put`.
pub const MAX_BULK_ITEMS: usize = 100;
/// Longest time-to-live a write may ask for (ten years).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest cursor accepted by `list`, in bytes; anything longer is forged.
pub const MAX_CURSOR_BYTES: usize = 2048;

/// Per-install quotas, enforced in the same transaction as each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Namespaces holding at least one record.
    pub max_namespaces: u64,
    /// Records in one namespace.
    pub max_keys_per_namespace: u64,
    /// Bytes of keys, values and metadata across the install.
    pub max_total_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_namespaces: 100,
            max_keys_per_namespace: 100_000,
            max_total_bytes: 100 * 1024 * 1024,
        }
    }
}
