//! The `alga-storage` command line: migrations and running components with storage attached.
//! Lives in the library so tests drive exactly what the binary runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use tokio_postgres::NoTls;

use crate::backend::DriftScope;
use crate::backend::postgres::{DEFAULT_POOL_SIZE, PgBackend, migrate};
use crate::wasm::command::{CommandRunner, RunOptions};
use crate::{CallContext, STORAGE_CAPABILITY, StorageService};

/// Durable, multi-tenant storage for platform extensions.
#[derive(Debug, Parser)]
#[command(name = "alga-storage", version, about)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, revert or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Run a component's `wasi:cli/run` export with storage attached for one tenant and install.
    Run {
        /// The component (`.wasm`) to run.
        component: PathBuf,
        /// Tenant the component acts for.
        #[arg(long, default_value = "demo-tenant")]
        tenant: String,
        /// Extension install the component acts for.
        #[arg(long, default_value = "demo-install")]
        install: String,
        /// Run without the `alga.storage` grant (every storage call is denied).
        #[arg(long)]
        no_grant: bool,
        /// Apply pending migrations first.
        #[arg(long)]
        migrate: bool,
        /// Arguments passed to the component.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show an install's usage against its quotas (records past their TTL excluded).
    Usage(InstallArgs),
    /// Check or repair an install's usage counters against its records.
    Counters {
        #[command(subcommand)]
        action: CountersAction,
    },
    /// Register, review or show a namespace's JSON Schema.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Apply the storage section of an extension manifest (on install or upgrade).
    Manifest {
        #[command(flatten)]
        install: InstallArgs,
        /// The manifest (JSON); schema paths in it are relative to its folder.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaAction {
    /// Register a schema file as the namespace's next version.
    Register {
        #[command(flatten)]
        install: InstallArgs,
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The JSON Schema file (draft 2020-12 or draft-07).
        file: PathBuf,
        /// Only report which stored records the schema would reject; register nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the namespace's current schema.
    Show {
        #[command(flatten)]
        install: InstallArgs,
        /// The namespace.
        #[arg(long)]
        namespace: String,
    },
}

/// Which install an operator command concerns.
#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The extension install.
    #[arg(long)]
    install: String,
}

#[derive(Debug, Subcommand)]
enum CountersAction {
    /// Report counters that differ from what the install's records give.
    Check(InstallArgs),
    /// Set drifted counters to what the records give (audited as `operator:cli`).
    Repair(InstallArgs),
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert migrations: the newest one, or all above `--to`.
    Down {
        /// Revert every migration above this version (0 reverts all).
        #[arg(long)]
        to: Option<i32>,
    },
    /// List migrations and whether each is applied.
    Status,
}

/// Runs the command described by `args` (the program name first), printing to stdout.
pub async fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    execute(cli).await
}

