//! The `alga-storage` command line: the one front door — serve the gateway, run components,
//! migrations, tokens, schemas, usage, audit, export and import.
//! Lives in the library so tests drive exactly what the binary runs.

mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use axum::http::HeaderValue;
use clap::{Parser, Subcommand};
use tokio_postgres::NoTls;

use crate::backend::postgres::{DEFAULT_POOL_SIZE, PgBackend, migrate};
use crate::backend::sqlite::SqliteBackend;
use crate::backend::{Backend, DriftScope};
use crate::http::auth::{TokenClaims, TokenKey, TokenQuotas, TokenVerifier};
use crate::http::{API_BASE, Gateway, GatewayConfig};
use crate::limits::{
    DEFAULT_MAX_KEYS_PER_NAMESPACE, DEFAULT_MAX_NAMESPACES, DEFAULT_MAX_TOTAL_BYTES,
};
use crate::model::AuditQuery;
use crate::relay::{HttpSink, JsonLinesSink};
use crate::service::{AuditSink, audit_json};
use crate::wasm::command::{CommandRunner, RunOptions};
use crate::{
    CallContext, Limits, RolloutPolicy, STORAGE_CAPABILITY, STORAGE_READ_CAPABILITY, StorageService,
};

/// Durable, multi-tenant storage for platform extensions.
#[derive(Debug, Parser)]
#[command(
    name = "alga-storage",
    version,
    about = "Durable, multi-tenant storage for platform extensions: the REST gateway, components \
             with storage attached, and the operator's tools.",
    after_help = "Getting started: `alga-storage serve --demo` serves the embedded store \
                  (./alga-storage.db) and prints a token and curl lines to try.\n\
                  Add --database-url postgres://… to any command to use PostgreSQL instead."
)]
pub struct Cli {
    /// PostgreSQL connection URL. Without it, commands use the embedded store (`--store`).
    /// (Its own variable, not `DATABASE_URL`: a URL meant for another program never moves the
    /// data elsewhere by accident.)
    #[arg(long, env = "ALGA_STORAGE_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The embedded store's file (SQLite), used when no --database-url is given; created on
    /// first use.
    #[arg(
        long,
        env = "ALGA_STORAGE_STORE",
        global = true,
        default_value = "alga-storage.db"
    )]
    store: PathBuf,
    /// Log format on stderr: `text` for people, `json` (one object per line, with the span
    /// fields: request id, tenant, install) for log pipelines.
    #[arg(long, env = "ALGA_STORAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines for development.
    Text,
    /// JSON objects for production log pipelines.
    Json,
}

/// Installs the `tracing` subscriber: `RUST_LOG` filters (default `warn,alga_storage=info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,alga_storage=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, revert or inspect database migrations.
    #[command(display_order = 11)]
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Run a component's `wasi:cli/run` export with storage attached for one tenant and install.
    #[command(display_order = 2)]
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
    #[command(display_order = 4)]
    Usage(InstallArgs),
    /// Check or repair an install's usage counters against its records.
    #[command(display_order = 10)]
    Counters {
        #[command(subcommand)]
        action: CountersAction,
    },
    /// Register, review or show a namespace's JSON Schema.
    #[command(display_order = 5)]
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Read an install's audit trail, prune old rows, or relay rows to the log pipeline.
    #[command(display_order = 7)]
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Write one install's data (records with revisions and TTLs, schema versions) as NDJSON.
    #[command(display_order = 8)]
    Export(transfer::ExportArgs),
    /// Load an export into an install (resumable); counters are recomputed afterwards.
    #[command(display_order = 9)]
    Import(transfer::ImportArgs),
    /// Serve the REST gateway for extension iframes, `/metrics` and `/healthz`.
    #[command(display_order = 1)]
    Serve(ServeArgs),
    /// Mint a session token for local development (the platform mints them in production).
    #[command(display_order = 3)]
    Token(TokenArgs),
    /// Apply the storage section of an extension manifest (on install or upgrade).
    #[command(display_order = 6)]
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

/// Token keys: `ID=BASE64URL-SECRET`, comma-separated; the first one signs minted tokens, all
/// of them verify (rotation: add the new key, switch minting to it, drop the old one later).
#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// Signing/verification keys, `ID=BASE64URL-SECRET` (at least 32 bytes each).
    #[arg(
        long = "token-key",
        env = "ALGA_STORAGE_TOKEN_KEYS",
        value_delimiter = ','
    )]
    token_keys: Vec<String>,
    /// The audience tokens are minted for and must carry.
    #[arg(long, default_value = "alga-storage")]
    audience: String,
}

