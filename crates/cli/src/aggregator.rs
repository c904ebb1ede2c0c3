//! `hourglass aggregator`: wires aggregation workers to the CQL raw store and Postgres (jobs, rollups).

use std::sync::Arc;

use anyhow::Context;
use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure::{ErasureConfig, ErasureSettings};
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresRollupStore};

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
    #[command(flatten)]
    erasure: ErasureConfig,
}

/// Runs aggregation workers until SIGTERM (a job in progress when it comes is finished first; one cut
/// short is retried by another worker once its lease expires). Workers start once Postgres and the CQL
/// keyspace are ready; until then the role waits, saying what it waits for. With `--erasure-salt`, the
/// workers also run erasure requests (`hourglass_aggregator::erasure::run_requests`).
pub async fn run(mut args: AggregatorArgs) -> anyhow::Result<()> {
    // The raw rows live as long as the CQL table's TTL says: that decides which hours are past their horizon.
    args.aggregator.raw_retention = RawRetention::from_days(i64::from(args.cql.ttl_days));
    args.aggregator.check().context("refusing to start")?;
    let salt = match args.erasure.salt {
        Some(_) => Some(args.erasure.erasure_salt().context("refusing to start")?),
        None => {
            tracing::warn!("no --erasure-salt: this worker runs no erasure requests");
            None
        }
    };
    let shutdown = shutdown::on_signal()?;
    let pool = startup::open_with_retry("postgres", &shutdown, || args.postgres.open()).await?;
    let raw_store = startup::open_with_retry("the CQL raw store", &shutdown, || CqlRawStore::open(&args.cql)).await?;
    let raw_store = Arc::new(raw_store);
    let rollups = Arc::new(PostgresRollupStore::new(pool.clone()));
    let erasures = async {
        if let Some(salt) = &salt {
            let erasure_store = PostgresErasureStore::new(pool);
            hourglass_aggregator::erasure::run_requests(
                &args.aggregator,
                salt,
                &*raw_store,
                &*rollups,
                &erasure_store,
                &shutdown,
            )
            .await;
        }
    };
    let aggregation = hourglass_aggregator::run(
        args.aggregator.clone(),
        Arc::clone(&raw_store),
        Arc::clone(&rollups),
        shutdown.clone(),
    );
    tokio::join!(aggregation, erasures);
    Ok(())
}