/// Runs a parsed command.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let database_url = || {
        cli.database_url
            .clone()
            .context("no database: pass --database-url or set DATABASE_URL")
    };
    match cli.command {
        Command::Migrate { action } => migrate_command(&database_url()?, action).await,
        Command::Run {
            component,
            tenant,
            install,
            no_grant,
            migrate,
            args,
        } => {
            let url = database_url()?;
            if migrate {
                migrate_command(&url, MigrateAction::Up).await?;
            }
            let backend = PgBackend::connect(&url, DEFAULT_POOL_SIZE)?;
            let service = StorageService::new(Arc::new(backend));
            let runner = CommandRunner::new(service).map_err(|e| anyhow!("{e:?}"))?;
            let bytes = std::fs::read(&component)
                .with_context(|| format!("cannot read {}", component.display()))?;
            let compiled = runner.compile(&bytes).map_err(|e| anyhow!("{e:?}"))?;
            let mut call = CallContext::new(tenant, install).actor("cli");
            if !no_grant {
                call = call.grant(STORAGE_CAPABILITY);
            }
            let options = RunOptions {
                args,
                ..RunOptions::default()
            };
            let outcome = runner
                .run(&compiled, call, &options)
                .await
                .map_err(|e| anyhow!("{e:?}"))?;
            outcome.result.map_err(|e| anyhow!("component failed: {e}"))
        }
        Command::Usage(install) => {
            let service = connect_service(&database_url()?)?;
            let call = operator_context(&install).grant(STORAGE_CAPABILITY);
            let usage = service.usage(&call).await?;
            println!(
                "namespaces {} / {}, bytes {} / {}",
                usage.namespaces.used,
                usage.namespaces.limit,
                usage.total_bytes.used,
                usage.total_bytes.limit
            );
            for ns in usage.per_namespace {
                println!(
                    "  {:<40} keys {} / {}, bytes {}",
                    ns.namespace, ns.keys.used, ns.keys.limit, ns.bytes
                );
            }
            Ok(())
        }
        Command::Manifest { install, file } => {
            let service = connect_service(&database_url()?)?;
            let manifest = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let folder = file.parent().map(PathBuf::from).unwrap_or_default();
            let read_schema =
                |path: &str| std::fs::read_to_string(folder.join(path)).map_err(|e| e.to_string());
            let applied = service
                .apply_manifest(&operator_context(&install), &manifest, &read_schema)
                .await?;
            for (namespace, version) in &applied.registered {
                println!("registered {namespace} schema version {version}");
            }
            for namespace in &applied.unchanged {
                println!("unchanged {namespace}");
            }
            println!("limits: {:?}", applied.limits);
            Ok(())
        }
        Command::Schema { action } => {
            let service = connect_service(&database_url()?)?;
            schema_command(&service, action).await
        }
        Command::Counters { action } => {
            let (install, apply) = match &action {
                CountersAction::Check(install) => (install, false),
                CountersAction::Repair(install) => (install, true),
            };
            let service = connect_service(&database_url()?)?;
            let drift = service.recount(&operator_context(install), apply).await?;
            if drift.is_empty() {
                println!("counters match the records");
            }
            for d in &drift {
                let scope = match &d.scope {
                    DriftScope::Namespace(ns) => format!("namespace {ns}"),
                    DriftScope::Install => "install totals (keys = namespaces)".to_owned(),
                };
                println!(
                    "{} {scope}: keys {} -> {}, bytes {} -> {}",
                    if apply { "repaired" } else { "drift" },
                    d.counted_keys,
                    d.actual_keys,
                    d.counted_bytes,
                    d.actual_bytes
                );
            }
            Ok(())
        }
    }
}

async fn schema_command(service: &StorageService, action: SchemaAction) -> anyhow::Result<()> {
    match action {
        SchemaAction::Register {
            install,
            namespace,
            file,
            dry_run,
        } => {
            let document = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let ctx = operator_context(&install);
            if dry_run {
                let (mut checked, mut failing, mut cursor) = (0u64, 0usize, None);
                loop {
                    let page = service
                        .check_schema(&ctx, &namespace, &document, cursor.as_deref(), 500)
                        .await?;
                    checked += page.checked;
                    for record in &page.failing {
                        failing += 1;
                        let first = &record.violations[0];
                        println!(
                            "would reject {:?}: {} at {:?} ({} violation(s))",
                            record.key,
                            first.message,
                            first.instance_path,
                            record.violations.len()
                        );
                    }
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                println!("checked {checked} record(s); {failing} would be rejected");
            } else {
                let version = service.register_schema(&ctx, &namespace, &document).await?;
                println!("registered {namespace} schema version {version}");
            }
        }
        SchemaAction::Show { install, namespace } => {
            let ctx = operator_context(&install).grant(STORAGE_CAPABILITY);
            match service.schema(&ctx, &namespace).await? {
                Some(schema) => println!("version {}\n{}", schema.version, schema.document),
                None => println!("{namespace} has no schema"),
            }
        }
    }
    Ok(())
}

fn connect_service(url: &str) -> anyhow::Result<StorageService> {
    let backend = PgBackend::connect(url, 2)?;
    Ok(StorageService::new(Arc::new(backend)))
}

fn operator_context(install: &InstallArgs) -> CallContext {
    CallContext::new(&install.tenant, &install.install).actor("operator:cli")
}

async fn migrate_command(url: &str, action: MigrateAction) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("cannot connect to the database")?;
    tokio::spawn(connection);
    match action {
        MigrateAction::Up => {
            let applied = migrate::up(&mut client).await?;
            println!("applied {} migration(s): {applied:?}", applied.len());
        }
        MigrateAction::Down { to } => {
            let target = match to {
                Some(t) => t,
                None => migrate::status(&mut client)
                    .await?
                    .iter()
                    .rev()
                    .find(|m| m.applied_at.is_some())
                    .map_or(0, |m| m.version - 1),
            };
            let reverted = migrate::down(&mut client, target).await?;
            println!("reverted {} migration(s): {reverted:?}", reverted.len());
        }
        MigrateAction::Status => {
            for m in migrate::status(&mut client).await? {
                let state = if m.applied_at.is_some() {
                    "applied"
                } else {
                    "pending"
                };
                println!("{:04} {:<20} {state}", m.version, m.name);
            }
        }
    }
    Ok(())
}
