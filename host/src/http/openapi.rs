//! The OpenAPI 3.1 document of the gateway, built from the same [`Operation`] list as the router
//! so a route cannot exist undocumented (or be documented and missing).

use serde_json::{Value, json};

use super::API_BASE;
pub use super::routes::Operation;
use super::routes::{MAX_BULK_BODY_BYTES, MAX_PUT_BODY_BYTES};
use crate::limits::{MAX_BULK_ITEMS, MAX_KEY_BYTES, MAX_PAGE_SIZE};

/// The document served at `GET /api/ext-storage/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for operation in Operation::ALL {
        let path = format!("{API_BASE}{}", operation.path());
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[operation.method()] = describe(operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "alga-storage REST gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The alga:storage WIT contract over HTTP for extension iframes. \
                Tenant and install come from the bearer token, never from the request. \
                Errors are RFC 9457 problem documents whose `code` is the WIT error case.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (HS256)" }
            },
            "parameters": parameters(),
            "schemas": schemas(),
        },
    })
}

fn describe(operation: Operation) -> Value {
    let namespace_param = json!([{ "$ref": "#/components/parameters/namespace" }]);
    let precondition_params = json!([
        { "$ref": "#/components/parameters/namespace" },
        { "$ref": "#/components/parameters/key" },
        { "$ref": "#/components/parameters/ifMatch" },
        { "$ref": "#/components/parameters/ifNoneMatch" }
    ]);
    let mut doc = match operation {
        Operation::GetRecord => json!({
            "summary": "Read one record (the WIT `get`); 404 when absent or expired. Not \
                conditional: `If-Match` / `If-None-Match` are a 400.",
            "parameters": [
                { "$ref": "#/components/parameters/namespace" },
                { "$ref": "#/components/parameters/key" }
            ],
            "responses": {
                "200": ok_json("The record; `ETag` is its revision.", "Entry", true),
            },
        }),
        Operation::PutRecord => json!({
            "summary": "Write one record (the WIT `put`). `If-None-Match: *` = must be absent; \
                `If-Match: \"N\"` = must be at revision N.",
            "parameters": precondition_params,
            "requestBody": body("PutBody", MAX_PUT_BODY_BYTES),
            "responses": {
                "200": ok_json("Overwritten; `ETag` is the new revision.", "WriteResult", true),
                "201": ok_json("Created; `ETag` is the new revision.", "WriteResult", true),
            },
        }),
        Operation::DeleteRecord => json!({
            "summary": "Delete one record (the WIT `delete`). A missing key is not an error.",
            "parameters": precondition_params,
            "responses": { "200": ok_json("Whether a record was deleted.", "Deleted", false) },
        }),
        Operation::ListRecords => json!({
            "summary": "One page of records in key byte order (the WIT `list`).",
            "parameters": [
                { "$ref": "#/components/parameters/namespace" },
                { "name": "prefix", "in": "query", "required": false,
                  "description": "Only keys starting with this string, matched literally.",
                  "schema": { "type": "string", "maxLength": MAX_KEY_BYTES } },
                { "name": "cursor", "in": "query", "required": false,
                  "description": "The previous page's `nextCursor`, with the same prefix.",
                  "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "required": false,
                  "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE } },
                { "name": "keysOnly", "in": "query", "required": false,
                  "schema": { "type": "boolean" } }
            ],
            "responses": { "200": ok_json("A page.", "Page", false) },
        }),
        Operation::BulkPut => json!({
            "summary": format!("Write up to {MAX_BULK_ITEMS} records atomically (the WIT \
                `bulk-put`); an error names the failing `item`."),
            "parameters": namespace_param,
            "requestBody": body("BulkBody", MAX_BULK_BODY_BYTES),
            "responses": { "200": ok_json("One result per item.", "BulkResult", false) },
        }),
        Operation::GetSchema => json!({
            "summary": "The namespace's current JSON Schema (the WIT `schema`); 404 without one.",
            "parameters": namespace_param,
            "responses": { "200": ok_json("The schema.", "Schema", false) },
        }),
        Operation::GetUsage => json!({
            "summary": "The install's usage against its quotas (the WIT `usage`).",
            "responses": { "200": ok_json("Usage.", "Usage", false) },
        }),
        Operation::OpenApi => {
            return json!({
                "summary": "This document.",
                "operationId": operation_id(operation),
                "security": [],
                "responses": { "200": {
                    "description": "OpenAPI 3.1",
                    "content": { "application/json": { "schema": { "type": "object" } } }
                } },
            });
        }
    };
    doc["operationId"] = json!(operation_id(operation));
    doc["security"] = json!([{ "session": [] }]);
    let responses = doc["responses"].as_object_mut().expect("responses object");
    for (status, why) in [
        (
            "400",
            "invalid-input: malformed argument, body or precondition header",
        ),
        (
            "401",
            "unauthenticated: missing, forged, expired or wrong-audience token",
        ),
        (
            "403",
            "capability-denied: no `alga.storage` grant, or a write with read-only access",
        ),
        (
            "404",
            "not-found: no such record or schema; no-route: no such route",
        ),
        ("405", "no-route: the route does not take this method"),
        ("409", "revision-conflict (bulk) or schema-mismatch"),
        ("412", "revision-conflict: If-Match / If-None-Match failed"),
        ("413", "invalid-input: body larger than the route accepts"),
        (
            "422",
            "validation-failed: the value violates the namespace's schema",
        ),
        (
            "429",
            "quota-exceeded: names the quota, its limit and the usage",
        ),
        ("503", "unavailable: retry after `Retry-After` seconds"),
    ] {
        responses.insert(
            status.into(),
            json!({
                "description": why,
                "content": { "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                } },
            }),
        );
    }
    doc
}

/// A stable operation id (`getRecord`, …).
pub fn operation_id(operation: Operation) -> &'static str {
    match operation {
        Operation::GetRecord => "getRecord",
        Operation::PutRecord => "putRecord",
        Operation::DeleteRecord => "deleteRecord",
        Operation::ListRecords => "listRecords",
        Operation::BulkPut => "bulkPut",
        Operation::GetSchema => "getSchema",
        Operation::GetUsage => "getUsage",
        Operation::OpenApi => "getOpenApi",
    }
}

fn ok_json(description: &str, schema: &str, etag: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") }
        } },
    });
    if etag {
        response["headers"] = json!({ "ETag": {
            "description": "The revision, quoted: \"3\".",
            "schema": { "type": "string" }
        } });
    }
    response
}

