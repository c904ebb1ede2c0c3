//! `hourglass migrate`: applies schema migrations (idempotent; safe from many replicas at once).

use anyhow::Context;
use hourglass_postgres::{PostgresConfig, migrate};

/// Flags of `hourglass migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    target: MigrateTarget,
}

#[derive(clap::Subcommand)]
enum MigrateTarget {
    /// Apply pending Postgres migrations.
    Postgres {
        #[command(flatten)]
        postgres: PostgresConfig,
    },
}

/// Runs the migration.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    match args.target {
        MigrateTarget::Postgres { postgres } => {
            let pool = postgres.connect_lazy().context("invalid database url")?;
            migrate::run(&pool).await.context("failed to apply postgres migrations")?;
            println!("postgres schema is at migration {}", migrate::latest_version());
        }
    }
    Ok(())
}
