//! `hourglass migrate`: applies schema migrations, Postgres and CQL (idempotent; safe from many
//! replicas at once).

use anyhow::Context;
use hourglass_cql::CqlConfig;
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
    /// Create the CQL keyspace and tables if missing (replication, TTL, buckets from the flags).
    Cql {
        #[command(flatten)]
        cql: CqlConfig,
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
        MigrateTarget::Cql { cql } => {
            let session = cql.connect().await?;
            let buckets = hourglass_cql::schema::migrate(&session, &cql).await?;
            println!("cql keyspace {} is ready ({buckets} buckets per customer-hour)", cql.keyspace);
        }
    }
    Ok(())
}
