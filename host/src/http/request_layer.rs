//! The layer around every request of the gateway: it takes the caller's request id (or makes
//! one), runs the request in a span carrying it, echoes the id in the response, marks API
//! responses uncacheable and says what CORS answers vary by.
//!
//! A tower service written out rather than `axum::middleware::from_fn` and `map_response`:
//! those clone and box the inner service on every call, about a dozen allocations per request
//! between them (counted on the load harness's REST gets); this boxes one future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tracing::Instrument;

use super::{API_BASE, REQUEST_ID_HEADER};

/// Longest accepted caller-supplied request id; longer ones are replaced.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request id of one request, in its extensions until the caller's context takes it (audit
/// rows and logs).
#[derive(Debug, Clone)]
pub(super) struct RequestId(pub(super) String);

/// What a response may differ by for CORS (the allowed origin is echoed, a preflight answers
/// for a method and headers): the request headers of CORS, as `tower_http`'s layer would list
/// them by default.
const CORS_VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// Wraps a router's service in [`WithRequestId`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestLayer;

impl<S> tower::Layer<S> for RequestLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId { inner }
    }
}

/// The inner service, each request given its id, span and response headers.
#[derive(Debug, Clone)]
pub(super) struct WithRequestId<S> {
    inner: S,
}

impl<S> tower::Service<Request> for WithRequestId<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let echo = HeaderValue::from_str(&id).ok();
        // What a URL answers depends on the bearer token (the tenant and install), which no
        // cache keys on: a stored response could answer another install's request for it.
        let no_store = request
            .uri()
            .path()
            .strip_prefix(API_BASE)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        let span = tracing::info_span!(
            target: "alga_storage::http",
            "http.request",
            request_id = %id,
            method = %request.method(),
            path = %request.uri().path(),
            status = tracing::field::Empty,
            tenant = tracing::field::Empty,
            install = tracing::field::Empty,
        );
        request.extensions_mut().insert(RequestId(id));
        // The inner service runs in the span too: extractors record the caller in it.
        let answer = span.in_scope(|| self.inner.call(request));
        let recorder = span.clone();
        Box::pin(
            async move {
                let mut response = answer.await?;
                recorder.record("status", response.status().as_u16());
                let headers = response.headers_mut();
                headers.append(header::VARY, HeaderValue::from_static(CORS_VARY));
                if let Some(value) = echo {
                    headers.insert(REQUEST_ID_HEADER, value);
                }
                if no_store {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
