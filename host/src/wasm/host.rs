//! `alga:storage/store` implemented over the storage service: conversions only, no rules.

use std::time::{Duration, SystemTime};

use super::StorageCtx;
use super::bindings::store as wit;
use crate::error::{BulkError, StorageError};
use crate::model::{ListOptions, Precondition, PutItem, PutOptions, Record, WriteResult};
use crate::service::unix_millis;

impl wit::Host for StorageCtx {
    async fn get(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<wit::Entry>, wit::Error>> {
        let result = self.service.get(&self.call, &namespace, &key).await;
        Ok(result.map(|r| r.map(entry)).map_err(error))
    }

    async fn put(
        &mut self,
        namespace: String,
        key: String,
        value: String,
        options: wit::PutOptions,
    ) -> wasmtime::Result<Result<wit::WriteResult, wit::Error>> {
        let options = put_options(options);
        let result = self
            .service
            .put(&self.call, &namespace, &key, &value, &options)
            .await;
        Ok(result.map(write_result).map_err(error))
    }

    async fn delete(
        &mut self,
        namespace: String,
        key: String,
        precondition: wit::Precondition,
    ) -> wasmtime::Result<Result<bool, wit::Error>> {
        let result = self
            .service
            .delete(
                &self.call,
                &namespace,
                &key,
                self::precondition(precondition),
            )
            .await;
        Ok(result.map_err(error))
    }

    async fn list(
        &mut self,
        namespace: String,
        options: wit::ListOptions,
    ) -> wasmtime::Result<Result<wit::ListPage, wit::Error>> {
        let options = ListOptions {
            prefix: options.prefix,
            cursor: options.cursor,
            limit: options.limit,
            keys_only: options.keys_only,
        };
        let result = self.service.list(&self.call, &namespace, &options).await;
        Ok(result
            .map(|page| wit::ListPage {
                entries: page.entries.into_iter().map(entry).collect(),
                next_cursor: page.next_cursor,
            })
            .map_err(error))
    }

    async fn bulk_put(
        &mut self,
        namespace: String,
        items: Vec<wit::PutItem>,
    ) -> wasmtime::Result<Result<Vec<wit::WriteResult>, wit::BulkError>> {
        let items: Vec<PutItem> = items
            .into_iter()
            .map(|i| PutItem {
                key: i.key,
                value: i.value,
                options: put_options(i.options),
            })
            .collect();
        let result = self.service.bulk_put(&self.call, &namespace, &items).await;
        Ok(result
            .map(|results| results.into_iter().map(write_result).collect())
            .map_err(bulk_error))
    }

    async fn schema(
        &mut self,
        namespace: String,
    ) -> wasmtime::Result<Result<Option<wit::NamespaceSchema>, wit::Error>> {
        let result = self.service.schema(&self.call, &namespace).await;
        Ok(result
            .map(|s| {
                s.map(|s| wit::NamespaceSchema {
                    version: s.version,
                    document: s.document,
                })
            })
            .map_err(error))
    }

    async fn usage(&mut self) -> wasmtime::Result<Result<wit::InstallUsage, wit::Error>> {
        let result = self.service.usage(&self.call).await;
        Ok(result
            .map(|u| wit::InstallUsage {
                namespaces: quota_usage(u.namespaces),
                total_bytes: quota_usage(u.total_bytes),
                per_namespace: u
                    .per_namespace
                    .into_iter()
                    .map(|n| wit::NamespaceUsage {
                        namespace: n.namespace,
                        keys: quota_usage(n.keys),
                        bytes: n.bytes,
                    })
                    .collect(),
            })
            .map_err(error))
    }
}

fn precondition(p: wit::Precondition) -> Precondition {
    match p {
        wit::Precondition::None => Precondition::None,
        wit::Precondition::Absent => Precondition::Absent,
        wit::Precondition::Revision(r) => Precondition::Revision(r),
    }
}

fn put_options(o: wit::PutOptions) -> PutOptions {
    PutOptions {
        precondition: precondition(o.precondition),
        ttl: o.ttl_ms.map(Duration::from_millis),
        metadata: o.metadata,
        schema_version: o.schema_version,
    }
}

fn millis(t: SystemTime) -> u64 {
    unix_millis(t)
}

fn entry(r: Record) -> wit::Entry {
    wit::Entry {
        key: r.key,
        value: r.value,
        metadata: r.metadata,
        revision: r.revision,
        schema_version: r.schema_version,
        expires_at_ms: r.expires_at.map(millis),
        created_at_ms: millis(r.created_at),
        updated_at_ms: millis(r.updated_at),
    }
}

fn write_result(w: WriteResult) -> wit::WriteResult {
    wit::WriteResult {
        key: w.key,
        revision: w.revision,
        created: w.created,
    }
}

fn quota_usage(q: crate::model::QuotaUsage) -> wit::QuotaUsage {
    wit::QuotaUsage {
        used: q.used,
        limit: q.limit,
    }
}

fn bulk_error(e: BulkError) -> wit::BulkError {
    wit::BulkError {
        item: e.item,
        error: error(e.error),
    }
}

fn error(e: StorageError) -> wit::Error {
    match e {
        StorageError::CapabilityDenied(m) => wit::Error::CapabilityDenied(m),
        StorageError::NotFound(m) => wit::Error::NotFound(m),
        StorageError::RevisionConflict {
            key,
            current_revision,
        } => wit::Error::RevisionConflict(wit::RevisionConflict {
            key,
            current_revision,
        }),
        StorageError::QuotaExceeded {
            quota,
            limit,
            usage,
        } => wit::Error::QuotaExceeded(wit::QuotaExceeded {
            quota: quota.as_str().to_owned(),
            limit,
            usage,
        }),
        StorageError::ValidationFailed(violations) => wit::Error::ValidationFailed(
            violations
                .into_iter()
                .map(|v| wit::Violation {
                    instance_path: v.instance_path,
                    keyword: v.keyword,
                    message: v.message,
                })
                .collect(),
        ),
        StorageError::SchemaMismatch { expected, current } => {
            wit::Error::SchemaMismatch(wit::SchemaMismatch { expected, current })
        }
        StorageError::InvalidInput { field, message } => {
            wit::Error::InvalidInput(wit::InvalidInput {
                field: field.to_owned(),
                message,
            })
        }
        StorageError::Unavailable(m) => wit::Error::Unavailable(m),
        StorageError::Internal(m) => wit::Error::Internal(m),
    }
}
