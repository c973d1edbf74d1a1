//! JSON Schemas of namespaces: checking a document before it is registered, compiling it into a
//! validator, and validating values into violation lists.
//!
//! Accepted drafts are 2020-12 (the default when `$schema` is absent) and draft-07. Only local
//! references (`#…`) are allowed: a schema never makes the host fetch anything.

mod cache;

pub use cache::{CurrentSchema, SchemaCache};

use jsonschema::{Draft, Validator};
use serde_json::Value;

use crate::error::{StorageError, Violation};
use crate::json;

/// Most violations reported for one value.
pub const MAX_VIOLATIONS: usize = 50;
/// Largest schema document, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const DRAFT_07: &str = "http://json-schema.org/draft-07/schema";

/// Parses and compiles a schema document, or says why it cannot be registered.
pub fn compile(document: &str) -> Result<(Value, Validator), StorageError> {
    let invalid = |message: String| StorageError::invalid("schema", message);
    if document.len() > MAX_SCHEMA_BYTES {
        return Err(invalid(format!(
            "is {} bytes long; at most {MAX_SCHEMA_BYTES} allowed",
            document.len()
        )));
    }
    let schema =
        json::parse_value(document).map_err(|e| invalid(format!("is not valid JSON: {e}")))?;
    let draft = match &schema {
        Value::Bool(_) => Draft::Draft202012,
        Value::Object(map) => match map.get("$schema") {
            None => Draft::Draft202012,
            Some(Value::String(uri)) => match uri.trim_end_matches('#') {
                DRAFT_2020_12 => Draft::Draft202012,
                DRAFT_07 => Draft::Draft7,
                other => {
                    return Err(invalid(format!(
                        "declares $schema {other:?}; only draft 2020-12 and draft-07 are accepted"
                    )));
                }
            },
            Some(_) => return Err(invalid("has a $schema that is not a string".into())),
        },
        _ => return Err(invalid("must be a JSON object or boolean".into())),
    };
    if let Some(reference) = remote_reference(&schema) {
        return Err(invalid(format!(
            "references {reference:?}; only local references (starting with '#') are allowed"
        )));
    }
    let validator = jsonschema::options()
        .with_draft(draft)
        .build(&schema)
        .map_err(|e| invalid(format!("is not a valid schema: {e}")))?;
    Ok((schema, validator))
}

/// The first `$ref` / `$dynamicRef` in `schema` that is not a local fragment.
fn remote_reference(schema: &Value) -> Option<String> {
    match schema {
        Value::Object(map) => map
            .iter()
            .find_map(|(key, value)| match (key.as_str(), value) {
                ("$ref" | "$dynamicRef" | "$recursiveRef", Value::String(r))
                    if !r.starts_with('#') =>
                {
                    Some(r.clone())
                }
                _ => remote_reference(value),
            }),
        Value::Array(items) => items.iter().find_map(remote_reference),
        _ => None,
    }
}

/// The violations of `value` (JSON text) against `validator`, at most [`MAX_VIOLATIONS`].
pub fn violations(
    validator: &Validator,
    field: &'static str,
    value: &str,
) -> Result<Vec<Violation>, StorageError> {
    let instance = json::parse_value(value)
        .map_err(|e| StorageError::invalid(field, format!("is not valid JSON: {e}")))?;
    Ok(validator
        .iter_errors(&instance)
        .take(MAX_VIOLATIONS)
        .map(|error| {
            let schema_path = error.schema_path().to_string();
            Violation {
                instance_path: error.instance_path().to_string(),
                keyword: schema_path
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .replace("~1", "/")
                    .replace("~0", "~"),
                message: error.to_string(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(document: &str) -> String {
        match compile(document) {
            Err(StorageError::InvalidInput {
                field: "schema",
                message,
            }) => message,
            other => panic!("expected the schema to be refused, got {other:?}"),
        }
    }

    #[test]
    fn drafts() {
        compile(r#"{"type":"object"}"#).unwrap();
        compile(r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"string"}"#)
            .unwrap();
        compile(r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}"#)
            .unwrap();
        compile("true").unwrap();
        assert!(
            refused(r#"{"$schema":"http://json-schema.org/draft-04/schema#"}"#)
                .contains("draft-04")
        );
        assert!(refused("[1]").contains("object or boolean"));
        assert!(refused("{").contains("not valid JSON"));
        assert!(refused(r#"{"type":"nonsense"}"#).contains("not a valid schema"));
    }

    #[test]
    fn remote_references_are_refused() {
        let local =
            r##"{"$defs":{"n":{"type":"number"}},"properties":{"a":{"$ref":"#/$defs/n"}}}"##;
        compile(local).unwrap();
        let message = refused(r#"{"properties":{"a":{"$ref":"https://example.com/s.json"}}}"#);
        assert!(message.contains("https://example.com/s.json"), "{message}");
        assert!(refused(r#"{"allOf":[{"$ref":"other.json#/x"}]}"#).contains("other.json"));
    }

    #[test]
    fn violations_carry_pointers_and_keywords() {
        let (_, validator) = compile(
            r#"{"type":"object","required":["name"],"properties":{
                "name":{"type":"string","maxLength":3},
                "tags":{"type":"array","items":{"type":"integer"}},
                "a/b":{"type":"boolean"}}}"#,
        )
        .unwrap();
        let found = violations(
            &validator,
            "value",
            r#"{"name":"long","tags":[1,"x"],"a/b":1}"#,
        )
        .unwrap();
        let mut got: Vec<(String, String)> = found
            .iter()
            .map(|v| (v.instance_path.clone(), v.keyword.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("/a~1b".to_string(), "type".to_string()),
                ("/name".to_string(), "maxLength".to_string()),
                ("/tags/1".to_string(), "type".to_string()),
            ]
        );
        let missing = violations(&validator, "value", "{}").unwrap();
        assert_eq!(
            (
                missing[0].instance_path.as_str(),
                missing[0].keyword.as_str()
            ),
            ("", "required")
        );
        assert!(
            violations(&validator, "value", r#"{"name":"ok"}"#)
                .unwrap()
                .is_empty()
        );
    }

    /// A value is checked as stored: serde_json's `RawValue` marker key cannot smuggle a
    /// different document past the schema (see `alga_storage_core::json`).
    #[test]
    fn the_raw_value_marker_key_is_checked_as_an_ordinary_key() {
        let (_, validator) = compile(
            r#"{"type":"object","required":["name"],"additionalProperties":false,
                "properties":{"name":{"type":"string"}}}"#,
        )
        .unwrap();
        let smuggled = r#"{"$serde_json::private::RawValue":"{\"name\":\"ok\"}"}"#;
        let found = violations(&validator, "value", smuggled).unwrap();
        let keywords: Vec<&str> = found.iter().map(|v| v.keyword.as_str()).collect();
        assert!(keywords.contains(&"required"), "{found:?}");
        assert!(keywords.contains(&"additionalProperties"), "{found:?}");
        // A schema in that form is read as written too: an object with one unknown keyword,
        // which accepts anything, not the `false` schema inside its string.
        let (schema, _) = compile(r#"{"$serde_json::private::RawValue":"false"}"#).unwrap();
        assert!(schema.is_object(), "{schema}");
    }
}
