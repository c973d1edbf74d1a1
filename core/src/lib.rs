//! # alga-storage-core
//!
//! The part of alga-storage that touches no database, network or runtime: the contract's limits
//! and error cases, and the checks every untrusted input passes before it reaches a backend —
//! keys, namespaces, prefixes and JSON values ([`validate`]), list cursors ([`cursor`]) and the
//! iframe session tokens ([`token`]). It is its own crate so the fuzz targets (`fuzz/`) build it
//! in seconds without the host's wasmtime and database stacks; the host re-exports every module
//! under its old path (`alga_storage::error`, `alga_storage::service::validate`, …).

pub mod cursor;
pub mod error;
pub mod json;
pub mod limits;
pub mod token;
pub mod validate;
