//! A REST gateway on a loopback port for one test, and tokens for it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use alga_storage::StorageService;
use alga_storage::http::auth::{TokenClaims, TokenKey, TokenVerifier};
use alga_storage::http::{API_BASE, Gateway, GatewayConfig};

/// The audience of test tokens.
pub const AUDIENCE: &str = "alga-storage-test";

/// The id of the test signing key.
pub const KEY_ID: &str = "test-key-1";

/// The test signing key's secret (tests only; real keys come from the platform).
pub const KEY_SECRET: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

/// A gateway serving on `127.0.0.1:<free port>` until dropped.
pub struct TestGateway {
    /// The server's address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>/api/ext-storage/v1`
    pub base: String,
    key: TokenKey,
    server: tokio::task::JoinHandle<()>,
}

/// The test key.
pub fn test_key() -> TokenKey {
    TokenKey::new(KEY_ID, KEY_SECRET.to_vec()).expect("32-byte key")
}

/// The gateway settings of tests: the test key, [`AUDIENCE`], and the given browser origins.
pub fn test_config(origins: &[&str]) -> GatewayConfig {
    let mut config = GatewayConfig::new(TokenVerifier::new(vec![test_key()], AUDIENCE));
    for origin in origins {
        config = config.allow_origin(origin);
    }
    config
}

impl TestGateway {
    /// Serves a gateway over `service` with the test settings.
    pub async fn start(service: StorageService, origins: &[&str]) -> Self {
        Self::serve(Gateway::new(service, test_config(origins)).router()).await
    }

    /// Serves `router` (a gateway router, possibly merged with test pages).
    pub async fn serve(router: axum::Router) -> Self {
        Self::serve_with(|_| router).await
    }

    /// Serves the router `make` builds for the bound address (for settings that name it, such
    /// as allowed origins).
    pub async fn serve_with(make: impl FnOnce(SocketAddr) -> axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let router = make(addr);
        let server = tokio::spawn(async move {
            alga_storage::http::serve(listener, router, std::future::pending())
                .await
                .expect("serve");
        });
        Self {
            addr,
            base: format!("http://{addr}{API_BASE}"),
            key: test_key(),
            server,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A signed token for `claims`.
    pub fn mint(&self, claims: &TokenClaims) -> String {
        self.key.mint(claims)
    }

    /// A token granting `alga.storage` to `(tenant, install)`.
    pub fn token(&self, tenant: &str, install: &str) -> String {
        self.mint(&claims(
            tenant,
            install,
            &[alga_storage::STORAGE_CAPABILITY],
        ))
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Claims for `(tenant, install)` of the extension `ext-{install}` with `caps`, for
/// [`AUDIENCE`], valid for five minutes from now.
pub fn claims(tenant: &str, install: &str, caps: &[&str]) -> TokenClaims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TokenClaims {
        aud: AUDIENCE.into(),
        sub: "user-1".into(),
        tenant: tenant.into(),
        install: install.into(),
        extension: format!("ext-{install}"),
        caps: caps.iter().map(|c| c.to_string()).collect(),
        iat: now,
        exp: now + 300,
        nbf: None,
        quotas: None,
    }
}
