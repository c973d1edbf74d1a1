//! The JSON shapes of the REST API: camelCase mirrors of the WIT records. Values and metadata
//! travel as embedded JSON and are handed to the service as the caller's text, unparsed here.

use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::StorageError;
use crate::model::{self, ListPage, Precondition, PutOptions, Record, Usage, WriteResult};
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

/// A JSON response body written by hand (records and pages), sent as `application/json`.
#[derive(Debug)]
pub struct JsonText(pub String);

/// Headers a record's or a page's response ends up with: its content type and length, the
/// ETag, `Cache-Control`, CORS's `Vary` and the request id, with room to spare.
const RESPONSE_HEADERS: usize = 8;

impl axum::response::IntoResponse for JsonText {
    /// The header map is allocated once, for all the headers the route and the layers add; an
    /// empty one would be reallocated as they are added, on every read.
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderMap, HeaderValue, header};
        let mut response = axum::response::Response::new(self.0.into());
        let headers = response.headers_mut();
        *headers = HeaderMap::with_capacity(RESPONSE_HEADERS);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The JSON of one record (the WIT `entry`). Values and metadata are copied as stored: they come
/// out of PostgreSQL's `jsonb` as valid JSON, so they are not parsed again on the way out.
pub fn entry_json(record: &Record) -> String {
    let mut out = String::with_capacity(128 + record.value.as_ref().map_or(0, String::len));
    write_entry(&mut out, record);
    out
}

/// The JSON of a list page: `{"entries": [...], "nextCursor": …}`.
pub fn page_json(page: &ListPage) -> String {
    let values: usize = page
        .entries
        .iter()
        .map(|e| e.value.as_ref().map_or(0, String::len) + 128)
        .sum();
    let mut out = String::with_capacity(64 + values);
    out.push_str("{\"entries\":[");
    for (i, record) in page.entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_entry(&mut out, record);
    }
    out.push_str("],\"nextCursor\":");
    write_string_or_null(&mut out, page.next_cursor.as_deref());
    out.push('}');
    out
}

fn write_entry(out: &mut String, record: &Record) {
    out.push_str("{\"key\":");
    write_string_or_null(out, Some(&record.key));
    // A keys-only entry has neither value nor metadata: both are left out, not null.
    if let Some(value) = &record.value {
        out.push_str(",\"value\":");
        out.push_str(value);
        out.push_str(",\"metadata\":");
        out.push_str(record.metadata.as_deref().unwrap_or("null"));
    }
    let _ = write!(out, ",\"revision\":{}", record.revision);
    out.push_str(",\"schemaVersion\":");
    write_number_or_null(out, record.schema_version.map(u64::from));
    out.push_str(",\"expiresAtMs\":");
    write_number_or_null(out, record.expires_at.map(unix_millis));
    let _ = write!(
        out,
        ",\"createdAtMs\":{},\"updatedAtMs\":{}}}",
        unix_millis(record.created_at),
        unix_millis(record.updated_at)
    );
}

fn write_string_or_null(out: &mut String, text: Option<&str>) {
    match text {
        // Serializing a string cannot fail.
        Some(text) => out.push_str(&serde_json::to_string(text).unwrap_or_default()),
        None => out.push_str("null"),
    }
}

fn write_number_or_null(out: &mut String, number: Option<u64>) {
    match number {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn record(value: Option<&str>, metadata: Option<&str>) -> Record {
        Record {
            key: "a\"b/ü\n".into(),
            value: value.map(str::to_owned),
            metadata: metadata.map(str::to_owned),
            revision: 3,
            schema_version: Some(2),
            expires_at: None,
            created_at: UNIX_EPOCH + Duration::from_millis(1_000),
            updated_at: UNIX_EPOCH + Duration::from_millis(2_000),
        }
    }

    #[test]
    fn hand_written_json_is_the_entry() {
        let text = entry_json(&record(Some(r#"{"x": [1, "é"]}"#), Some(r#"{"m": 1}"#)));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!({
                "key": "a\"b/ü\n", "value": {"x": [1, "é"]}, "metadata": {"m": 1},
                "revision": 3, "schemaVersion": 2, "expiresAtMs": null,
                "createdAtMs": 1000, "updatedAtMs": 2000
            })
        );
        let page = ListPage {
            entries: vec![record(None, None), record(Some("null"), None)],
            next_cursor: Some("c\"1".into()),
        };
        let parsed: serde_json::Value = serde_json::from_str(&page_json(&page)).unwrap();
        assert!(parsed["entries"][0].get("value").is_none(), "keys-only");
        assert_eq!(parsed["entries"][1]["value"], json!(null));
        assert_eq!(parsed["entries"][0]["metadata"], json!(null));
        assert_eq!(parsed["nextCursor"], "c\"1");
        let empty = ListPage {
            entries: vec![],
            next_cursor: None,
        };
        assert_eq!(page_json(&empty), r#"{"entries":[],"nextCursor":null}"#);
    }
}
