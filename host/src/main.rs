//! `alga-storage`: see `alga_storage::cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,alga_storage=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    alga_storage::cli::execute(alga_storage::cli::Cli::parse()).await
}
