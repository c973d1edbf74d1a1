//! The JSON shapes of the REST API: camelCase mirrors of the WIT records. Values and metadata
//! travel as embedded JSON and are handed to the service as the caller's text, unparsed here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::StorageError;
use crate::model::{self, Precondition, PutOptions, Record, Usage, WriteResult};
use crate::service::unix_millis;

/// Body of `PUT …/records/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutBody {
    /// The value (any JSON).
    pub value: Box<RawValue>,
    /// Metadata stored beside the value.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    /// Time to live in milliseconds.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The schema version the writer was built for.
    #[serde(default)]
    pub schema_version: Option<u32>,
}

impl PutBody {
    /// The write's options, with the precondition taken from the request headers.
    pub fn options(&self, precondition: Precondition) -> PutOptions {
        PutOptions {
            precondition,
            ttl: self.ttl_ms.map(Duration::from_millis),
            metadata: self.metadata.as_ref().map(|m| m.get().to_owned()),
            schema_version: self.schema_version,
        }
    }
}

/// One item of `POST …/bulk`; the precondition is `ifAbsent` or `ifRevision`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkItem {
    /// The key.
    pub key: String,
    /// The value (any JSON).
    pub value: Box<RawValue>,
    /// Metadata stored beside the value.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    /// Time to live in milliseconds.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The schema version the writer was built for.
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// The key must be absent.
    #[serde(default)]
    pub if_absent: bool,
    /// The key must be at this revision.
    #[serde(default)]
    pub if_revision: Option<u64>,
}

/// Body of `POST …/bulk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The items, written all or none.
    pub items: Vec<BulkItem>,
}

impl BulkItem {
    /// The service's item; refuses `ifAbsent` together with `ifRevision`.
    pub fn into_model(self, index: usize) -> Result<model::PutItem, StorageError> {
        let precondition = match (self.if_absent, self.if_revision) {
            (false, None) => Precondition::None,
            (true, None) => Precondition::Absent,
            (false, Some(revision)) => Precondition::Revision(revision),
            (true, Some(_)) => {
                return Err(StorageError::InvalidInput {
                    field: "precondition",
                    message: format!("item {index}: ifAbsent and ifRevision exclude each other"),
                });
            }
        };
        Ok(model::PutItem {
            key: self.key,
            value: self.value.get().to_owned(),
            options: PutOptions {
                precondition,
                ttl: self.ttl_ms.map(Duration::from_millis),
                metadata: self.metadata.map(|m| m.get().to_owned()),
                schema_version: self.schema_version,
            },
        })
    }
}

/// Query of `GET …/records` (a list page).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListParams {
    /// Only keys starting with this string, literally.
    pub prefix: Option<String>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Keys and revisions only.
    #[serde(default)]
    pub keys_only: bool,
}

/// A stored record (the WIT `entry`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Box<RawValue>>,
    metadata: Option<Box<RawValue>>,
    revision: u64,
    schema_version: Option<u32>,
    expires_at_ms: Option<u64>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

impl Entry {
    /// The wire form of `record`. Stored JSON is valid by construction; a failure is a host bug.
    pub fn from_record(record: Record) -> Result<Self, StorageError> {
        let raw = |text: String| {
            RawValue::from_string(text)
                .map_err(|e| StorageError::Internal(format!("stored JSON does not parse: {e}")))
        };
        Ok(Self {
            key: record.key,
            value: record.value.map(raw).transpose()?,
            metadata: record.metadata.map(raw).transpose()?,
            revision: record.revision,
            schema_version: record.schema_version,
            expires_at_ms: record.expires_at.map(unix_millis),
            created_at_ms: unix_millis(record.created_at),
            updated_at_ms: unix_millis(record.updated_at),
        })
    }
}

/// A successful write (the WIT `write-result`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    key: String,
    revision: u64,
    created: bool,
}

impl From<WriteResult> for Written {
    fn from(result: WriteResult) -> Self {
        Self {
            key: result.key,
            revision: result.revision,
            created: result.created,
        }
    }
}

/// A list page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Records in key byte order.
    pub entries: Vec<Entry>,
    /// Where the next page starts; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Result of a bulk put.
#[derive(Debug, Serialize)]
pub struct BulkWritten {
    /// One result per item, in order.
    pub results: Vec<Written>,
}

/// Result of a delete.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// Whether a record was deleted.
    pub deleted: bool,
}

/// A namespace's current schema.
#[derive(Debug, Serialize)]
pub struct Schema {
    /// Its version.
    pub version: u32,
    /// The JSON Schema document.
    pub document: Box<RawValue>,
}

/// Usage against one limit.
#[derive(Debug, Serialize)]
pub struct QuotaUsage {
    used: u64,
    limit: u64,
}

impl From<model::QuotaUsage> for QuotaUsage {
    fn from(q: model::QuotaUsage) -> Self {
        Self {
            used: q.used,
            limit: q.limit,
        }
    }
}

/// Usage of one namespace.
#[derive(Debug, Serialize)]
pub struct NamespaceUsage {
    namespace: String,
    keys: QuotaUsage,
    bytes: u64,
}

/// The install's usage (the WIT `install-usage`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallUsage {
    namespaces: QuotaUsage,
    total_bytes: QuotaUsage,
    per_namespace: Vec<NamespaceUsage>,
}

impl From<Usage> for InstallUsage {
    fn from(usage: Usage) -> Self {
        Self {
            namespaces: usage.namespaces.into(),
            total_bytes: usage.total_bytes.into(),
            per_namespace: usage
                .per_namespace
                .into_iter()
                .map(|n| NamespaceUsage {
                    namespace: n.namespace,
                    keys: n.keys.into(),
                    bytes: n.bytes,
                })
                .collect(),
        }
    }
}
