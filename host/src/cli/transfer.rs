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
use serde_json::value::RawValue;

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

/// One NDJSON line; `type` (header, schema, record, end) says which fields it has. Values,
/// metadata and schema documents are carried as the JSON text they are, never re-parsed into
/// numbers (so `12345678901234567890123` or `3.141592653589793238` survive exactly).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    /// The format's version (header) or the schema's version (schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exported_at_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    document: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schemas: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records: Option<u64>,
}

/// A required field of line `number`.
fn need<T>(field: Option<T>, name: &str, number: u64) -> anyhow::Result<T> {
    field.with_context(|| format!("line {number}: missing {name:?}"))
}

fn raw(text: &str) -> anyhow::Result<Box<RawValue>> {
    Ok(RawValue::from_string(compact(text))?)
}

/// `text` (valid JSON) without whitespace outside strings: the stored text of an engine that
/// pretty-prints (PostgreSQL's `jsonb` output) becomes the compact form writers send, so usage
/// bytes recomputed after an import match, and no number is touched.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
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
    // The namespaces to export come from the usage counters: refuse to export from drifted
    // ones rather than silently leave a namespace out.
    if !service.recount(&ctx, false).await?.is_empty() {
        bail!(
            "the usage counters of {}/{} differ from its records; run `alga-storage counters \
             repair` first",
            ctx.tenant_id,
            ctx.install_id
        );
    }
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
    write(&Line {
        kind: "header".into(),
        format: Some(FORMAT.into()),
        version: Some(1),
        tenant: Some(ctx.tenant_id.clone()),
        install: Some(ctx.install_id.clone()),
        exported_at_us: Some(micros(SystemTime::now())),
        ..Line::default()
    })?;
    let schemas = service.schema_versions(&ctx).await?;
    for (namespace, schema) in &schemas {
        write(&Line {
            kind: "schema".into(),
            namespace: Some(namespace.clone()),
            version: Some(schema.version),
            document: Some(raw(&schema.document)?),
            ..Line::default()
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
    write(&Line {
        kind: "end".into(),
        schemas: Some(schemas.len() as u64),
        records: Some(records),
        ..Line::default()
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
    Ok(Line {
        kind: "record".into(),
        namespace: Some(namespace.to_owned()),
        key: Some(record.key.clone()),
        value: Some(raw(record.value.as_deref().unwrap_or("null"))?),
        metadata: record.metadata.as_deref().map(raw).transpose()?,
        revision: Some(record.revision),
        schema_version: record.schema_version,
        expires_at_us: record.expires_at.map(micros),
        created_at_us: Some(micros(record.created_at)),
        updated_at_us: Some(micros(record.updated_at)),
        ..Line::default()
    })
}

/// The checkpoint file of an import: how many lines of the input are committed.
fn checkpoint_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

/// Where an import stands: lines committed, for which target and which export.
fn checkpoint_text(line: u64, identity: &str) -> String {
    format!("{line} {identity}")
}

pub(super) async fn import(service: &StorageService, args: ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let size = file.metadata()?.len();
    let progress = bar(size, "importing (bytes)");
    let mut lines = BufReader::new(file).lines();
    let header_text = lines.next().context("the file is empty")??;
    progress.inc(header_text.len() as u64 + 1);
    let header: Line =
        serde_json::from_str(&header_text).context("line 1 is not an export header")?;
    if header.kind != "header" {
        bail!("line 1 is not an export header");
    }
    let (format, version) = (
        header.format.unwrap_or_default(),
        header.version.unwrap_or(0),
    );
    if format != FORMAT || version != 1 {
        bail!("unsupported export format {format:?} version {version}");
    }
    let tenant = need(header.tenant, "tenant", 1)?;
    let install = need(header.install, "install", 1)?;
    let ctx = operator(
        args.tenant.as_deref().unwrap_or(&tenant),
        args.install.as_deref().unwrap_or(&install),
    );

    // A checkpoint counts only for the same export into the same install.
    let identity = format!(
        "{}/{} {}",
        ctx.tenant_id,
        ctx.install_id,
        header.exported_at_us.unwrap_or(0)
    );
    let checkpoint = checkpoint_path(&args.input);
    let skip = match std::fs::read_to_string(&checkpoint) {
        Ok(text) if !args.restart => match text.trim().split_once(' ') {
            Some((line, rest)) if rest == identity => line.parse().unwrap_or(0),
            _ => {
                eprintln!(
                    "ignoring {}: it is for another export or install",
                    checkpoint.display()
                );
                0
            }
        },
        _ => 0,
    };
    if skip > 0 {
        eprintln!("resuming after line {skip} ({})", checkpoint.display());
    }

    let restored = restore_lines(
        service,
        &ctx,
        lines,
        &progress,
        &checkpoint,
        &identity,
        skip,
    )
    .await;
    // Counters are recomputed whether the import finished or not, so a partial import is
    // counted (and exported) like any other data.
    let repaired = service.recount(&ctx, true).await?;
    let (schemas, records) = restored?;
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

/// Restores every line after the header; returns the schemas and records restored.
async fn restore_lines(
    service: &StorageService,
    ctx: &CallContext,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    progress: &ProgressBar,
    checkpoint: &Path,
    identity: &str,
    skip: u64,
) -> anyhow::Result<(u64, u64)> {
    let save = |line: u64| std::fs::write(checkpoint, checkpoint_text(line, identity));
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_namespace = String::new();
    let (mut schemas, mut records, mut number, mut ended) = (0u64, 0u64, 1u64, false);
    for text in lines {
        let text = text?;
        number += 1;
        progress.inc(text.len() as u64 + 1);
        let line: Line = serde_json::from_str(&text)
            .with_context(|| format!("line {number} is not an export line"))?;
        if number <= skip {
            // Committed by the interrupted run.
            ended |= line.kind == "end";
            continue;
        }
        match line.kind.as_str() {
            "schema" => {
                let stored = StoredSchema {
                    version: need(line.version, "version", number)?,
                    document: need(line.document, "document", number)?.get().to_owned(),
                };
                let namespace = need(line.namespace, "namespace", number)?;
                service.restore_schema(ctx, &namespace, &stored).await?;
                schemas += 1;
                save(number)?;
            }
            "record" => {
                let namespace = need(line.namespace, "namespace", number)?;
                if namespace != pending_namespace || pending.len() >= IMPORT_BATCH {
                    flush(service, ctx, &pending_namespace, &mut pending).await?;
                    save(number - 1)?;
                    pending_namespace = namespace;
                }
                pending.push(Record {
                    key: need(line.key, "key", number)?,
                    value: Some(need(line.value, "value", number)?.get().to_owned()),
                    metadata: line.metadata.map(|m| m.get().to_owned()),
                    revision: need(line.revision, "revision", number)?,
                    schema_version: line.schema_version,
                    expires_at: line.expires_at_us.map(time),
                    created_at: time(need(line.created_at_us, "createdAtUs", number)?),
                    updated_at: time(need(line.updated_at_us, "updatedAtUs", number)?),
                });
                records += 1;
            }
            "end" => {
                flush(service, ctx, &pending_namespace, &mut pending).await?;
                save(number)?;
                ended = true;
                let expected = (line.schemas.unwrap_or(0), line.records.unwrap_or(0));
                if skip == 0 && expected != (schemas, records) {
                    bail!(
                        "the file announces {} schema(s) and {} record(s) but holds {schemas} \
                         and {records}",
                        expected.0,
                        expected.1
                    );
                }
            }
            other => bail!("line {number}: unexpected line type {other:?}"),
        }
    }
    if !ended {
        flush(service, ctx, &pending_namespace, &mut pending).await?;
        save(number)?;
        bail!("the file ends without its end line: truncated? ({records} record(s) imported)");
    }
    Ok((schemas, records))
}

/// Restores the pending records in one transaction.
async fn flush(
    service: &StorageService,
    ctx: &CallContext,
    namespace: &str,
    pending: &mut Vec<Record>,
) -> anyhow::Result<()> {
    if !pending.is_empty() {
        service.restore_records(ctx, namespace, pending).await?;
        pending.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compacting_keeps_strings_and_numbers() {
        assert_eq!(
            compact(r#"{"a b": "x \" y", "n": [1, 2.50, 12345678901234567890123]}"#),
            r#"{"a b":"x \" y","n":[1,2.50,12345678901234567890123]}"#
        );
        assert_eq!(compact(r#"" \\ ""#), r#"" \\ ""#);
    }
}
