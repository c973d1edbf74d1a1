//! Limits of the contract, as named constants, and the per-install [`Limits`] built from them.
//!
//! Per-install limits are supplied by the embedder with each call (the host's `CallContext::limits`),
//! because the embedder already holds the install's plan and manifest when it builds the context:
//! passing them costs no query and no cache, and a change applies from the next call. The service
//! caps them at its configured maximums (themselves capped by the contract), checks the size
//! limits before any query, and hands the quotas to the backend, which enforces them inside the
//! write's own transaction.

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
/// Longest cursor accepted by `list`, in bytes; anything longer is forged. The longest cursor a
/// list issues holds a 63-byte namespace and a 512-byte prefix and key made of `"` or `\\`
/// (each escaped to two bytes in its JSON): about 2,150 bytes, 2,870 in base64.
pub const MAX_CURSOR_BYTES: usize = 4096;
/// Expired records a write deletes from its namespace, at most, in its own transaction.
pub const TTL_SWEEP_BATCH: u32 = 100;
/// Expired records not yet swept that a write over a quota's counter reads, at most, before it
/// is refused: of its own namespace, and as many across the install's namespaces (stopping once
/// enough is found). Quotas count live records, and the look stays bounded. (The PostgreSQL
/// write functions spell the number out.)
pub const EXPIRED_LOOKUP_LIMIT: u32 = 1000;
/// Default quota: namespaces holding records, per install.
pub const DEFAULT_MAX_NAMESPACES: u64 = 100;
/// Default quota: records per namespace.
pub const DEFAULT_MAX_KEYS_PER_NAMESPACE: u64 = 100_000;
/// Default quota: bytes of keys, values and metadata per install.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 100 * 1024 * 1024;
/// Usage percentages whose crossing is reported to the observer (near-limit warnings).
pub const NEAR_LIMIT_PERCENTS: [u8; 2] = [80, 95];

/// The limits applied to one install's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes of JSON text.
    pub max_value_bytes: usize,
    /// Largest metadata document, in bytes of JSON text.
    pub max_metadata_bytes: usize,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
    /// Largest `list` page.
    pub max_page_size: u32,
    /// Most items in one `bulk-put`.
    pub max_bulk_items: usize,
    /// Quota: namespaces holding records.
    pub max_namespaces: u64,
    /// Quota: records per namespace.
    pub max_keys_per_namespace: u64,
    /// Quota: bytes of keys, values and metadata across the install.
    pub max_total_bytes: u64,
}

impl Limits {
    /// The contract's size limits with the default quotas.
    pub const DEFAULT: Limits = Limits {
        max_key_bytes: MAX_KEY_BYTES,
        max_value_bytes: MAX_VALUE_BYTES,
        max_metadata_bytes: MAX_METADATA_BYTES,
        max_json_depth: MAX_JSON_DEPTH,
        max_page_size: MAX_PAGE_SIZE,
        max_bulk_items: MAX_BULK_ITEMS,
        max_namespaces: DEFAULT_MAX_NAMESPACES,
        max_keys_per_namespace: DEFAULT_MAX_KEYS_PER_NAMESPACE,
        max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
    };

    /// The most any install may be given: the contract's size limits, unbounded quotas.
    pub const CONTRACT: Limits = Limits {
        max_namespaces: u64::MAX,
        max_keys_per_namespace: u64::MAX,
        max_total_bytes: u64::MAX,
        ..Limits::DEFAULT
    };

    /// Each limit the smaller of `self`'s and `cap`'s.
    pub fn capped_by(self, cap: &Limits) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes.min(cap.max_key_bytes),
            max_value_bytes: self.max_value_bytes.min(cap.max_value_bytes),
            max_metadata_bytes: self.max_metadata_bytes.min(cap.max_metadata_bytes),
            max_json_depth: self.max_json_depth.min(cap.max_json_depth),
            max_page_size: self.max_page_size.min(cap.max_page_size),
            max_bulk_items: self.max_bulk_items.min(cap.max_bulk_items),
            max_namespaces: self.max_namespaces.min(cap.max_namespaces),
            max_keys_per_namespace: self.max_keys_per_namespace.min(cap.max_keys_per_namespace),
            max_total_bytes: self.max_total_bytes.min(cap.max_total_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_takes_the_smaller_limit() {
        let generous = Limits {
            max_value_bytes: 10 * MAX_VALUE_BYTES,
            max_total_bytes: 1,
            ..Limits::CONTRACT
        };
        let capped = generous.capped_by(&Limits::CONTRACT);
        assert_eq!(capped.max_value_bytes, MAX_VALUE_BYTES);
        assert_eq!(capped.max_total_bytes, 1);
        assert_eq!(
            Limits::DEFAULT.capped_by(&Limits::CONTRACT),
            Limits::DEFAULT
        );
    }
}
