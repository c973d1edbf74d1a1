//! What the harness runs: workloads, how installs are chosen, and the keys each worker owns.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Preloaded records per install (each worker owns a disjoint subset for revision updates).
pub const PRELOADED_KEYS: usize = 128;
/// The namespace every workload uses, without a schema.
pub const NAMESPACE: &str = "bench";
/// The namespace of the `update-validated` workload, with [`VALUE_SCHEMA`] registered.
pub const VALIDATED_NAMESPACE: &str = "bench-validated";
/// A realistic schema of the benchmark's values: every write to [`VALIDATED_NAMESPACE`] is
/// validated against it.
pub const VALUE_SCHEMA: &str = r#"{
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["n", "data"],
    "additionalProperties": false,
    "properties": {
        "n": {"type": "string", "pattern": "^[0-9]{20}$"},
        "data": {"type": "string", "minLength": 1, "maxLength": 4096},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16}
    }
}"#;
/// The keys a worker of the `churn` workload keeps before it deletes its oldest.
pub const CHURN_BACKLOG: usize = 16;
/// The tenant every install belongs to.
pub const TENANT: &str = "bench-tenant";
/// The tables the workloads write: the records, their counters and the audit trail.
pub const WRITTEN_TABLES: [&str; 4] = [
    "ext_storage_records",
    "ext_storage_namespace_usage",
    "ext_storage_install_usage",
    "ext_storage_audit",
];

/// One kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create a new key (if-absent).
    Insert,
    /// Overwrite an existing key with a same-size value at its known revision.
    Update,
    /// Read one key.
    Get,
    /// Read the first page of 100 records.
    List,
    /// Delete a key at its revision.
    Delete,
}

/// A workload: one operation, the 70/20/10 mix of get/update/insert, or inserts and deletes of
/// short-lived records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// New keys.
    Insert,
    /// Revision-checked updates of existing keys.
    Update,
    /// Revision-checked updates in a namespace with a JSON Schema (validator cached).
    UpdateValidated,
    /// Point reads.
    Get,
    /// List pages of 100.
    List,
    /// 70 % get, 20 % update, 10 % insert.
    Mix,
    /// Short-lived records: each worker creates keys and deletes them at their revision, the
    /// oldest first, keeping [`CHURN_BACKLOG`] of its own: once that many exist, deletes and
    /// inserts alternate (50 % each).
    Churn,
}

impl Workload {
    /// The namespace the workload runs in.
    pub fn namespace(self) -> &'static str {
        match self {
            Workload::UpdateValidated => VALIDATED_NAMESPACE,
            _ => NAMESPACE,
        }
    }

    /// The operation for a draw of `dice` in 0..100, by a worker holding `backlog` keys of its
    /// own (`churn` only).
    pub fn op(self, dice: u64, backlog: usize) -> Op {
        match self {
            Workload::Insert => Op::Insert,
            Workload::Update | Workload::UpdateValidated => Op::Update,
            Workload::Get => Op::Get,
            Workload::List => Op::List,
            Workload::Mix if dice < 70 => Op::Get,
            Workload::Mix if dice < 90 => Op::Update,
            Workload::Mix => Op::Insert,
            Workload::Churn if backlog < CHURN_BACKLOG => Op::Insert,
            Workload::Churn => Op::Delete,
        }
    }
}

/// How operations are spread over installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// Uniformly over many installs of one tenant.
    Many,
    /// All on one hot install.
    Hot,
}

/// The installs of a spread, and the revision of every preloaded key.
pub struct Installs {
    names: Vec<String>,
    revisions: Vec<AtomicU64>,
}

impl Installs {
    /// `count` installs named after `spread`, every preloaded key at revision 1.
    pub fn new(spread: Spread, count: usize) -> Self {
        let names: Vec<String> = match spread {
            Spread::Many => (0..count).map(|i| format!("inst-{i:04}")).collect(),
            Spread::Hot => vec!["hot".to_owned()],
        };
        let revisions = (0..names.len() * PRELOADED_KEYS * 2)
            .map(|_| AtomicU64::new(1))
            .collect();
        Self { names, revisions }
    }

    /// Install names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Current revision of preloaded key `key` of install `install` in the workload's namespace.
    pub fn revision(&self, workload: Workload, install: usize, key: usize) -> &AtomicU64 {
        let namespace = usize::from(workload.namespace() == VALIDATED_NAMESPACE);
        &self.revisions[(namespace * self.names.len() + install) * PRELOADED_KEYS + key]
    }
}

/// The name of preloaded key `i`.
pub fn preloaded_key(i: usize) -> String {
    format!("p-{i:03}")
}

/// The length of every [`value`].
pub const VALUE_BYTES: usize = 1028;

/// A ~1 KiB JSON value whose size, [`VALUE_BYTES`], does not depend on `n` (so updates keep the
/// size, and a delete knows the size it frees).
pub fn value(n: u64) -> String {
    format!("{{\"n\":\"{n:020}\",\"data\":\"{}\"}}", "x".repeat(990))
}

/// A small, fast, deterministic generator per worker.
pub struct Rng(u64);

impl Rng {
    /// Seeded by the worker's number.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sequence numbers for fresh keys, unique within a process.
pub fn next_insert_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_inserts_until_its_backlog_is_full_then_deletes() {
        let ops: Vec<Op> = (0..=CHURN_BACKLOG)
            .map(|held| Workload::Churn.op(99, held))
            .collect();
        assert!(ops[..CHURN_BACKLOG].iter().all(|op| *op == Op::Insert));
        assert_eq!(ops[CHURN_BACKLOG], Op::Delete);
        // Other workloads ignore the backlog.
        assert_eq!(Workload::Mix.op(10, CHURN_BACKLOG), Op::Get);
        assert_eq!(Workload::Insert.op(10, CHURN_BACKLOG), Op::Insert);
    }

    #[test]
    fn every_value_has_the_same_length() {
        for n in [0, 1, 42, u64::MAX] {
            assert_eq!(value(n).len(), VALUE_BYTES, "{n}");
        }
    }
}
