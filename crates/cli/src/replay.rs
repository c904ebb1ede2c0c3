//! `hourglass replay`: re-consume a range of a topic into the raw store, with a progress bar. Kafka reads
//! the range (`hourglass_kafka::reader::TopicRange`); the ingestor's replay writes it.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use hourglass_aggregator::erasure::ErasureConfig;
use hourglass_core::event_log::Topic;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_ingestor::replay;
use hourglass_ingestor::{IngestorConfig, SuppressionConfig};
use hourglass_kafka::reader::{RangeStart, TopicRange};
use hourglass_kafka::{KafkaConfig, KafkaEventLog};
use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresJobQueue};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{dlq, shutdown, startup};

/// Flags of `hourglass replay`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("start").required(true).args(["from", "from_offsets", "from_beginning"])))]
pub struct ReplayArgs {
    /// The topic to replay; by default the events topic.
    #[arg(long)]
    topic: Option<String>,
    /// Start at the first record at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Start at these offsets, as PARTITION:OFFSET,...; other partitions are not replayed.
    #[arg(long, value_delimiter = ',', value_parser = dlq::parse_position)]
    from_offsets: Vec<(i32, i64)>,
    /// Start at the oldest record Kafka still has.
    #[arg(long)]
    from_beginning: bool,
    #[command(flatten)]
    ingestor: IngestorConfig,
    /// The salt of erased users' hashes: a replay drops their events as the ingestor does.
    #[command(flatten)]
    erasure: ErasureConfig,
    #[command(flatten)]
    suppression: SuppressionConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the replay; Ctrl-C stops it (what was written stays written; run it again to finish).
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal()?;
    let start = match (args.from, args.from_beginning) {
        (Some(time), _) => RangeStart::Time(time.timestamp_millis()),
        (None, true) => RangeStart::Beginning,
        (None, false) => RangeStart::Offsets(args.from_offsets.clone()),
    };
    let topic = args.topic.clone().unwrap_or_else(|| args.kafka.topic_name(Topic::Events).to_owned());
    let pool = args.postgres.connect_lazy().context("invalid database url")?;
    let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
    let mut producer_config = args.kafka.clone();
    producer_config.create_topics = false;
    let dead_letter_log = KafkaEventLog::connect(producer_config, "hourglass-replay-dead-letter").await?;
    let erasure_store = Arc::new(PostgresErasureStore::new(pool.clone()));
    let suppression = startup::suppression(&args.erasure, &args.suppression, erasure_store, stop.clone()).await?;

    let progress = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "replaying {bar:40} {human_pos}/{human_len} records  {per_sec}  eta {eta}",
    )?);
    let range = TopicRange::open(&args.kafka, &topic, start).await.with_context(|| format!("cannot read {topic}"))?;
    let total = range.total_records();
    progress.set_length(total);
    let summary = replay::replay(
        &args.ingestor.loop_config(),
        range.into_records(),
        total,
        Arc::new(raw_store),
        Arc::new(PostgresJobQueue::new(pool)),
        Arc::new(dead_letter_log),
        suppression,
        stop.clone(),
        |done| progress.set_position(done),
    )
    .await
    .with_context(|| format!("replay of {topic} failed"))?;
    progress.finish_and_clear();
    println!(
        "replayed {topic}: {} records stored, {} dead-lettered, {} customer-hours marked for re-aggregation",
        summary.stored, summary.dead_lettered, summary.hours_marked
    );
    Ok(())
}
