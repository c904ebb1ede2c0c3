//! `hourglass ingestor`: wires the ingestor to Kafka, the CQL raw store and Postgres (dirty hours).

use std::sync::Arc;

use anyhow::Context;
use hourglass_aggregator::erasure::ErasureConfig;
use hourglass_core::event_log::Topic;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_grpc::server::{ServerConfig, not_serving_while};
use hourglass_ingestor::{IngestorConfig, SuppressionConfig};
use hourglass_kafka::{KafkaConfig, KafkaEventLog, KafkaEventLogConsumer};
use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresJobQueue};

use tokio::net::TcpListener;

use crate::{shutdown, startup};

/// Flags of `hourglass ingestor`.
#[derive(clap::Args)]
pub struct IngestorArgs {
    #[command(flatten)]
    ingestor: IngestorConfig,
    /// The salt of erased users' hashes, to drop their events.
    #[command(flatten)]
    erasure: ErasureConfig,
    #[command(flatten)]
    suppression: SuppressionConfig,
    /// The health server's settings.
    #[command(flatten)]
    health_server: ServerConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the ingestor until SIGTERM. It consumes once Postgres, the CQL keyspace and Kafka are ready;
/// until then it waits, saying what it waits for, and its health server reports NOT_SERVING.
pub async fn run(args: IngestorArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let health_listener = TcpListener::bind(args.ingestor.health_listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.ingestor.health_listen_addr))?;
    println!("ingestor health on {}", health_listener.local_addr()?);
    let opening = async {
        let pool = startup::open_with_retry("postgres", &shutdown, || args.postgres.open()).await?;
        let raw_store =
            startup::open_with_retry("the CQL raw store", &shutdown, || CqlRawStore::open(&args.cql)).await?;
        let dead_letter_log = startup::open_with_retry("kafka", &shutdown, || {
            KafkaEventLog::connect(args.kafka.clone(), "hourglass-ingestor-dead-letter")
        })
        .await?;
        anyhow::Ok((pool, raw_store, dead_letter_log))
    };
    let (health_listener, opened) = not_serving_while(
        health_listener,
        &args.health_server,
        &[],
        &[hourglass_ingestor::health::INGESTOR_SERVICE_NAME],
        opening,
    )
    .await?;
    let (pool, raw_store, dead_letter_log) = opened?;
    let raw_store = Arc::new(raw_store);
    let erasure_store = Arc::new(PostgresErasureStore::new(pool.clone()));
    let suppression = startup::suppression(&args.erasure, &args.suppression, erasure_store, shutdown.clone()).await?;
    let job_queue = Arc::new(PostgresJobQueue::new(pool));
    let health = tokio::spawn(hourglass_ingestor::health::run(
        args.health_server,
        Arc::clone(&raw_store),
        Arc::clone(&job_queue),
        health_listener,
        shutdown.clone(),
    ));
    let consumer =
        KafkaEventLogConsumer::subscribe(&args.kafka, Topic::Events, &args.ingestor.group_id, "hourglass-ingestor")
            .context("failed to subscribe to the events topic")?;
    hourglass_ingestor::run(
        args.ingestor.loop_config(),
        consumer,
        raw_store,
        job_queue,
        Arc::new(dead_letter_log),
        suppression,
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    health.await?.context("health server failed")?;
    Ok(())
}
