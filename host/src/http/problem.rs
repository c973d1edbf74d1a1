//! Errors as RFC 9457 `application/problem+json`, carrying the same stable codes and payloads as
//! the WIT `error` variant. Database internals never reach a response body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::TokenError;
use crate::error::{BulkError, StorageError};

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response of the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A storage outcome from the service.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A failed bulk put, naming its item.
    #[error(transparent)]
    Bulk(#[from] BulkError),
    /// A precondition given in `If-Match` / `If-None-Match` failed (412, not 409); always a
    /// `revision-conflict`.
    #[error(transparent)]
    Precondition(StorageError),
    /// No valid session token.
    #[error(transparent)]
    Unauthenticated(#[from] TokenError),
    /// The request body is larger than the route accepts.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The route's limit.
        limit: usize,
    },
    /// No such route, or the method is not allowed on it.
    #[error("{message}")]
    NoRoute {
        /// 404 or 405.
        status: StatusCode,
        /// What was asked for.
        message: String,
    },
}

impl ApiError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Storage(error) => storage_status(error),
            ApiError::Bulk(error) => storage_status(&error.error),
            ApiError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute { status, .. } => *status,
        }
    }

    /// The stable code (`unauthenticated` and `no-route` exist only over HTTP: components have
    /// no tokens and no routes). An unknown route is not `not-found`, which says a record or
    /// schema is absent: a client with a wrong base URL must not read that as an empty store.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Storage(error) | ApiError::Precondition(error) => error.code(),
            ApiError::Bulk(error) => error.error.code(),
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::BodyTooLarge { .. } => "invalid-input",
            ApiError::NoRoute { .. } => "no-route",
        }
    }

    /// The problem document, without the request id.
    pub fn body(&self) -> Value {
        let status = self.status();
        let code = self.code();
        let mut body = json!({
            "type": format!("urn:alga-storage:problem:{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "code": code,
            "detail": self.detail(),
        });
        let fields = body.as_object_mut().expect("object literal");
        match self {
            ApiError::Storage(error) | ApiError::Precondition(error) => {
                payload(error, fields);
            }
            ApiError::Bulk(error) => {
                payload(&error.error, fields);
                fields.insert("item".into(), json!(error.item));
            }
            ApiError::BodyTooLarge { limit } => {
                fields.insert("field".into(), json!("body"));
                fields.insert("message".into(), json!(format!("exceeds {limit} bytes")));
            }
            ApiError::Unauthenticated(_) | ApiError::NoRoute { .. } => {}
        }
        body
    }

    fn detail(&self) -> String {
        match self {
            // The message may quote database errors: log it, do not return it.
            ApiError::Storage(StorageError::Internal(_)) => "internal error".into(),
            ApiError::Bulk(BulkError {
                error: StorageError::Internal(_),
                ..
            }) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

fn storage_status(error: &StorageError) -> StatusCode {
    match error {
        StorageError::CapabilityDenied(_) => StatusCode::FORBIDDEN,
        StorageError::NotFound(_) => StatusCode::NOT_FOUND,
        StorageError::RevisionConflict { .. } | StorageError::SchemaMismatch { .. } => {
            StatusCode::CONFLICT
        }
        StorageError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        StorageError::ValidationFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StorageError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
        StorageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The WIT payload of `error`, as camelCase fields beside the problem members.
fn payload(error: &StorageError, fields: &mut serde_json::Map<String, Value>) {
    match error {
        StorageError::RevisionConflict {
            key,
            current_revision,
        } => {
            fields.insert("key".into(), json!(key));
            fields.insert("currentRevision".into(), json!(current_revision));
        }
        StorageError::QuotaExceeded {
            quota,
            limit,
            usage,
        } => {
            fields.insert("quota".into(), json!(quota.as_str()));
            fields.insert("limit".into(), json!(limit));
            fields.insert("usage".into(), json!(usage));
        }
        StorageError::ValidationFailed(violations) => {
            let list: Vec<Value> = violations
                .iter()
                .map(|v| {
                    json!({
                        "instancePath": v.instance_path,
                        "keyword": v.keyword,
                        "message": v.message,
                    })
                })
                .collect();
            fields.insert("violations".into(), Value::Array(list));
        }
        StorageError::SchemaMismatch { expected, current } => {
            fields.insert("expected".into(), json!(expected));
            fields.insert("current".into(), json!(current));
        }
        StorageError::InvalidInput { field, message } => {
            fields.insert("field".into(), json!(camel_case(field)));
            fields.insert("message".into(), json!(message));
        }
        _ => {}
    }
}

/// A WIT argument name as REST bodies spell it (`ttl-ms` is `ttlMs`).
fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut words = name.split('-');
    out.extend(words.next());
    for word in words {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.extend(chars);
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let mut response = (status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"alga-storage\""),
                );
            }
            ApiError::Storage(StorageError::Unavailable(_))
            | ApiError::Bulk(BulkError {
                error: StorageError::Unavailable(_),
                ..
            }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
