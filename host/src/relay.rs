//! Audit sinks for the outbox relay ([`StorageService::relay_audit`]): JSON lines to a file or
//! stdout, or NDJSON posted to an HTTP endpoint of the log pipeline (e.g. a local collector).
//!
//! [`StorageService::relay_audit`]: crate::StorageService::relay_audit

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::model::AuditRecord;
use crate::service::{AuditSink, audit_json};

/// Writes one JSON object per line and flushes after each batch (files are also synced).
///
/// A batch cut short by a failed write leaves a torn last line; the next batch starts on a new
/// line, so the torn one stays a single unparsable line (consumers skip it) and the rows it
/// held, never marked shipped, come again whole.
pub struct JsonLinesSink<W> {
    writer: W,
    file: Option<tokio::fs::File>,
    /// The output may end mid-line: start the next batch with a line break.
    torn: bool,
}

impl<W: AsyncWrite + Unpin + Send> JsonLinesSink<W> {
    /// Lines on any writer (flushed after each batch, not synced).
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            file: None,
            torn: false,
        }
    }
}

impl<W> JsonLinesSink<W> {
    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl JsonLinesSink<tokio::io::Stdout> {
    /// Lines on standard output.
    pub fn stdout() -> Self {
        Self::new(tokio::io::stdout())
    }
}

impl JsonLinesSink<tokio::fs::File> {
    /// Lines appended to the file at `path` (created if missing). A file that does not end
    /// with a line break (an earlier run failed mid-batch) gets one before the first batch.
    pub async fn append(path: &Path) -> io::Result<Self> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .await?;
        let len = file.metadata().await?.len();
        let mut last = [b'\n'];
        if len > 0 {
            file.seek(io::SeekFrom::Start(len - 1)).await?;
            file.read_exact(&mut last).await?;
        }
        Ok(Self {
            writer: file.try_clone().await?,
            file: Some(file),
            torn: last[0] != b'\n',
        })
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Unpin + Send> AuditSink for JsonLinesSink<W> {
    async fn ship(&mut self, records: &[AuditRecord]) -> io::Result<()> {
        let mut text = String::new();
        if self.torn {
            text.push('\n');
        }
        for record in records {
            text.push_str(&audit_json(record).to_string());
            text.push('\n');
        }
        self.torn = true;
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.flush().await?;
        if let Some(file) = &self.file {
            file.sync_data().await?;
        }
        self.torn = false;
        Ok(())
    }
}

/// Posts each batch as `application/x-ndjson` to an HTTP endpoint; any status but 2xx, or no
/// answer within the timeout, fails the batch (it is shipped again on the next run). A hung
/// collector thus fails the relay instead of stalling it while unshipped rows age towards
/// retention.
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
}

impl HttpSink {
    /// How long one batch may take, from connecting to the collector's answer.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A sink posting to `url` (plain HTTP: a collector on the host or the private network),
    /// with [`Self::DEFAULT_TIMEOUT`].
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_timeout(url, Self::DEFAULT_TIMEOUT)
    }

    /// A sink whose batches fail after `timeout` without an answer.
    pub fn with_timeout(url: impl Into<String>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("an HTTP client with a timeout builds wherever reqwest::Client::new() does");
        Self {
            client,
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
