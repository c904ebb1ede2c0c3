//! `hourglass collector`: wires the collector to Postgres (keys, tracking plans) and Kafka (event log).

use std::sync::Arc;

use anyhow::Context;
use hourglass_collector::CollectorConfig;
use hourglass_grpc::server::not_serving_while;
use hourglass_kafka::{KafkaConfig, KafkaEventLog};
use hourglass_postgres::{PostgresConfig, PostgresKeyStore, PostgresPlanStore};
use tokio::net::TcpListener;

use crate::{shutdown, startup};

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

/// Runs the collector until SIGTERM. It listens at once and reports NOT_SERVING until Postgres (keys)
/// and Kafka (topics) are ready.
pub async fn run(args: CollectorArgs) -> anyhow::Result<()> {
    let limits = &args.collector.limits;
    limits.check_retention().context("refusing to start: the late-data window does not fit the raw retention")?;
    let shutdown = shutdown::on_signal()?;
    let listener = TcpListener::bind(args.collector.listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.collector.listen_addr))?;
    println!("collector listening on {}", listener.local_addr()?);
    let collector_id = args.collector.resolved_collector_id();
    let opening = async {
        let pool = startup::open_with_retry("postgres (API keys)", &shutdown, || args.postgres.open()).await?;
        let client_id = format!("hourglass-collector-{collector_id}");
        let event_log =
            startup::open_with_retry("kafka", &shutdown, || KafkaEventLog::connect(args.kafka.clone(), &client_id))
                .await?;
        anyhow::Ok((pool, event_log))
    };
    let (listener, opened) = not_serving_while(
        listener,
        &args.collector.server,
        &[hourglass_collector::server::INGEST_SERVICE_NAME],
        &[],
        opening,
    )
    .await?;
    let (pool, event_log) = opened?;
    let key_store = Arc::new(PostgresKeyStore::new(pool.clone()));
    let plan_store = Arc::new(PostgresPlanStore::new(pool));
    hourglass_collector::run(args.collector, key_store, plan_store, Arc::new(event_log), listener, shutdown).await?;
    Ok(())
}
