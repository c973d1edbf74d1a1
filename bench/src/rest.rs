//! The REST path: a gateway over the same database on a loopback port, and a keep-alive HTTP
//! client sending what the iframe SDK sends (bearer token per install, JSON bodies, ETags).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use alga_storage::http::auth::{TokenClaims, TokenKey, TokenVerifier};
use alga_storage::http::{Gateway, GatewayConfig};
use alga_storage::model::Precondition;
use alga_storage::{STORAGE_CAPABILITY, StorageService};

use crate::target::Request;

const AUDIENCE: &str = "alga-storage-bench";

/// A gateway serving in this process and a client of it.
pub struct RestTarget {
    client: reqwest::Client,
    base: String,
    key: TokenKey,
    /// One session token per install, minted once (an iframe reuses its token too).
    tokens: Mutex<HashMap<String, String>>,
    server: tokio::task::JoinHandle<()>,
}

impl RestTarget {
    /// Starts a gateway over `service` on `127.0.0.1:<free port>`.
    pub async fn start(service: StorageService) -> anyhow::Result<Self> {
        let key = TokenKey::new("bench", vec![7u8; 32]).map_err(anyhow::Error::msg)?;
        let config = GatewayConfig::new(TokenVerifier::new(vec![key.clone()], AUDIENCE));
        let router = Gateway::new(service, config).router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/api/ext-storage/v1", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = alga_storage::http::serve(listener, router, std::future::pending()).await;
        });
        Ok(Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            base,
            key,
            tokens: Mutex::new(HashMap::new()),
            server,
        })
    }

    fn token(&self, install: &str) -> String {
        let mut tokens = self.tokens.lock().expect("token cache");
        tokens
            .entry(install.to_owned())
            .or_insert_with(|| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs();
                self.key.mint(&TokenClaims {
                    aud: AUDIENCE.into(),
                    sub: "bench".into(),
                    tenant: crate::workload::TENANT.into(),
                    install: install.into(),
                    extension: install.into(),
                    caps: [STORAGE_CAPABILITY.to_owned()].into(),
                    iat: now,
                    exp: now + 3600,
                    nbf: None,
                })
            })
            .clone()
    }

    fn record_url(&self, req: &Request<'_>) -> String {
        // Benchmark keys and namespaces are URL-safe.
        format!(
            "{}/namespaces/{}/records/{}",
            self.base, req.namespace, req.key
        )
    }

    /// `PUT` with `If-Match` / `If-None-Match` from the precondition.
    pub async fn put(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let mut request = self
            .client
            .put(self.record_url(req))
            .bearer_auth(self.token(req.install))
            .header("content-type", "application/json")
            .body(format!(r#"{{"value":{}}}"#, req.value));
        request = match req.precondition {
            Precondition::None => request,
            Precondition::Absent => request.header("if-none-match", "*"),
            Precondition::Revision(r) => request.header("if-match", format!("\"{r}\"")),
        };
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "PUT {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// `GET` one record.
    pub async fn get(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let response = self
            .client
            .get(self.record_url(req))
            .bearer_auth(self.token(req.install))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status.is_success(), "GET {status}");
        anyhow::ensure!(!body.is_empty(), "empty record");
        Ok(())
    }

    /// `GET` the first page of 100.
    pub async fn list(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let response = self
            .client
            .get(format!(
                "{}/namespaces/{}/records?limit=100",
                self.base, req.namespace
            ))
            .bearer_auth(self.token(req.install))
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "LIST {status}");
        // Checked, not kept: the client's parsing should not dominate the figure.
        let page: PageShape = response.json().await?;
        anyhow::ensure!(page.entries.len() == 100, "short page");
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct PageShape {
    entries: Vec<serde::de::IgnoredAny>,
}

impl Drop for RestTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}
