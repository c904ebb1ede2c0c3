//! `hourglass aggregator`: wires aggregation workers to the CQL raw store and Postgres (jobs, rollups).

use std::sync::Arc;

use anyhow::Context;
use hourglass_aggregator::AggregatorConfig;
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresRollupStore};

use crate::{shutdown, startup};

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
/// short is retried by another worker once its lease expires). Workers start once Postgres and the CQL
/// keyspace are ready; until then the role waits, saying what it waits for.
pub async fn run(mut args: AggregatorArgs) -> anyhow::Result<()> {
    // The raw rows live as long as the CQL table's TTL says: that decides which hours are past their horizon.
    args.aggregator.raw_retention = RawRetention::from_days(i64::from(args.cql.ttl_days));
    args.aggregator.check().context("refusing to start")?;
    let shutdown = shutdown::on_signal()?;
    let pool = startup::open_with_retry("postgres", &shutdown, || args.postgres.open()).await?;
    let raw_store = startup::open_with_retry("the CQL raw store", &shutdown, || CqlRawStore::open(&args.cql)).await?;
    hourglass_aggregator::run(args.aggregator, Arc::new(raw_store), Arc::new(PostgresRollupStore::new(pool)), shutdown)
        .await;
    Ok(())
}
