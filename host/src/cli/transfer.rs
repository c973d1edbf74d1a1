//! `alga-storage export` / `import`: one install's data as NDJSON, for portability between
//! deployments and engines and for tenant-scoped restores.
//!
//! Lines, in order: a `header`, every `schema` version (oldest first per namespace), every
//! live `record` (by namespace, in key order), and an `end` line with the counts. Times are
//! microseconds since the Unix epoch, so a round trip is exact.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InstallArgs;
use crate::backend::StoredSchema;
use crate::model::Record;
use crate::{CallContext, StorageService};

/// The format's name in the header line.
const FORMAT: &str = "alga-storage-export";

/// Records restored per transaction (and per checkpoint of a resumable import).
const IMPORT_BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    install: InstallArgs,
    /// Where to write the NDJSON (`-` for stdout).
    #[arg(long, default_value = "-")]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    /// The NDJSON file written by `export`.
    input: PathBuf,
    /// Import into this tenant instead of the exported one.
    #[arg(long)]
    tenant: Option<String>,
    /// Import into this install instead of the exported one.
    #[arg(long)]
    install: Option<String>,
    /// Ignore the checkpoint of an interrupted import and start from the first line.
    #[arg(long)]
    restart: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Line {
    #[serde(rename_all = "camelCase")]
    Header {
        format: String,
        version: u32,
        tenant: String,
        install: String,
        exported_at_us: i64,
    },
    #[serde(rename_all = "camelCase")]
    Schema {
        namespace: String,
        version: u32,
        document: Value,
    },
    #[serde(rename_all = "camelCase")]
    Record {
        namespace: String,
        key: String,
        value: Value,
        metadata: Option<Value>,
        revision: u64,
        schema_version: Option<u32>,
        expires_at_us: Option<i64>,
        created_at_us: i64,
        updated_at_us: i64,
    },
    #[serde(rename_all = "camelCase")]
    End { schemas: u64, records: u64 },
}