impl KeyArgs {
    fn keys(&self) -> anyhow::Result<Vec<TokenKey>> {
        anyhow::ensure!(
            !self.token_keys.is_empty(),
            "no token key: pass --token-key ID=BASE64URL-SECRET or set ALGA_STORAGE_TOKEN_KEYS"
        );
        self.token_keys
            .iter()
            .map(|text| TokenKey::parse(text).map_err(|e| anyhow!(e)))
            .collect()
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "ALGA_STORAGE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// An origin allowed to call from a browser (repeatable), e.g. https://app.example.com.
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// Apply pending migrations first (PostgreSQL; the embedded store migrates itself).
    #[arg(long)]
    migrate: bool,
    /// Database connections in the pool (PostgreSQL).
    #[arg(long, default_value_t = DEFAULT_POOL_SIZE)]
    pool_size: usize,
    /// Local try-out: a development key when none is given, and a token and `curl` lines for
    /// the install `demo-tenant` / `demo-install` printed at start.
    #[arg(long)]
    demo: bool,
    /// The kill switch: a file holding the rollout policy (`off`, `all`, or extension ids,
    /// comma-separated), read at start and again every 2 s, so editing it switches storage on
    /// or off for the gateway's callers without a restart. Without it every extension whose
    /// token holds the grant is served.
    #[arg(long, env = "ALGA_STORAGE_ROLLOUT_FILE")]
    rollout_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    install: InstallArgs,
    /// The extension of the install (defaults to the install id).
    #[arg(long)]
    extension: Option<String>,
    /// The user the session acts for (recorded in audit rows).
    #[arg(long, default_value = "dev-user")]
    actor: String,
    /// Grant read-only access (`alga.storage.read`) instead of `alga.storage`.
    #[arg(long, conflicts_with = "no_grant")]
    read_only: bool,
    /// Grant no storage capability (every call is refused with 403).
    #[arg(long)]
    no_grant: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 900)]
    ttl_secs: u64,
    /// Quota carried by the token (the platform's plan for the install): namespaces. Any of the
    /// three quota flags puts all three in the token, the others at their defaults.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_namespaces: Option<u64>,
    /// Quota carried by the token: records per namespace.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_keys_per_namespace: Option<u64>,
    /// Quota carried by the token: bytes across the install.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_total_bytes: Option<u64>,
}

