//! JSON values: whatever `validate::json` accepts is one JSON document within the depth limit
//! that PostgreSQL's `jsonb` can store (no `\u0000`).
#![no_main]

use alga_storage_core::json;
use alga_storage_core::limits::{MAX_JSON_DEPTH, MAX_VALUE_BYTES};
use alga_storage_core::validate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fuzz_target!(|text: &str| {
    if validate::json("value", text, MAX_VALUE_BYTES, MAX_JSON_DEPTH).is_ok() {
        // Read as the schema check reads it (serde_json's `Value` parser would take the
        // `RawValue` marker key as a document of its own).
        let value: Value = json::parse_value(text)
            .unwrap_or_else(|e| panic!("accepted but not JSON: {text:?}: {e}"));
        assert!(depth(&value) <= MAX_JSON_DEPTH, "{text:?}");
        assert!(!has_nul(&value), "{text:?}");
    }
});
