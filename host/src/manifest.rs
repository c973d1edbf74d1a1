//! The storage section of an extension manifest: the namespaces an extension uses, their JSON
//! Schemas, and the limits it asks for. The host validates it and applies it when the extension
//! is installed or upgraded.
//!
//! ```json
//! {
//!   "storage": {
//!     "namespaces": {
//!       "profiles": { "schema": "schemas/profiles.json" },
//!       "cache": {}
//!     },
//!     "limits": { "maxKeysPerNamespace": 5000, "maxTotalBytes": 10485760 },
//!     "onIncompatibleSchema": "refuse"
//!   }
//! }
//! ```
//!
//! Applying registers a new schema version for every namespace whose schema file differs from
//! its current schema. If a new schema would reject records already stored, the whole upgrade is
//! refused (nothing is registered) unless `onIncompatibleSchema` is `"register-anyway"`: those
//! records stay readable, keep the version they were written with, and must satisfy the new
//! schema when next written. The limits, checked against the platform's maximums, are returned
//! for the embedder to pass in each call's [`crate::CallContext::limits`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::context::CallContext;
use crate::error::StorageError;
use crate::limits::Limits;
use crate::service::StorageService;
use crate::service::validate;

/// A manifest that cannot be applied, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The section is malformed or asks for something not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// Where, e.g. `storage.limits.maxTotalBytes`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// New schemas would reject stored records and the manifest does not say to proceed.
    #[error(
        "storage.namespaces.{namespace}.schema: the new schema would reject {count} stored \
         record(s) (first: {first:?}); set storage.onIncompatibleSchema to \"register-anyway\" \
         to register it regardless"
    )]
    Incompatible {
        /// The namespace.
        namespace: String,
        /// Records that would fail.
        count: u64,
        /// Some of their keys.
        first: Vec<String>,
    },
    /// Storage failed while applying.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    storage: Option<Section>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Section {
    #[serde(default)]
    namespaces: BTreeMap<String, NamespaceEntry>,
    #[serde(default)]
    limits: RequestedLimits,
    #[serde(default)]
    on_incompatible_schema: OnIncompatible,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestedLimits {
    max_namespaces: Option<u64>,
    max_keys_per_namespace: Option<u64>,
    max_total_bytes: Option<u64>,
    max_value_bytes: Option<u64>,
    max_metadata_bytes: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum OnIncompatible {
    #[default]
    Refuse,
    RegisterAnyway,
}

/// What applying a manifest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Namespaces that got a new schema version, with the version.
    pub registered: Vec<(String, u32)>,
    /// Namespaces whose schema was already current (or that declare none).
    pub unchanged: Vec<String>,
    /// The install's limits: the platform defaults with the manifest's requests.
    pub limits: Limits,
}

/// A checked storage section.
struct Parsed {
    /// Namespaces with their schema documents, if they declare one.
    namespaces: Vec<(String, Option<String>)>,
    /// The install's limits.
    limits: Limits,
    /// What to do when a new schema would reject stored records.
    policy: OnIncompatible,
}

