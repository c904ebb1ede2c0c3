//! `hourglass ingestor`: wires the ingestor to Kafka, the CQL raw store and Postgres (dirty hours).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hourglass_cql::{CqlConfig, CqlRawStore, schema};
use hourglass_ingestor::IngestorConfig;
use hourglass_kafka::{KafkaConfig, KafkaEventLog};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue};

use tokio::net::TcpListener;

use crate::shutdown;

/// Flags of `hourglass ingestor`.
#[derive(clap::Args)]
pub struct IngestorArgs {
    #[command(flatten)]
    ingestor: IngestorConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
    /// Create the CQL keyspace and tables at start-up if missing (`hourglass migrate cql` does it
    /// separately).
    #[arg(long = "cql-migrate", env = "HOURGLASS_CQL_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    cql_migrate: bool,
}

/// Runs the ingestor until SIGTERM.
pub async fn run(args: IngestorArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal()?;
    let pool = args.postgres.open().await?;
    let session = Arc::new(args.cql.connect().await?);
    if args.cql_migrate {
        schema::migrate(&session, &args.cql).await.context("failed to create the CQL schema")?;
    }
    let raw_store = CqlRawStore::with_session(session, &args.cql).await?;
    let dead_letter_log = KafkaEventLog::connect(args.kafka.clone(), "hourglass-ingestor-dead-letter")
        .await
        .context("failed to set up kafka")?;
    let raw_store = Arc::new(raw_store);
    let job_queue = Arc::new(PostgresJobQueue::new(pool));
    let health_listener = TcpListener::bind(args.ingestor.health_listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.ingestor.health_listen_addr))?;
    println!("ingestor health on {}", health_listener.local_addr()?);
    let health = tokio::spawn(hourglass_ingestor::health::serve(
        health_listener,
        Arc::clone(&raw_store),
        Arc::clone(&job_queue),
        Duration::from_millis(args.ingestor.readiness_interval_ms),
        shutdown.clone(),
    ));
    hourglass_ingestor::run(
        args.ingestor,
        args.kafka,
        raw_store,
        job_queue,
        Arc::new(dead_letter_log),
        shutdown.clone(),
    )
    .await?;
    shutdown.cancel();
    health.await?.context("health server failed")?;
    Ok(())
}