fn micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn time(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn operator(tenant: &str, install: &str) -> CallContext {
    CallContext::new(tenant, install).actor("operator:cli")
}

pub(super) async fn export(service: &StorageService, args: ExportArgs) -> anyhow::Result<()> {
    let ctx = operator(&args.install.tenant, &args.install.install);
    let out: Box<dyn Write> = if args.output == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        )
    };
    let mut out = BufWriter::new(out);
    let mut write = |line: &Line| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    write(&Line::Header {
        format: FORMAT.into(),
        version: 1,
        tenant: ctx.tenant_id.clone(),
        install: ctx.install_id.clone(),
        exported_at_us: micros(SystemTime::now()),
    })?;
    let schemas = service.schema_versions(&ctx).await?;
    for (namespace, schema) in &schemas {
        write(&Line::Schema {
            namespace: namespace.clone(),
            version: schema.version,
            document: serde_json::from_str(&schema.document)?,
        })?;
    }
    let namespaces = service.namespaces(&ctx).await?;
    let progress = bar(namespaces.iter().map(|(_, keys)| keys).sum(), "exporting");
    let mut records = 0u64;
    for (namespace, _) in &namespaces {
        let mut cursor = None;
        loop {
            let page = service.export_page(&ctx, namespace, cursor).await?;
            for record in &page.entries {
                write(&record_line(namespace, record)?)?;
                records += 1;
                progress.inc(1);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    write(&Line::End {
        schemas: schemas.len() as u64,
        records,
    })?;
    out.flush()?;
    progress.finish_and_clear();
    eprintln!(
        "exported {records} record(s) and {} schema version(s) of {}/{}",
        schemas.len(),
        ctx.tenant_id,
        ctx.install_id
    );
    Ok(())
}

fn record_line(namespace: &str, record: &Record) -> anyhow::Result<Line> {
    Ok(Line::Record {
        namespace: namespace.to_owned(),
        key: record.key.clone(),
        value: serde_json::from_str(record.value.as_deref().unwrap_or("null"))?,
        metadata: record
            .metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()?,
        revision: record.revision,
        schema_version: record.schema_version,
        expires_at_us: record.expires_at.map(micros),
        created_at_us: micros(record.created_at),
        updated_at_us: micros(record.updated_at),
    })
}

/// The checkpoint file of an import: how many lines of the input are committed.
fn checkpoint_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

pub(super) async fn import(service: &StorageService, args: ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let size = file.metadata()?.len();
    let checkpoint = checkpoint_path(&args.input);
    let skip: u64 = if args.restart {
        0
    } else {
        std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    if skip > 0 {
        eprintln!("resuming after line {skip} ({})", checkpoint.display());
    }
    let progress = bar(size, "importing (bytes)");
    let mut lines = BufReader::new(file).lines();
    let header = lines.next().context("the file is empty")??;
    progress.inc(header.len() as u64 + 1);
    let Line::Header {
        format,
        version,
        tenant,
        install,
        ..
    } = serde_json::from_str(&header).context("line 1 is not an export header")?
    else {
        bail!("line 1 is not an export header");
    };
    if format != FORMAT || version != 1 {
        bail!("unsupported export format {format:?} version {version}");
    }
    let ctx = operator(
        args.tenant.as_deref().unwrap_or(&tenant),
        args.install.as_deref().unwrap_or(&install),
    );

    let mut pending: Vec<Record> = Vec::new();
    let mut pending_namespace = String::new();
    let (mut schemas, mut records, mut number, mut ended) = (0u64, 0u64, 1u64, false);
    for line in lines {
        let line = line?;
        number += 1;
        progress.inc(line.len() as u64 + 1);
        if number <= skip {
            // Committed by the interrupted run (an end line there means it got that far).
            ended |= line.contains(r#""type":"end""#);
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("line {number} is not an export line"))?;
        match parsed {
            Line::Header { .. } => bail!("line {number}: a second header"),
            Line::Schema {
                namespace,
                version,
                document,
            } => {
                let stored = StoredSchema {
                    version,
                    document: document.to_string(),
                };
                service.restore_schema(&ctx, &namespace, &stored).await?;
                schemas += 1;
                std::fs::write(&checkpoint, number.to_string())?;
            }
            Line::Record {
                namespace,
                key,
                value,
                metadata,
                revision,
                schema_version,
                expires_at_us,
                created_at_us,
                updated_at_us,
            } => {
                if namespace != pending_namespace || pending.len() >= IMPORT_BATCH {
                    flush(
                        service,
                        &ctx,
                        &pending_namespace,
                        &mut pending,
                        &checkpoint,
                        number - 1,
                    )
                    .await?;
                    pending_namespace = namespace;
                }
                pending.push(Record {
                    key,
                    value: Some(value.to_string()),
                    metadata: metadata.map(|m| m.to_string()),
                    revision,
                    schema_version,
                    expires_at: expires_at_us.map(time),
                    created_at: time(created_at_us),
                    updated_at: time(updated_at_us),
                });
                records += 1;
            }
            Line::End {
                schemas: expected_schemas,
                records: expected_records,
            } => {
                flush(
                    service,
                    &ctx,
                    &pending_namespace,
                    &mut pending,
                    &checkpoint,
                    number,
                )
                .await?;
                ended = true;
                if skip == 0 && (expected_schemas, expected_records) != (schemas, records) {
                    bail!(
                        "the file announces {expected_schemas} schema(s) and {expected_records} \
                         record(s) but holds {schemas} and {records}"
                    );
                }
            }
        }
    }
    if !ended {
        flush(
            service,
            &ctx,
            &pending_namespace,
            &mut pending,
            &checkpoint,
            number,
        )
        .await?;
        bail!("the file ends without its end line: truncated? ({records} record(s) imported)");
    }
    let repaired = service.recount(&ctx, true).await?;
    let _ = std::fs::remove_file(&checkpoint);
    progress.finish_and_clear();
    eprintln!(
        "imported {records} record(s) and {schemas} schema version(s) into {}/{} \
         ({} counter(s) recomputed)",
        ctx.tenant_id,
        ctx.install_id,
        repaired.len()
    );
    Ok(())
}

/// Restores the pending records in one transaction, then records the checkpoint.
async fn flush(
    service: &StorageService,
    ctx: &CallContext,
    namespace: &str,
    pending: &mut Vec<Record>,
    checkpoint: &Path,
    line: u64,
) -> anyhow::Result<()> {
    if !pending.is_empty() {
        service.restore_records(ctx, namespace, pending).await?;
        pending.clear();
    }
    std::fs::write(checkpoint, line.to_string())?;
    Ok(())
}
