//! `hourglass collector`: wires the collector to Postgres (keys) and Kafka (event log).

use std::sync::Arc;

use anyhow::Context;
use hourglass_collector::CollectorConfig;
use hourglass_kafka::{KafkaConfig, KafkaEventLog};
use hourglass_postgres::{PostgresConfig, PostgresKeyStore};
use tokio::net::TcpListener;

use crate::shutdown;

/// Flags of `hourglass collector`.
#[derive(clap::Args)]
pub struct CollectorArgs {
    #[command(flatten)]
    collector: CollectorConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the collector until SIGTERM.
pub async fn run(args: CollectorArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let pool = args.postgres.open().await?;
    let key_store = Arc::new(PostgresKeyStore::new(pool));
    let collector_id = args.collector.resolved_collector_id();
    let event_log = KafkaEventLog::connect(args.kafka, &format!("hourglass-collector-{collector_id}"))
        .await
        .context("failed to set up kafka")?;
    let listener = TcpListener::bind(args.collector.listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.collector.listen_addr))?;
    println!("collector listening on {}", listener.local_addr()?);
    hourglass_collector::run(args.collector, key_store, Arc::new(event_log), listener, shutdown).await?;
    Ok(())
}
