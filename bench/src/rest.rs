//! The REST path: a gateway over the same database on a loopback port, and keep-alive HTTP
//! connections sending what the iframe SDK sends (bearer token per install, JSON bodies, ETags).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use alga_storage::http::auth::{TokenClaims, TokenKey, TokenVerifier};
use alga_storage::http::{Gateway, GatewayConfig};
use alga_storage::model::Precondition;
use alga_storage::{STORAGE_CAPABILITY, StorageService};

use crate::http_client::{HttpClient, Response};
use crate::target::Request;

const AUDIENCE: &str = "alga-storage-bench";

/// A gateway serving in this process and a client of it.
pub struct RestTarget {
    client: HttpClient,
    key: TokenKey,
    /// One `authorization` header per install, its token minted once (an iframe reuses its
    /// token too).
    authorizations: Mutex<HashMap<String, Arc<str>>>,
    server: tokio::task::JoinHandle<()>,
}

impl RestTarget {
    /// Starts a gateway over `service` on `127.0.0.1:<free port>`.
    pub async fn start(service: StorageService) -> anyhow::Result<Self> {
        let key = TokenKey::new("bench", vec![7u8; 32]).map_err(anyhow::Error::msg)?;
        let config = GatewayConfig::new(TokenVerifier::new(vec![key.clone()], AUDIENCE));
        let router = Gateway::new(service, config).router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = alga_storage::http::serve(listener, router, std::future::pending()).await;
        });
        Ok(Self {
            client: HttpClient::new(addr),
            key,
            authorizations: Mutex::new(HashMap::new()),
            server,
        })
    }

    /// The install's `authorization` header line, shared rather than copied per request: the
    /// load generator's CPU is taken from the system it measures.
    fn authorization(&self, install: &str) -> Arc<str> {
        let mut authorizations = self.authorizations.lock().expect("token cache");
        if let Some(authorization) = authorizations.get(install) {
            return authorization.clone();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let token = self.key.mint(&TokenClaims {
            aud: AUDIENCE.into(),
            sub: "bench".into(),
            tenant: crate::workload::TENANT.into(),
            install: install.into(),
            extension: install.into(),
            caps: [STORAGE_CAPABILITY.to_owned()].into(),
            iat: now,
            exp: now + 3600,
            nbf: None,
            quotas: None,
        });
        let authorization: Arc<str> = format!("authorization: Bearer {token}").into();
        authorizations.insert(install.to_owned(), authorization.clone());
        authorization
    }

    fn record_path(req: &Request<'_>) -> String {
        // Benchmark keys and namespaces are URL-safe.
        format!("{BASE}/namespaces/{}/records/{}", req.namespace, req.key)
    }

    /// `PUT` with `If-Match` / `If-None-Match` from the precondition.
    pub async fn put(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let body = format!(r#"{{"value":{}}}"#, req.value);
        let authorization = self.authorization(req.install);
        let precondition = match req.precondition {
            Precondition::None => None,
            Precondition::Absent => Some("if-none-match: *".to_owned()),
            Precondition::Revision(r) => Some(format!("if-match: \"{r}\"")),
        };
        let mut headers = vec![&*authorization, "content-type: application/json"];
        headers.extend(precondition.as_deref());
        let response = self
            .client
            .send("PUT", &Self::record_path(req), &headers, body.as_bytes())
            .await?;
        ensure_success("PUT", &response)
    }

    /// `DELETE` with `If-Match` at `revision`; the record must have been deleted.
    pub async fn delete(&self, req: &Request<'_>, revision: u64) -> anyhow::Result<()> {
        let authorization = self.authorization(req.install);
        let if_match = format!("if-match: \"{revision}\"");
        let response = self
            .client
            .send(
                "DELETE",
                &Self::record_path(req),
                &[&*authorization, &if_match],
                b"",
            )
            .await?;
        ensure_success("DELETE", &response)?;
        let outcome: Deleted = serde_json::from_slice(&response.body)?;
        anyhow::ensure!(outcome.deleted, "{} missing", req.key);
        Ok(())
    }

    /// `GET` one record.
    pub async fn get(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let authorization = self.authorization(req.install);
        let response = self
            .client
            .send("GET", &Self::record_path(req), &[&*authorization], b"")
            .await?;
        ensure_success("GET", &response)?;
        anyhow::ensure!(!response.body.is_empty(), "empty record");
        Ok(())
    }

    /// `GET` the first page of 100.
    pub async fn list(&self, req: &Request<'_>) -> anyhow::Result<()> {
        let authorization = self.authorization(req.install);
        let path = format!("{BASE}/namespaces/{}/records?limit=100", req.namespace);
        let response = self
            .client
            .send("GET", &path, &[&*authorization], b"")
            .await?;
        ensure_success("LIST", &response)?;
        // Checked, not kept: the client's parsing should not dominate the figure.
        let page: PageShape = serde_json::from_slice(&response.body)?;
        anyhow::ensure!(page.entries.len() == 100, "short page");
        Ok(())
    }
}

/// The path prefix of the gateway's API.
const BASE: &str = alga_storage::http::API_BASE;

fn ensure_success(what: &str, response: &Response) -> anyhow::Result<()> {
    anyhow::ensure!(
        (200..300).contains(&response.status),
        "{what} {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}

#[derive(serde::Deserialize)]
struct Deleted {
    deleted: bool,
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