impl TokenArgs {
    fn quotas(&self) -> Option<TokenQuotas> {
        let given = [
            self.max_namespaces,
            self.max_keys_per_namespace,
            self.max_total_bytes,
        ];
        given.iter().any(Option::is_some).then(|| TokenQuotas {
            namespaces: self.max_namespaces.unwrap_or(DEFAULT_MAX_NAMESPACES),
            keys_per_namespace: self
                .max_keys_per_namespace
                .unwrap_or(DEFAULT_MAX_KEYS_PER_NAMESPACE),
            total_bytes: self.max_total_bytes.unwrap_or(DEFAULT_MAX_TOTAL_BYTES),
        })
    }
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Print an install's audit rows (JSON lines, oldest first) from a time on.
    List {
        #[command(flatten)]
        install: InstallArgs,
        /// Only rows at or after this time (milliseconds since the Unix epoch).
        #[arg(long)]
        since_ms: Option<u64>,
        /// Only rows before this time (milliseconds since the Unix epoch).
        #[arg(long)]
        until_ms: Option<u64>,
        /// Rows per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print every page, not only the first.
        #[arg(long)]
        all: bool,
        /// Continue after a previous page (its cursor is printed on stderr). Rows are in the
        /// hosts' time order, not commit order: a row still committing when a page was read
        /// may sort before the cursor and is then not listed; the relay ships every row.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Delete audit rows older than a retention period, in bounded batches per tenant.
    Prune {
        /// Keep this many days of audit rows.
        #[arg(long)]
        older_than_days: u64,
        /// Rows deleted per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
    },
    /// Ship audit rows not shipped yet to the log pipeline, at least once (never skipping one).
    Relay {
        /// `stdout`, `file:PATH` (JSON lines, appended) or `http://…` (NDJSON POST).
        #[arg(long)]
        to: String,
        /// Rows per batch (marked shipped after the sink accepts them).
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// Keep relaying, pausing this many seconds between rounds (default: one round).
        #[arg(long)]
        follow_secs: Option<u64>,
    },
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
    let store = Store {
        database_url: cli.database_url.clone(),
        file: cli.store.clone(),
    };
    let database_url = || {
        cli.database_url.clone().context(
            "this command needs PostgreSQL: pass --database-url or set ALGA_STORAGE_DATABASE_URL \
             (the embedded store migrates itself)",
        )
    };
    match cli.command {
        Command::Migrate { action } => migrate_command(&database_url()?, action).await,
        Command::Serve(args) => serve_command(&store, args).await,
        Command::Export(args) => transfer::export(&store.open_existing(2).await?, args).await,
        Command::Import(args) => transfer::import(&store.open(2).await?, args).await,
        Command::Token(args) => {
            println!("{}", mint_token(&args, SystemTime::now())?);
            Ok(())
        }
        Command::Run {
            component,
            tenant,
            install,
            no_grant,
            migrate,
            args,
        } => {
            if migrate {
                migrate_command(&database_url()?, MigrateAction::Up).await?;
            }
            let service = store.open(DEFAULT_POOL_SIZE).await?;
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
            let service = store.open_existing(2).await?;
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
            let service = store.open(2).await?;
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
            // Registering sets a store up (before its first `serve`, say); reading needs one.
            let service = match &action {
                SchemaAction::Register { dry_run: false, .. } => store.open(2).await?,
                _ => store.open_existing(2).await?,
            };
            schema_command(&service, action).await
        }
        Command::Audit { action } => audit_command(&store.open_existing(2).await?, action).await,
        Command::Counters { action } => {
            let (install, apply) = match &action {
                CountersAction::Check(install) => (install, false),
                CountersAction::Repair(install) => (install, true),
            };
            let service = store.open_existing(2).await?;
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

async fn audit_command(service: &StorageService, action: AuditAction) -> anyhow::Result<()> {
    let from_ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    match action {
        AuditAction::List {
            install,
            since_ms,
            until_ms,
            limit,
            all,
            cursor,
        } => {
            let mut query = AuditQuery {
                since: since_ms.map(from_ms),
                until: until_ms.map(from_ms),
                cursor,
                limit: Some(limit),
            };
            loop {
                let page = service.audit(&operator_context(&install), &query).await?;
                for record in &page.records {
                    println!("{}", audit_json(record));
                }
                match page.next_cursor {
                    Some(next) if all => query.cursor = Some(next),
                    Some(next) => {
                        eprintln!("more rows: --cursor {next}");
                        break;
                    }
                    None => break,
                }
            }
        }
        AuditAction::Prune {
            older_than_days,
            batch,
        } => {
            let before = SystemTime::now() - Duration::from_secs(older_than_days * 24 * 3600);
            let deleted = service.prune_audit(before, batch).await?;
            println!("deleted {deleted} audit row(s) older than {older_than_days} day(s)");
        }
        AuditAction::Relay {
            to,
            batch,
            follow_secs,
        } => {
            let mut sink: Box<dyn AuditSink> = if to == "stdout" {
                Box::new(JsonLinesSink::stdout())
            } else if let Some(path) = to.strip_prefix("file:") {
                Box::new(JsonLinesSink::append(std::path::Path::new(path)).await?)
            } else if to.starts_with("http://") {
                Box::new(HttpSink::new(&to))
            } else {
                anyhow::bail!("--to takes stdout, file:PATH or http://URL, not {to:?}");
            };
            loop {
                let shipped = service.relay_audit(sink.as_mut(), batch).await?;
                eprintln!("relayed {shipped} audit row(s)");
                match follow_secs {
                    Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                    None => break,
                }
            }
        }
    }
    Ok(())
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

async fn serve_command(store: &Store, args: ServeArgs) -> anyhow::Result<()> {
    if args.migrate
        && let Some(url) = &store.database_url
    {
        migrate_command(url, MigrateAction::Up).await?;
    }
    // Installs get the default quotas unless their token carries the platform's (`quotas`),
    // which are trusted as signed, up to the contract's limits.
    let service = store
        .open(args.pool_size)
        .await?
        .with_limits(Limits::DEFAULT, Limits::CONTRACT);
    if let Some(path) = &args.rollout_file {
        service.set_rollout(read_rollout(path)?);
    }
    let keys = if args.demo && args.keys.token_keys.is_empty() {
        // Random per run: tokens of an earlier demo run stop working, as they should.
        let secret: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        vec![TokenKey::new("demo", secret).map_err(|e| anyhow!(e))?]
    } else {
        args.keys.keys()?
    };
    let verifier = TokenVerifier::new(keys.clone(), &args.keys.audience);
    let mut config = GatewayConfig::new(verifier);
    for origin in &args.allow_origins {
        HeaderValue::from_str(origin).with_context(|| format!("bad origin {origin:?}"))?;
        config = config.allow_origin(origin);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let base = format!("http://{}{API_BASE}", listener.local_addr()?);
    println!("alga-storage gateway on {base} ({})", store.describe());
    if args.demo {
        print_demo(&base, &keys[0], &args.keys.audience)?;
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let router = Gateway::new(service.clone(), config).router();
    let follow = async {
        match &args.rollout_file {
            Some(path) => follow_rollout(&service, path).await,
            None => std::future::pending().await,
        }
    };
    // The file is followed for as long as the gateway serves, and no longer.
    tokio::select! {
        served = crate::http::serve(listener, router, shutdown) => served?,
        () = follow => {}
    }
    Ok(())
}

/// How often `serve --rollout-file` reads the file again.
const ROLLOUT_POLL: Duration = Duration::from_secs(2);

fn read_rollout(path: &std::path::Path) -> anyhow::Result<RolloutPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the rollout file {}", path.display()))?;
    RolloutPolicy::parse(&text).map_err(|e| anyhow!("the rollout file {}: {e}", path.display()))
}

/// Applies the rollout file's policy whenever it changes. A file that cannot be read or parsed
/// (missing, or empty while an editor rewrites it) keeps the policy in force, and is reported
/// once per distinct problem.
async fn follow_rollout(service: &StorageService, path: &std::path::Path) {
    let mut reported = None;
    loop {
        tokio::time::sleep(ROLLOUT_POLL).await;
        match read_rollout(path) {
            Ok(policy) => {
                reported = None;
                service.set_rollout(policy);
            }
            Err(error) => {
                let message = format!("{error:#}");
                if reported.as_ref() != Some(&message) {
                    tracing::error!(error = %message, "rollout file not applied; the policy in force stays");
                    reported = Some(message);
                }
            }
        }
    }
}

/// A token for the demo install and `curl` lines that use it.
fn print_demo(base: &str, key: &TokenKey, audience: &str) -> anyhow::Result<()> {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = key.mint(&TokenClaims {
        aud: audience.to_owned(),
        sub: "demo-user".into(),
        tenant: "demo-tenant".into(),
        install: "demo-install".into(),
        extension: "demo".into(),
        caps: [STORAGE_CAPABILITY.to_owned()].into(),
        iat,
        exp: iat + 3600,
        nbf: None,
        quotas: None,
    });
    println!("demo token (tenant demo-tenant, install demo-install, valid 1 h):\n{token}");
    println!("try:");
    println!(
        "curl -sS -X PUT -H 'authorization: Bearer {token}' -H 'content-type: application/json' \
         -d '{{\"value\":{{\"hello\":\"world\"}}}}' {base}/namespaces/demo/records/greeting"
    );
    println!("curl -sS -H 'authorization: Bearer {token}' {base}/namespaces/demo/records/greeting");
    Ok(())
}

/// A development token for the install of `args`, valid from `now`.
fn mint_token(args: &TokenArgs, now: SystemTime) -> anyhow::Result<String> {
    let keys = args.keys.keys()?;
    let key = keys.first().context("no token key given")?;
    let iat = now.duration_since(UNIX_EPOCH)?.as_secs();
    let caps = if args.no_grant {
        Default::default()
    } else if args.read_only {
        [STORAGE_READ_CAPABILITY.to_owned()].into()
    } else {
        [STORAGE_CAPABILITY.to_owned()].into()
    };
    let claims = TokenClaims {
        aud: args.keys.audience.clone(),
        sub: args.actor.clone(),
        tenant: args.install.tenant.clone(),
        install: args.install.install.clone(),
        extension: args
            .extension
            .clone()
            .unwrap_or_else(|| args.install.install.clone()),
        caps,
        iat,
        exp: iat + args.ttl_secs,
        nbf: None,
        quotas: args.quotas(),
    };
    Ok(key.mint(&claims))
}

/// Where a command's data lives: PostgreSQL when a URL is given, else the embedded file.
struct Store {
    database_url: Option<String>,
    file: PathBuf,
}

impl Store {
    /// A service over the store, with `pool_size` connections for PostgreSQL. Creating an
    /// embedded file is said on stderr, so a command missing its `--database-url` shows it.
    async fn open(&self, pool_size: usize) -> anyhow::Result<StorageService> {
        let backend: Arc<dyn Backend> = match &self.database_url {
            Some(url) => Arc::new(PgBackend::connect(url, pool_size)?),
            None => {
                let created = !self.file.exists();
                let backend = SqliteBackend::open(&self.file)
                    .with_context(|| format!("cannot open {}", self.file.display()))?;
                if created {
                    eprintln!(
                        "alga-storage: created the embedded store {} (no --database-url given)",
                        self.file.display()
                    );
                }
                Arc::new(backend)
            }
        };
        Ok(StorageService::new(backend))
    }

    /// A service over a store that must already exist: a command that reads or repairs
    /// (usage, counters, schema show, audit, export) run without `--database-url` would
    /// otherwise create an empty embedded file and report on it as if it were the real data
    /// ("counters match the records").
    async fn open_existing(&self, pool_size: usize) -> anyhow::Result<StorageService> {
        if self.database_url.is_none() && !self.file.exists() {
            anyhow::bail!(
                "{} does not exist, and this command acts on existing data: for PostgreSQL pass \
                 --database-url or set ALGA_STORAGE_DATABASE_URL (DATABASE_URL is not read); for \
                 an embedded store name its file with --store",
                self.file.display()
            );
        }
        self.open(pool_size).await
    }

    fn describe(&self) -> String {
        match &self.database_url {
            Some(_) => "PostgreSQL".into(),
            None => format!("embedded store {}", self.file.display()),
        }
    }
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

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn token_args(extra: &[&str]) -> Result<TokenArgs, clap::Error> {
        let key = format!("dev={}", URL_SAFE_NO_PAD.encode([5u8; 32]));
        let mut args = vec![
            "alga-storage",
            "token",
            "--token-key",
            &key,
            "--tenant",
            "t1",
        ];
        args.extend_from_slice(&["--install", "i1"]);
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Token(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn token_command_mints_what_the_gateway_verifies() {
        let now = SystemTime::now();
        let verifier = |args: &TokenArgs| {
            TokenVerifier::new(args.keys.keys().unwrap(), &args.keys.audience)
                .verify(&mint_token(args, now).unwrap(), now)
                .unwrap()
        };
        let full = verifier(&token_args(&[]).unwrap());
        assert_eq!((full.tenant.as_str(), full.install.as_str()), ("t1", "i1"));
        assert_eq!(full.extension, "i1");
        assert_eq!(full.caps, [STORAGE_CAPABILITY.to_owned()].into());
        assert_eq!(full.exp - full.iat, 900);

        let read = verifier(&token_args(&["--read-only", "--actor", "u9"]).unwrap());
        assert_eq!(read.caps, [STORAGE_READ_CAPABILITY.to_owned()].into());
        assert_eq!(read.sub, "u9");
        assert!(
            verifier(&token_args(&["--no-grant"]).unwrap())
                .caps
                .is_empty()
        );

        assert_eq!(full.quotas, None, "no quota flag: the gateway's defaults");
        let planned = verifier(&token_args(&["--max-keys-per-namespace", "7"]).unwrap());
        assert_eq!(
            planned.quotas,
            Some(TokenQuotas {
                namespaces: DEFAULT_MAX_NAMESPACES,
                keys_per_namespace: 7,
                total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            })
        );

        assert!(
            token_args(&["--max-total-bytes", "0"]).is_err(),
            "a zero quota"
        );
        assert!(token_args(&["--no-grant", "--read-only"]).is_err());
        let long = token_args(&["--ttl-secs", "7200"]).unwrap();
        let refused = TokenVerifier::new(long.keys.keys().unwrap(), "alga-storage")
            .verify(&mint_token(&long, now).unwrap(), now);
        assert!(
            refused.is_err(),
            "the gateway refuses tokens living over an hour"
        );
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        let args = Cli::try_parse_from([
            "alga-storage",
            "token",
            "--token-key",
            "dev=c2hvcnQ",
            "--tenant",
            "t",
            "--install",
            "i",
        ])
        .unwrap();
        let Command::Token(args) = args.command else {
            panic!("token command")
        };
        let error = mint_token(&args, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least 32 bytes"), "{error}");
    }
}