fn body(schema: &str, max_bytes: usize) -> Value {
    json!({
        "required": true,
        "description": format!("At most {max_bytes} bytes."),
        "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") }
        } },
    })
}

fn parameters() -> Value {
    json!({
        "namespace": {
            "name": "namespace", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$" }
        },
        "key": {
            "name": "key", "in": "path", "required": true,
            "description": "1–512 bytes of UTF-8 without control characters, percent-encoded.",
            "schema": { "type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001F\\u007F]+$" }
        },
        "ifMatch": {
            "name": "If-Match", "in": "header", "required": false,
            "description": "Write only if the record is at this revision: \"N\".",
            "schema": { "type": "string", "pattern": "^\"(0|[1-9][0-9]*)\"$" }
        },
        "ifNoneMatch": {
            "name": "If-None-Match", "in": "header", "required": false,
            "description": "`*`: write only if the key is absent.",
            "schema": { "type": "string", "enum": ["*"] }
        },
    })
}

fn schemas() -> Value {
    let nullable_int = json!({ "type": ["integer", "null"], "minimum": 0 });
    let quota_usage = json!({
        "type": "object", "required": ["used", "limit"],
        "properties": { "used": { "type": "integer" }, "limit": { "type": "integer" } }
    });
    json!({
        "Entry": {
            "type": "object",
            "required": ["key", "revision", "createdAtMs", "updatedAtMs"],
            "properties": {
                "key": { "type": "string" },
                "value": { "description": "Any JSON; absent in keys-only listings." },
                "metadata": { "description": "Any JSON, or null; absent in keys-only listings." },
                "revision": { "type": "integer", "minimum": 1 },
                "schemaVersion": nullable_int,
                "expiresAtMs": nullable_int,
                "createdAtMs": { "type": "integer" },
                "updatedAtMs": { "type": "integer" },
            }
        },
        "PutBody": {
            "type": "object", "required": ["value"], "additionalProperties": false,
            "properties": {
                "value": { "description": "Any JSON (≤ 256 KiB, depth ≤ 32)." },
                "metadata": { "description": "Any JSON (≤ 4 KiB)." },
                "ttlMs": { "type": "integer", "minimum": 1 },
                "schemaVersion": { "type": "integer", "minimum": 1 },
            }
        },
        "BulkItem": {
            "type": "object", "required": ["key", "value"], "additionalProperties": false,
            "properties": {
                "key": { "type": "string", "minLength": 1 },
                "value": {},
                "metadata": {},
                "ttlMs": { "type": "integer", "minimum": 1 },
                "schemaVersion": { "type": "integer", "minimum": 1 },
                "ifAbsent": { "type": "boolean" },
                "ifRevision": { "type": "integer", "minimum": 0 },
            }
        },
        "BulkBody": {
            "type": "object", "required": ["items"], "additionalProperties": false,
            "properties": { "items": {
                "type": "array", "maxItems": MAX_BULK_ITEMS,
                "items": { "$ref": "#/components/schemas/BulkItem" }
            } }
        },
        "WriteResult": {
            "type": "object", "required": ["key", "revision", "created"],
            "properties": {
                "key": { "type": "string" },
                "revision": { "type": "integer", "minimum": 1 },
                "created": { "type": "boolean" },
            }
        },
        "BulkResult": {
            "type": "object", "required": ["results"],
            "properties": { "results": {
                "type": "array", "items": { "$ref": "#/components/schemas/WriteResult" }
            } }
        },
        "Deleted": {
            "type": "object", "required": ["deleted"],
            "properties": { "deleted": { "type": "boolean" } }
        },
        "Page": {
            "type": "object", "required": ["entries", "nextCursor"],
            "properties": {
                "entries": { "type": "array", "items": { "$ref": "#/components/schemas/Entry" } },
                "nextCursor": { "type": ["string", "null"] },
            }
        },
        "Schema": {
            "type": "object", "required": ["version", "document"],
            "properties": {
                "version": { "type": "integer", "minimum": 1 },
                "document": { "type": "object" },
            }
        },
        "Usage": {
            "type": "object", "required": ["namespaces", "totalBytes", "perNamespace"],
            "properties": {
                "namespaces": quota_usage,
                "totalBytes": quota_usage,
                "perNamespace": { "type": "array", "items": {
                    "type": "object", "required": ["namespace", "keys", "bytes"],
                    "properties": {
                        "namespace": { "type": "string" },
                        "keys": quota_usage,
                        "bytes": { "type": "integer" },
                    }
                } },
            }
        },
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "code", "detail"],
            "properties": {
                "type": { "type": "string" },
                "title": { "type": "string" },
                "status": { "type": "integer" },
                "code": { "type": "string", "enum": [
                    "unauthenticated", "capability-denied", "not-found", "revision-conflict",
                    "quota-exceeded", "validation-failed", "schema-mismatch", "invalid-input",
                    "unavailable", "internal", "no-route"
                ] },
                "detail": { "type": "string" },
                "item": { "type": ["integer", "null"], "description": "Bulk put: failing item." },
                "key": { "type": "string" },
                "currentRevision": nullable_int,
                "quota": { "type": "string" },
                "limit": { "type": "integer" },
                "usage": { "type": "integer" },
                "violations": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "instancePath": { "type": "string" },
                        "keyword": { "type": "string" },
                        "message": { "type": "string" },
                    }
                } },
                "expected": { "type": "integer" },
                "current": nullable_int,
                "field": { "type": "string" },
                "message": { "type": "string" },
            }
        },
    })
}
