//! `hourglass bench floor decode-produce`: what the collector's work costs with nothing but the work.
//! Each batch the load generator would stream (`IngestStreamRequest`, protobuf) is decoded, its events
//! put into the collector's record (`EventBatchRecord`) and encoded, and produced to Kafka by the same
//! producer the collector uses (`KafkaEventLog`: acks=all, idempotent, the same compression, linger and
//! queue), with as many batches in flight as the collector bench's streams hold. No authentication,
//! validation, quota or ack: the gap between this and the collector is the collector's own logic.
//!
//! It runs in this process, measured by /proc/self over the decode-and-produce loop only: the requests
//! are generated and encoded before the clock starts (a pool of distinct batches, reused in turn, so
//! the pool's memory stays small at any event count).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::hour;
use hourglass_core::record;
use hourglass_kafka::{KafkaConfig, KafkaEventLog, admin};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::v1::{IngestStreamRequest, RejectionReason};
use indicatif::ProgressStyle;
use prost::Message;

use super::{Measurement, self_cpu_seconds};
use crate::loadgen;

/// Distinct encoded batches generated before the measured loop, reused in turn.
const POOL_BATCHES: u64 = 1000;

/// Flags of `hourglass bench floor decode-produce`.
#[derive(clap::Args, Clone)]
pub struct DecodeProduceFloorArgs {
    /// Events to decode and produce.
    #[arg(long, default_value_t = 2_000_000)]
    pub(super) events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// Batches in flight (the collector bench's 2 connections x 2 streams x 32).
    #[arg(long, default_value_t = 128)]
    pub(super) in_flight: usize,
    #[command(flatten)]
    pub(super) kafka: KafkaConfig,
}

/// Runs the decode+produce floor and prints what it measured.
pub async fn run(args: DecodeProduceFloorArgs) -> anyhow::Result<()> {
    let measurement = measure(&args, super::Bars::Shown).await?;
    println!(
        "decode+produce floor: {} events in {}-event batches, {} in flight",
        args.events, args.batch_size, args.in_flight
    );
    println!(
        "  wall time          {:.2} s = {:.0} events/s",
        measurement.wall_seconds,
        measurement.events_per_second()
    );
    println!(
        "  this process's CPU {:.2} s = {:.2} CPU-s per million events ({:.0} events/s per core)",
        measurement.cpu_seconds,
        measurement.cpu_seconds_per_million(),
        measurement.per_core_events_per_second()
    );
    Ok(())
}

/// Decodes and produces the batches to a topic of its own, deleted afterwards.
pub async fn measure(args: &DecodeProduceFloorArgs, bars: super::Bars) -> anyhow::Result<Measurement> {
    let run_id = super::run_id();
    let mut kafka = args.kafka.clone();
    kafka.events_topic = format!("hourglass.bench.{run_id}.decode-floor");
    kafka.create_topics = false;
    admin::ensure_topics(&kafka, &[Topic::Events]).await.context("failed to create the floor's topic")?;
    let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "hourglass-bench-floor").await?);
    let result = decode_and_produce(args, &event_log, &run_id, bars).await;
    admin::delete_topics(&kafka, &[&kafka.events_topic]).await?;
    result
}

async fn decode_and_produce(
    args: &DecodeProduceFloorArgs,
    event_log: &Arc<KafkaEventLog>,
    run_id: &str,
    bars: super::Bars,
) -> anyhow::Result<Measurement> {
    let batch_size = args.batch_size.max(1) as u64;
    let batches = args.events.div_ceil(batch_size);
    let pool: Vec<Vec<u8>> = (0..batches.min(POOL_BATCHES))
        .map(|batch| {
            let first = batch * batch_size;
            let count = (args.events - first).min(batch_size) as usize;
            IngestStreamRequest { sequence: batch, events: loadgen::generate_batch(run_id, first, count) }
                .encode_to_vec()
        })
        .collect();
    // Warm-up: the producer connected and the topic's leaders known before the clock starts.
    produce(event_log, &pool[0], run_id, 0).await?;

    let progress = super::progress_bar(args.events, bars)
        .with_style(ProgressStyle::with_template("decode+produce {bar:40} {human_pos}/{human_len} events  {per_sec}")?);
    let cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let appends = futures::stream::iter(0..batches).map(|batch| {
        let encoded = &pool[(batch % pool.len() as u64) as usize];
        let progress = &progress;
        async move {
            let events = produce(event_log, encoded, run_id, batch).await?;
            progress.inc(events);
            Ok::<_, anyhow::Error>(events)
        }
    });
    let mut appends = appends.buffer_unordered(args.in_flight.max(1));
    let mut events = 0;
    while let Some(result) = appends.next().await {
        events += result?;
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = self_cpu_seconds() - cpu_before;
    progress.finish_and_clear();
    Ok(Measurement { events, wall_seconds, cpu_seconds, peak_rss_kib: None, store_cpu_seconds: None })
}

/// Decodes one stream request and produces its events as the collector's record; the events it held.
async fn produce(event_log: &KafkaEventLog, encoded: &[u8], run_id: &str, batch: u64) -> anyhow::Result<u64> {
    let request = IngestStreamRequest::decode(encoded).context("undecodable request")?;
    let received_at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let count = request.events.len() as u32;
    let record = EventBatchRecord {
        customer_id: "bench".into(),
        received_at_unix_ms,
        batch_id: format!("{run_id}-{batch}"),
        collector_id: "bench-floor".into(),
        events: request.events,
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: hour::hour_start(received_at_unix_ms / 1000),
            outcome: Outcome::Accepted.into(),
            reason: RejectionReason::Unspecified.into(),
            count,
        }],
        plan_checks: Vec::new(),
    };
    // The collector bench's one customer: its records share one key, as they do there.
    event_log.append(Topic::Events, record::encode("bench".into(), &record)).await?;
    Ok(u64::from(count))
}
