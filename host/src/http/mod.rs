//! The REST gateway for iframe UIs: the WIT contract over HTTP, with the same semantics because
//! every route calls the one [`StorageService`]. A route only translates: token → context,
//! headers and JSON → service arguments, outcome → status and body.
//!
//! ```no_run
//! use std::sync::Arc;
//! use alga_storage::backend::postgres::PgBackend;
//! use alga_storage::http::{Gateway, GatewayConfig};
//! use alga_storage::http::auth::{TokenKey, TokenVerifier};
//! use alga_storage::StorageService;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let service = StorageService::new(Arc::new(PgBackend::connect("postgres://localhost/alga", 16)?));
//! let key = TokenKey::new("2026-11", vec![0u8; 32])?;
//! let config = GatewayConfig::new(TokenVerifier::new(vec![key], "alga-storage"))
//!     .allow_origin("https://app.example.com");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! alga_storage::http::serve(listener, Gateway::new(service, config).router(), shutdown).await?;
//! # Ok(()) }
//! ```

pub mod auth;
mod extract;
pub mod openapi;
pub mod problem;
mod request_layer;
mod routes;
pub mod wire;

pub use routes::{MAX_BULK_BODY_BYTES, MAX_PUT_BODY_BYTES};

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::service::StorageService;
use auth::TokenVerifier;
use problem::ApiError;

/// Where the API lives.
pub const API_BASE: &str = "/api/ext-storage/v1";

/// The header carrying the request id, taken from the caller or generated.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The gateway's settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    verifier: TokenVerifier,
    allowed_origins: Vec<HeaderValue>,
}

impl GatewayConfig {
    /// Settings verifying tokens with `verifier`, with no cross-origin access allowed.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            allowed_origins: Vec::new(),
        }
    }

    /// Allows browser calls from `origin` (e.g. `https://app.example.com`), the platform's
    /// origins that serve extension iframes.
    ///
    /// # Panics
    /// When `origin` is not a valid header value.
    pub fn allow_origin(mut self, origin: &str) -> Self {
        self.allowed_origins
            .push(HeaderValue::from_str(origin).expect("an origin is a valid header value"));
        self
    }
}

/// The gateway: a [`StorageService`] and the settings, turned into an axum [`Router`].
#[derive(Debug, Clone)]
pub struct Gateway {
    service: StorageService,
    config: GatewayConfig,
}

impl Gateway {
    /// A gateway over `service`.
    pub fn new(service: StorageService, config: GatewayConfig) -> Self {
        Self { service, config }
    }

    /// The routes under [`API_BASE`] (with the OpenAPI document at `openapi.json`), `GET
    /// /metrics` (Prometheus; keep it off the public network), `GET /healthz`, CORS and request
    /// ids: every response echoes its `X-Request-Id` and says `Vary` for CORS, every one under
    /// [`API_BASE`] is `Cache-Control: no-store`. Merge it into the embedder's router (one
    /// without a fallback of its own: this router has one) or serve it alone.
    pub fn router(self) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.config.allowed_origins.clone()))
            .allow_methods([Method::GET, Method::PUT, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .expose_headers([
                // The gateway's clock, for a client that keeps a record's expiry across a
                // rewrite (the iframe SDK's `update`).
                header::DATE,
                header::ETAG,
                header::RETRY_AFTER,
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            // `request_layer` sets `Vary` on every response, as a constant: the layer's own
            // joins the names anew for every request.
            .vary([]);
        let shared = Arc::new(self);
        Router::new()
            .merge(routes::api(shared.clone()))
            .route("/metrics", axum::routing::get(metrics).with_state(shared))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .fallback(no_route)
            .layer(cors)
            .layer(request_layer::RequestLayer)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, with `TCP_NODELAY` on every
/// connection so small responses are not held back waiting for the peer's ACK.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// State of every route.
type Shared = Arc<Gateway>;

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute {
        status: StatusCode::NOT_FOUND,
        message: format!("no route {} {}", request.method(), request.uri().path()),
    }
}

async fn metrics(State(gateway): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.service.metrics().encode(),
    )
        .into_response()
}

async fn openapi_document(State(_): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document().to_string(),
    )
        .into_response()
}
