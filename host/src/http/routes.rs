//! The routes: one [`Operation`] per route, so the router and the OpenAPI document are built
//! from the same list. Handlers translate and call the service; they decide nothing.

use std::convert::Infallible;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json, Router};

use super::extract::{
    BodyLimit, Caller, ConditionalHeaders, JsonBody, etag, no_precondition, precondition,
};
use super::problem::ApiError;
use super::wire::{
    BulkBody, BulkWritten, Deleted, InstallUsage, JsonText, ListParams, PutBody, Schema, Written,
    entry_json, page_json,
};
use super::{Shared, openapi_document};
use crate::error::{BulkError, StorageError};
use crate::limits::{MAX_BULK_ITEMS, MAX_METADATA_BYTES, MAX_VALUE_BYTES};
use crate::model::ListOptions;

/// Room for the JSON envelope around a value: field names, options, escaping slack.
const ENVELOPE_BYTES: usize = 16 * 1024;

/// Largest body of a one-record write.
pub const MAX_PUT_BODY_BYTES: usize = MAX_VALUE_BYTES + MAX_METADATA_BYTES + ENVELOPE_BYTES;

/// Largest body of a bulk put: as many one-record bodies as a bulk takes items (each item also
/// carries its key, escaped up to six-fold, within the envelope's room).
pub const MAX_BULK_BODY_BYTES: usize = MAX_BULK_ITEMS * MAX_PUT_BODY_BYTES;

/// Every route of the API. Adding one here without a handler or documentation does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET namespaces/{namespace}/records/{key}`
    GetRecord,
    /// `PUT namespaces/{namespace}/records/{key}`
    PutRecord,
    /// `DELETE namespaces/{namespace}/records/{key}`
    DeleteRecord,
    /// `GET namespaces/{namespace}/records`
    ListRecords,
    /// `POST namespaces/{namespace}/bulk`
    BulkPut,
    /// `GET namespaces/{namespace}/schema`
    GetSchema,
    /// `GET usage`
    GetUsage,
    /// `GET openapi.json`
    OpenApi,
}

impl Operation {
    /// All operations, in document order.
    pub const ALL: [Operation; 8] = [
        Operation::GetRecord,
        Operation::PutRecord,
        Operation::DeleteRecord,
        Operation::ListRecords,
        Operation::BulkPut,
        Operation::GetSchema,
        Operation::GetUsage,
        Operation::OpenApi,
    ];

    /// The path under [`super::API_BASE`], in axum and OpenAPI syntax alike.
    pub fn path(self) -> &'static str {
        match self {
            Operation::GetRecord | Operation::PutRecord | Operation::DeleteRecord => {
                "/namespaces/{namespace}/records/{key}"
            }
            Operation::ListRecords => "/namespaces/{namespace}/records",
            Operation::BulkPut => "/namespaces/{namespace}/bulk",
            Operation::GetSchema => "/namespaces/{namespace}/schema",
            Operation::GetUsage => "/usage",
            Operation::OpenApi => "/openapi.json",
        }
    }

    /// The HTTP method, lower case as in OpenAPI.
    pub fn method(self) -> &'static str {
        match self {
            Operation::PutRecord => "put",
            Operation::DeleteRecord => "delete",
            Operation::BulkPut => "post",
            _ => "get",
        }
    }

    fn endpoint(self) -> MethodRouter<Shared> {
        match self {
            Operation::GetRecord => get(get_record),
            Operation::PutRecord => put(put_record)
                .layer::<_, Infallible>(DefaultBodyLimit::max(MAX_PUT_BODY_BYTES))
                .layer::<_, Infallible>(Extension(BodyLimit(MAX_PUT_BODY_BYTES))),
            Operation::DeleteRecord => delete(delete_record),
            Operation::ListRecords => get(list_records),
            Operation::BulkPut => post(bulk_put)
                .layer::<_, Infallible>(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES))
                .layer::<_, Infallible>(Extension(BodyLimit(MAX_BULK_BODY_BYTES))),
            Operation::GetSchema => get(get_schema),
            Operation::GetUsage => get(get_usage),
            Operation::OpenApi => get(openapi_document),
        }
    }
}

