//! Compiled validators, per (tenant, install, namespace), shared by a host process.
//!
//! The cache can be stale when another process registers a version: the write function compares
//! the version the service validated against with the namespace's current one inside the write's
//! own transaction and refuses a mismatch, after which the service reloads and validates again.
//! So a cached validator can save a round trip but never let a write bypass the current schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde_json::Value;

/// Entries kept before the cache is emptied (a crude bound; reloading is cheap).
const MAX_ENTRIES: usize = 10_000;

/// The schema a namespace had when it was loaded: none, or a version with its validator.
#[derive(Clone)]
pub struct CurrentSchema {
    /// The current version, `None` without a schema.
    pub version: Option<u32>,
    /// The document, when there is a schema.
    pub document: Option<Arc<Value>>,
    /// The compiled validator, when there is a schema.
    pub validator: Option<Arc<Validator>>,
}

impl std::fmt::Debug for CurrentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentSchema")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl CurrentSchema {
    /// A namespace without a schema.
    pub fn none() -> Self {
        Self {
            version: None,
            document: None,
            validator: None,
        }
    }
}

type Key = (String, String, String);

/// The process's cache of current schemas.
#[derive(Default)]
pub struct SchemaCache {
    entries: Mutex<HashMap<Key, Arc<CurrentSchema>>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache").finish_non_exhaustive()
    }
}

impl SchemaCache {
    /// The cached schema of a namespace, if loaded.
    pub fn get(&self, tenant: &str, install: &str, namespace: &str) -> Option<Arc<CurrentSchema>> {
        let key = (tenant.to_owned(), install.to_owned(), namespace.to_owned());
        self.entries
            .lock()
            .expect("schema cache lock")
            .get(&key)
            .cloned()
    }

    /// Remembers a namespace's schema.
    pub fn put(&self, tenant: &str, install: &str, namespace: &str, schema: Arc<CurrentSchema>) {
        let mut entries = self.entries.lock().expect("schema cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            (tenant.to_owned(), install.to_owned(), namespace.to_owned()),
            schema,
        );
    }

    /// Forgets a namespace's schema.
    pub fn invalidate(&self, tenant: &str, install: &str, namespace: &str) {
        let key = (tenant.to_owned(), install.to_owned(), namespace.to_owned());
        self.entries.lock().expect("schema cache lock").remove(&key);
    }
}