/// Parses and checks a manifest (JSON text); `read_schema` loads a schema file it names.
fn parse(
    manifest: &str,
    defaults: Limits,
    maximums: Limits,
    read_schema: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Parsed, ManifestError> {
    let invalid = |field: &str, message: String| ManifestError::Invalid {
        field: field.to_owned(),
        message,
    };
    let parsed: Manifest =
        serde_json::from_str(manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    let section = parsed.storage.unwrap_or_default();
    let mut namespaces = Vec::new();
    for (name, entry) in section.namespaces {
        let field = format!("storage.namespaces.{name}");
        validate::namespace(&name).map_err(|e| invalid(&field, e.to_string()))?;
        let document = match entry.schema {
            Some(path) => {
                let field = format!("{field}.schema");
                let text =
                    read_schema(&path).map_err(|e| invalid(&field, format!("{path}: {e}")))?;
                crate::schema::compile(&text).map_err(|e| invalid(&field, e.to_string()))?;
                Some(text)
            }
            None => None,
        };
        namespaces.push((name, document));
    }
    let requested = section.limits;
    let mut limits = defaults;
    let set = |field: &str, value: Option<u64>, max: u64, slot: &mut u64| {
        if let Some(value) = value {
            if value == 0 || value > max {
                return Err(invalid(
                    &format!("storage.limits.{field}"),
                    format!("is {value}; must be between 1 and the platform maximum {max}"),
                ));
            }
            *slot = value;
        }
        Ok(())
    };
    set(
        "maxNamespaces",
        requested.max_namespaces,
        maximums.max_namespaces,
        &mut limits.max_namespaces,
    )?;
    set(
        "maxKeysPerNamespace",
        requested.max_keys_per_namespace,
        maximums.max_keys_per_namespace,
        &mut limits.max_keys_per_namespace,
    )?;
    set(
        "maxTotalBytes",
        requested.max_total_bytes,
        maximums.max_total_bytes,
        &mut limits.max_total_bytes,
    )?;
    let mut value_bytes = limits.max_value_bytes as u64;
    set(
        "maxValueBytes",
        requested.max_value_bytes,
        maximums.max_value_bytes as u64,
        &mut value_bytes,
    )?;
    limits.max_value_bytes = value_bytes as usize;
    let mut metadata_bytes = limits.max_metadata_bytes as u64;
    set(
        "maxMetadataBytes",
        requested.max_metadata_bytes,
        maximums.max_metadata_bytes as u64,
        &mut metadata_bytes,
    )?;
    limits.max_metadata_bytes = metadata_bytes as usize;
    Ok(Parsed {
        namespaces,
        limits,
        policy: section.on_incompatible_schema,
    })
}

impl StorageService {
    /// Applies the storage section of `manifest` (JSON text) to `ctx`'s install: validates it,
    /// checks new schemas against stored records, registers them, and returns the limits.
    /// Nothing is registered unless the whole manifest is acceptable.
    pub async fn apply_manifest(
        &self,
        ctx: &CallContext,
        manifest: &str,
        read_schema: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Applied, ManifestError> {
        let (defaults, maximums) = self.limit_bounds();
        let Parsed {
            namespaces,
            limits,
            policy,
        } = parse(manifest, defaults, maximums, read_schema)?;

        // Decide everything first, register after: a refused upgrade changes nothing.
        let mut to_register = Vec::new();
        let mut unchanged = Vec::new();
        for (namespace, document) in namespaces {
            let Some(document) = document else {
                unchanged.push(namespace);
                continue;
            };
            let current = self.backend_current_schema(ctx, &namespace).await?;
            if current
                .as_ref()
                .is_some_and(|c| same_json(&c.document, &document))
            {
                unchanged.push(namespace);
                continue;
            }
            if policy == OnIncompatible::Refuse {
                let (count, first) = self.count_rejected(ctx, &namespace, &document).await?;
                if count > 0 {
                    return Err(ManifestError::Incompatible {
                        namespace,
                        count,
                        first,
                    });
                }
            }
            to_register.push((namespace, document));
        }
        let mut registered = Vec::new();
        for (namespace, document) in to_register {
            let version = self.register_schema(ctx, &namespace, &document).await?;
            registered.push((namespace, version));
        }
        Ok(Applied {
            registered,
            unchanged,
            limits,
        })
    }

    /// Stored records of `namespace` that `document` would reject: how many, and up to 10 keys.
    async fn count_rejected(
        &self,
        ctx: &CallContext,
        namespace: &str,
        document: &str,
    ) -> Result<(u64, Vec<String>), StorageError> {
        let (mut count, mut first, mut cursor) = (0u64, Vec::new(), None);
        loop {
            let page = self
                .check_schema(ctx, namespace, document, cursor.as_deref(), 500)
                .await?;
            count += page.failing.len() as u64;
            first.extend(
                page.failing
                    .into_iter()
                    .map(|f| f.key)
                    .take(10 - first.len().min(10)),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((count, first)),
            }
        }
    }
}

/// Whether two JSON texts are the same document (whitespace and key order aside).
fn same_json(a: &str, b: &str) -> bool {
    match (crate::json::parse_value(a), crate::json::parse_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(path: &str) -> Result<String, String> {
        match path {
            "ok.json" => Ok(r#"{"type":"object"}"#.into()),
            "bad.json" => Ok(r#"{"$ref":"https://evil.example/x"}"#.into()),
            _ => Err("no such file".into()),
        }
    }

    fn error(manifest: &str) -> String {
        match parse(manifest, Limits::DEFAULT, Limits::DEFAULT, &files) {
            Ok(_) => panic!("{manifest} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_section() {
        let manifest = r#"{"storage":{"namespaces":{"a":{"schema":"ok.json"},"b":{}},
            "limits":{"maxKeysPerNamespace":10,"maxValueBytes":1024}}}"#;
        let Parsed {
            namespaces,
            limits,
            policy,
        } = parse(manifest, Limits::DEFAULT, Limits::DEFAULT, &files).unwrap();
        assert_eq!(namespaces.len(), 2);
        assert!(namespaces[0].1.is_some() && namespaces[1].1.is_none());
        assert_eq!(
            (limits.max_keys_per_namespace, limits.max_value_bytes),
            (10, 1024)
        );
        assert_eq!(policy, OnIncompatible::Refuse);
        assert!(parse("{}", Limits::DEFAULT, Limits::DEFAULT, &files).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        assert!(
            error(r#"{"storage":{"namespaces":{"Bad":{}}}}"#)
                .starts_with("storage.namespaces.Bad:")
        );
        assert!(
            error(r#"{"storage":{"namespaces":{"a":{"schema":"missing.json"}}}}"#)
                .starts_with("storage.namespaces.a.schema: missing.json")
        );
        assert!(
            error(r#"{"storage":{"namespaces":{"a":{"schema":"bad.json"}}}}"#)
                .contains("only local references")
        );
        let too_big = error(r#"{"storage":{"limits":{"maxValueBytes":999999999}}}"#);
        assert!(
            too_big.starts_with("storage.limits.maxValueBytes: is 999999999"),
            "{too_big}"
        );
        assert!(error(r#"{"storage":{"limits":{"maxNamespaces":0}}}"#).contains("maxNamespaces"));
        assert!(error(r#"{"storage":{"extra":1}}"#).contains("unknown field"));
        assert!(error(r#"{"storage":{"onIncompatibleSchema":"yolo"}}"#).contains("yolo"));
        assert!(error("not json").starts_with("manifest:"));
    }
}