/// The API router, every route under its full path ([`super::API_BASE`] and the operation's).
/// Merged into the gateway's router rather than nested: nesting strips the prefix from every
/// request (a new URI) and routes it a second time.
pub(super) fn api(state: Shared) -> Router {
    let mut router = Router::new();
    for operation in Operation::ALL {
        let path = format!("{}{}", super::API_BASE, operation.path());
        router = router.route(&path, operation.endpoint());
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn method_not_allowed(request: axum::extract::Request) -> ApiError {
    ApiError::NoRoute {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    }
}

/// A failed `If-Match` / `If-None-Match` is a 412; every other outcome maps as usual.
fn precondition_failed(error: StorageError) -> ApiError {
    match error {
        StorageError::RevisionConflict { .. } => ApiError::Precondition(error),
        other => ApiError::Storage(other),
    }
}

type NamespaceKey = Result<Path<(String, String)>, PathRejection>;
type NamespaceOnly = Result<Path<String>, PathRejection>;

fn path_value<T>(path: Result<Path<T>, PathRejection>) -> Result<T, StorageError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| StorageError::InvalidInput {
            field: "path",
            message: rejection.body_text(),
        })
}

fn with_etag(status: StatusCode, revision: u64, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(revision)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn get_record(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceKey,
    ConditionalHeaders(headers): ConditionalHeaders,
) -> Result<Response, ApiError> {
    let (namespace, key) = path_value(path)?;
    // Not a cache validator: a key's revision starts again at 1 when it is re-created (after a
    // delete or its expiry), so "1" can name two values over time.
    no_precondition(
        &headers,
        "reads are not conditional (a re-created key's revisions start again at 1)",
    )?;
    let record = gateway
        .service
        .get(&ctx, &namespace, &key)
        .await?
        .ok_or_else(|| StorageError::NotFound(format!("no record {key:?} in {namespace:?}")))?;
    Ok(with_etag(
        StatusCode::OK,
        record.revision,
        JsonText(entry_json(&record)),
    ))
}

async fn put_record(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceKey,
    ConditionalHeaders(headers): ConditionalHeaders,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    let (namespace, key) = path_value(path)?;
    let options = body.options(precondition(&headers)?);
    let written = gateway
        .service
        .put(&ctx, &namespace, &key, body.value.get(), &options)
        .await
        .map_err(precondition_failed)?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let revision = written.revision;
    Ok(with_etag(status, revision, Json(Written::from(written))))
}

async fn delete_record(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceKey,
    ConditionalHeaders(headers): ConditionalHeaders,
) -> Result<Json<Deleted>, ApiError> {
    let (namespace, key) = path_value(path)?;
    let precondition = precondition(&headers)?;
    let deleted = gateway
        .service
        .delete(&ctx, &namespace, &key, precondition)
        .await
        .map_err(precondition_failed)?;
    Ok(Json(Deleted { deleted }))
}

async fn list_records(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceOnly,
    query: Result<Query<ListParams>, QueryRejection>,
    ConditionalHeaders(headers): ConditionalHeaders,
) -> Result<JsonText, ApiError> {
    let namespace = path_value(path)?;
    no_precondition(
        &headers,
        "a page has no ETag; read one record to compare revisions",
    )?;
    let Query(params) = query.map_err(|rejection| StorageError::InvalidInput {
        field: "query",
        message: rejection.body_text(),
    })?;
    let options = ListOptions {
        prefix: params.prefix,
        cursor: params.cursor,
        limit: params.limit,
        keys_only: params.keys_only,
    };
    let page = gateway.service.list(&ctx, &namespace, &options).await?;
    Ok(JsonText(page_json(&page)))
}

async fn bulk_put(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceOnly,
    ConditionalHeaders(headers): ConditionalHeaders,
    JsonBody(body): JsonBody<BulkBody>,
) -> Result<Json<BulkWritten>, ApiError> {
    let namespace = path_value(path)?;
    no_precondition(&headers, "give each item ifAbsent or ifRevision")?;
    let items = body
        .items
        .into_iter()
        .enumerate()
        .map(|(index, item)| item.into_model(index).map_err(|e| BulkError::at(index, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let results = gateway.service.bulk_put(&ctx, &namespace, &items).await?;
    Ok(Json(BulkWritten {
        results: results.into_iter().map(Written::from).collect(),
    }))
}

async fn get_schema(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
    path: NamespaceOnly,
) -> Result<Json<Schema>, ApiError> {
    let namespace = path_value(path)?;
    let schema = gateway
        .service
        .schema(&ctx, &namespace)
        .await?
        .ok_or_else(|| StorageError::NotFound(format!("namespace {namespace:?} has no schema")))?;
    let document = serde_json::value::RawValue::from_string(schema.document)
        .map_err(|e| StorageError::Internal(format!("stored schema does not parse: {e}")))?;
    Ok(Json(Schema {
        version: schema.version,
        document,
    }))
}

async fn get_usage(
    State(gateway): State<Shared>,
    Caller(ctx): Caller,
) -> Result<Json<InstallUsage>, ApiError> {
    Ok(Json(gateway.service.usage(&ctx).await?.into()))
}
