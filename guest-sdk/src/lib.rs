//! # alga-storage-guest
//!
//! Typed access to `alga:storage` from an extension component (`wasm32-wasip2`). The host binds
//! every call to your tenant and install; you name only namespaces and keys.
//!
//! ```no_run
//! use alga_storage_guest::{Namespace, PutOptions, Error};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Settings { theme: String }
//!
//! fn main() -> Result<(), Error> {
//!     let settings = Namespace::new("settings");
//!     let written = settings.put("user-42", &Settings { theme: "dark".into() })?;
//!     assert_eq!(written.revision, 1);
//!
//!     // Optimistic concurrency: write only if nobody wrote since we read.
//!     let current = settings.get::<Settings>("user-42")?.expect("just written");
//!     let options = PutOptions::new().if_revision(current.revision).ttl(Duration::from_secs(3600));
//!     match settings.put_with("user-42", &Settings { theme: "light".into() }, &options) {
//!         Ok(w) => assert_eq!(w.revision, 2),
//!         Err(Error::RevisionConflict { current_revision, .. }) => {
//!             println!("someone else wrote revision {current_revision:?}; re-read and retry");
//!         }
//!         Err(other) => return Err(other),
//!     }
//!
//!     for entry in settings.list().prefix("user-").keys_only().iter() {
//!         let entry = entry?;
//!         println!("{} at revision {}", entry.key, entry.revision);
//!     }
//!     Ok(())
//! }
//! ```

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "alga:storage/imports",
        generate_all,
    });
}

mod error;
mod list;
mod namespace;
mod options;

/// The generated bindings of `alga:storage/store`, for what the typed layer does not cover.
pub mod raw {
    pub use crate::bindings::alga::storage::store::*;
}

pub use error::{BulkError, Error, Violation};
pub use list::{Entry, List, ListIter, Page};
pub use namespace::{Bulk, Namespace, Record, Schema, Written};
pub use options::PutOptions;

/// Usage of the install against one quota.
pub use raw::QuotaUsage;

/// The install's usage against its quotas, so an extension can show it or back off.
pub fn usage() -> Result<raw::InstallUsage, Error> {
    raw::usage().map_err(Error::from)
}
