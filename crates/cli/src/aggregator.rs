//! `hourglass aggregator`: wires aggregation workers to the CQL raw store and Postgres (jobs, rollups).

use std::sync::Arc;

use anyhow::Context;
use hourglass_aggregator::AggregatorConfig;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresRollupStore};

use crate::shutdown;

/// Flags of `hourglass aggregator`.
#[derive(clap::Args)]
pub struct AggregatorArgs {
    #[command(flatten)]
    aggregator: AggregatorConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs aggregation workers until SIGTERM (a job in progress when it comes is finished first; one cut
/// short is retried by another worker once its lease expires).
pub async fn run(args: AggregatorArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let pool = args.postgres.open().await?;
    let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
    hourglass_aggregator::run(args.aggregator, Arc::new(raw_store), Arc::new(PostgresRollupStore::new(pool)), shutdown)
        .await;
    Ok(())
}
