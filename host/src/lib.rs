//! # alga-storage host
//!
//! Durable, multi-tenant storage for platform extensions. Components reach it through the
//! `alga:storage` WIT interface ([`wasm`]); every entry point calls the one [`StorageService`],
//! which validates, authorizes and decides, over a [`backend::Backend`] that owns only SQL and
//! atomicity.
//!
//! ```no_run
//! use std::sync::Arc;
//! use alga_storage::backend::postgres::PgBackend;
//! use alga_storage::{CallContext, StorageService, STORAGE_CAPABILITY};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = PgBackend::connect("postgres://localhost/alga", 16)?;
//! let service = StorageService::new(Arc::new(backend));
//! let call = CallContext::new("tenant-1", "install-1").grant(STORAGE_CAPABILITY);
//! service.put(&call, "settings", "theme", r#"{"dark":true}"#, &Default::default()).await?;
//! let record = service.get(&call, "settings", "theme").await?;
//! assert_eq!(record.unwrap().revision, 1);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod cli;
pub mod context;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod relay;
pub mod rollout;
pub mod schema;
pub mod service;
pub mod wasm;

// The I/O-free modules live in `alga-storage-core` (so they fuzz without the host's stacks);
// they keep their paths here.
pub use alga_storage_core::{error, json, limits};

pub use context::{CallContext, STORAGE_CAPABILITY, STORAGE_READ_CAPABILITY};
pub use error::{BulkError, Quota, StorageError, Violation};
pub use limits::Limits;
pub use rollout::RolloutPolicy;
pub use service::StorageService;
