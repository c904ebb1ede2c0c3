//! `hourglass ingestor`: wires the ingestor to Kafka, the CQL raw store and Postgres (dirty hours).

use std::sync::Arc;

use anyhow::Context;
use hourglass_cql::{CqlConfig, CqlRawStore, schema};
use hourglass_ingestor::IngestorConfig;
use hourglass_kafka::{KafkaConfig, KafkaEventLog};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, migrate};

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
    let pool = args.postgres.connect_lazy().context("invalid database url")?;
    if args.postgres.migrate {
        migrate::run(&pool).await.context("failed to apply postgres migrations")?;
    }
    let session = Arc::new(args.cql.connect().await?);
    if args.cql_migrate {
        schema::migrate(&session, &args.cql).await.context("failed to create the CQL schema")?;
    }
    let raw_store = CqlRawStore::with_session(session, &args.cql).await?;
    let dead_letter_log = KafkaEventLog::connect(args.kafka.clone(), "hourglass-ingestor-dead-letter")
        .await
        .context("failed to set up kafka")?;
    hourglass_ingestor::run(
        args.ingestor,
        args.kafka,
        Arc::new(raw_store),
        Arc::new(PostgresJobQueue::new(pool)),
        Arc::new(dead_letter_log),
        shutdown,
    )
    .await?;
    Ok(())
}
