//! `alga-storage`: see `alga_storage::cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = alga_storage::cli::Cli::parse();
    alga_storage::cli::init_logging(cli.log_format);
    alga_storage::cli::execute(cli).await
}
