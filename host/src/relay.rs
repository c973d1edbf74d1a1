//! Audit sinks for the outbox relay ([`StorageService::relay_audit`]): JSON lines to a file or
//! stdout, or NDJSON posted to an HTTP endpoint of the log pipeline (e.g. a local collector).
//!
//! [`StorageService::relay_audit`]: crate::StorageService::relay_audit

use std::io;
use std::path::Path;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::model::AuditRecord;
use crate::service::{AuditSink, audit_json};

/// Writes one JSON object per line and flushes after each batch (files are also synced).
pub struct JsonLinesSink<W> {
    writer: W,
    file: Option<tokio::fs::File>,
}

impl JsonLinesSink<tokio::io::Stdout> {
    /// Lines on standard output.
    pub fn stdout() -> Self {
        Self {
            writer: tokio::io::stdout(),
            file: None,
        }
    }
}

impl JsonLinesSink<tokio::fs::File> {
    /// Lines appended to the file at `path` (created if missing).
    pub async fn append(path: &Path) -> io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(Self {
            writer: file.try_clone().await?,
            file: Some(file),
        })
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Unpin + Send> AuditSink for JsonLinesSink<W> {
    async fn ship(&mut self, records: &[AuditRecord]) -> io::Result<()> {
        let mut text = String::new();
        for record in records {
            text.push_str(&audit_json(record).to_string());
            text.push('\n');
        }
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.flush().await?;
        if let Some(file) = &self.file {
            file.sync_data().await?;
        }
        Ok(())
    }
}

/// Posts each batch as `application/x-ndjson` to an HTTP endpoint; any status but 2xx fails the
/// batch (it is shipped again on the next run).
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
}

impl HttpSink {
    /// A sink posting to `url` (plain HTTP: a collector on the host or the private network).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: url.into(),
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for HttpSink {
    async fn ship(&mut self, records: &[AuditRecord]) -> io::Result<()> {
        let mut body = String::new();
        for record in records {
            body.push_str(&audit_json(record).to_string());
            body.push('\n');
        }
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(io::Error::other)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} answered {}",
                self.url,
                response.status()
            )))
        }
    }
}
