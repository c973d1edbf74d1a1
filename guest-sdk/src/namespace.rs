//! Typed reads and writes in one namespace.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BulkError, Error};
use crate::list::List;
use crate::options::PutOptions;
use crate::raw;

/// A namespace of the install's storage. Creating one is free; it exists once it holds a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    name: String,
}

/// A record read with [`Namespace::get`], its value deserialised.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The key.
    pub key: String,
    /// The value.
    pub value: T,
    /// The metadata, if the record has any.
    pub metadata: Option<serde_json::Value>,
    /// The record's revision (pass it to [`PutOptions::if_revision`]).
    pub revision: u64,
    /// The schema version the value was validated against.
    pub schema_version: Option<u32>,
    /// Expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
    /// First write, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Last write, milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

/// The outcome of a successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The key's new revision.
    pub revision: u64,
    /// Whether the write created the key.
    pub created: bool,
}

impl Namespace {
    /// The namespace `name` (`[a-z0-9][a-z0-9._-]{0,62}`; the host checks).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads `key` and deserialises its value; `None` when absent or expired.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Record<T>>, Error> {
        let Some(entry) = raw::get(&self.name, key)? else {
            return Ok(None);
        };
        let text = entry.value.as_deref().unwrap_or("null");
        let value = serde_json::from_str(text).map_err(|e| Error::Decode {
            key: entry.key.clone(),
            message: e.to_string(),
        })?;
        let metadata = match entry.metadata.as_deref() {
            Some(m) => Some(serde_json::from_str(m).map_err(|e| Error::Decode {
                key: entry.key.clone(),
                message: format!("metadata: {e}"),
            })?),
            None => None,
        };
        Ok(Some(Record {
            key: entry.key,
            value,
            metadata,
            revision: entry.revision,
            schema_version: entry.schema_version,
            expires_at_ms: entry.expires_at_ms,
            created_at_ms: entry.created_at_ms,
            updated_at_ms: entry.updated_at_ms,
        }))
    }

    /// Writes `value` unconditionally.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Written, Error> {
        self.put_with(key, value, &PutOptions::new())
    }

    /// Writes `value` with `options` (precondition, TTL, metadata, schema pin).
    pub fn put_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &PutOptions,
    ) -> Result<Written, Error> {
        let json = encode(value)?;
        self.put_json(key, &json, options)
    }

    /// Writes a value that is already JSON text (the host validates it).
    pub fn put_json(&self, key: &str, json: &str, options: &PutOptions) -> Result<Written, Error> {
        let result = raw::put(&self.name, key, json, &options.to_raw())?;
        Ok(Written {
            revision: result.revision,
            created: result.created,
        })
    }

    /// Deletes `key`; `false` when there was nothing to delete.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(raw::delete(&self.name, key, raw::Precondition::None)?)
    }

    /// Deletes `key` only if it is at `revision`; otherwise `revision-conflict`.
    pub fn delete_if_revision(&self, key: &str, revision: u64) -> Result<bool, Error> {
        Ok(raw::delete(
            &self.name,
            key,
            raw::Precondition::Revision(revision),
        )?)
    }

    /// A listing of this namespace, configured with the returned builder.
    pub fn list(&self) -> List {
        List::new(self.name.clone())
    }

    /// An atomic multi-key write: add items, then [`Bulk::commit`].
    pub fn bulk(&self) -> Bulk {
        Bulk {
            namespace: self.name.clone(),
            items: Vec::new(),
            encode_error: None,
        }
    }
}

/// An atomic write of up to 100 items into one namespace: all commit or none does.
#[derive(Debug, Clone)]
pub struct Bulk {
    namespace: String,
    items: Vec<raw::PutItem>,
    encode_error: Option<BulkError>,
}

impl Bulk {
    /// Adds an unconditional write.
    pub fn put<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Self {
        self.put_with(key, value, &PutOptions::new())
    }

    /// Adds a write with options (e.g. its own precondition).
    pub fn put_with<T: Serialize + ?Sized>(
        mut self,
        key: &str,
        value: &T,
        options: &PutOptions,
    ) -> Self {
        match encode(value) {
            Ok(json) => self.items.push(raw::PutItem {
                key: key.to_owned(),
                value: json,
                options: options.to_raw(),
            }),
            Err(error) => {
                self.encode_error.get_or_insert(BulkError {
                    item: Some(self.items.len()),
                    error,
                });
            }
        }
        self
    }

    /// How many items were added.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item was added.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Writes every item atomically; the error names the failing item.
    pub fn commit(self) -> Result<Vec<Written>, BulkError> {
        if let Some(e) = self.encode_error {
            return Err(e);
        }
        let results = raw::bulk_put(&self.namespace, &self.items)?;
        Ok(results
            .into_iter()
            .map(|r| Written {
                revision: r.revision,
                created: r.created,
            })
            .collect())
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Encode(e.to_string()))
}

/// A namespace's current JSON Schema, as read by [`Namespace::schema`].
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Its version; pin it with [`PutOptions::schema_version`].
    pub version: u32,
    /// The JSON Schema document.
    pub document: serde_json::Value,
}

impl Namespace {
    /// The namespace's current schema; `None` when it has none (any JSON is accepted).
    pub fn schema(&self) -> Result<Option<Schema>, Error> {
        let Some(schema) = raw::schema(&self.name)? else {
            return Ok(None);
        };
        let document = serde_json::from_str(&schema.document).map_err(|e| Error::Decode {
            key: format!("schema of {}", self.name),
            message: e.to_string(),
        })?;
        Ok(Some(Schema {
            version: schema.version,
            document,
        }))
    }
}
