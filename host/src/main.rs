//! `alga-storage`: migrations and running components with storage attached.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use tokio_postgres::NoTls;

use alga_storage::backend::postgres::{DEFAULT_POOL_SIZE, PgBackend, migrate};
use alga_storage::wasm::command::{CommandRunner, RunOptions};
use alga_storage::{CallContext, STORAGE_CAPABILITY, StorageService};

/// Durable, multi-tenant storage for platform extensions.
#[derive(Parser)]
#[command(name = "alga-storage", version, about)]
struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
}

#[derive(Subcommand)]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,alga_storage=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    }
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
