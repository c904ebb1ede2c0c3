//! `hourglass bench floor kafka`: the Kafka distribution's own ProducerPerformance and
//! ConsumerPerformance (`e2e/servers/kafka.sh perf-producer` / `perf-consumer`) on the same broker,
//! with records the size of the collector's 100-event batch record and the collector's producer
//! settings (acks=all, idempotence, its compression and linger). What a JVM client moves through this
//! broker bounds what the collector (producing) and the ingestor (consuming) can.
//!
//! The tools' payloads are random letters, not protobuf: they compress about as well as the events'
//! text. Their CPU is the JVM's, start-up and JIT included, from wait4(2).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use hourglass_core::event_log::Topic;
use hourglass_core::record;
use hourglass_kafka::{KafkaConfig, admin};
use hourglass_proto::log::v1::EventBatchRecord;

use super::Measurement;
use crate::loadgen;

/// Flags of `hourglass bench floor kafka`.
#[derive(clap::Args, Clone)]
pub struct KafkaFloorArgs {
    /// Events the records stand for (each record is one batch of `--batch-size` events).
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) events: u64,
    /// Events per record: the record size is that of a collector record of this many events.
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// The script running the Kafka tools (`e2e/servers/kafka.sh`); by default found from the working
    /// directory.
    #[arg(long)]
    pub(super) kafka_tools: Option<PathBuf>,
    #[command(flatten)]
    pub(super) kafka: KafkaConfig,
}

/// What the Kafka tools measured.
#[derive(Clone, Copy, Debug)]
pub struct KafkaFloorFigures {
    /// Bytes per record.
    pub record_bytes: usize,
    /// ProducerPerformance: events (records × batch size), wall time, the tool's CPU.
    pub producer: Measurement,
    /// ProducerPerformance's own summary.
    pub producer_summary: ProducerSummary,
    /// ConsumerPerformance: events, wall time, the tool's CPU.
    pub consumer: Measurement,
    /// ConsumerPerformance's own summary.
    pub consumer_summary: ConsumerSummary,
}

/// The last line ProducerPerformance prints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProducerSummary {
    /// Records sent.
    pub records: u64,
    /// Records per second.
    pub records_per_second: f64,
    /// MB (2^20 bytes) per second.
    pub megabytes_per_second: f64,
    /// Average latency, milliseconds.
    pub average_latency_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_latency_ms: f64,
}

/// The figures ConsumerPerformance prints under its header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConsumerSummary {
    /// Records consumed.
    pub records: u64,
    /// Records per second, fetching only (the group's join excluded).
    pub fetch_records_per_second: f64,
    /// MB per second, fetching only.
    pub fetch_megabytes_per_second: f64,
    /// Milliseconds spent fetching.
    pub fetch_ms: f64,
}

/// Runs the Kafka floor and prints what it measured.
pub async fn run(args: KafkaFloorArgs) -> anyhow::Result<()> {
    let figures = measure(&args).await?;
    let (producer, consumer) = (&figures.producer_summary, &figures.consumer_summary);
    println!(
        "kafka floor: {} records of {} bytes ({} events each) on {}",
        producer.records, figures.record_bytes, args.batch_size, args.kafka.brokers
    );
    println!(
        "  ProducerPerformance  {:.0} records/s ({:.1} MB/s) = {:.0} events/s; latency avg {:.0} ms, p99 {:.0} ms",
        producer.records_per_second,
        producer.megabytes_per_second,
        figures.producer.events_per_second(),
        producer.average_latency_ms,
        producer.p99_latency_ms
    );
    println!(
        "                       JVM CPU {:.2} s = {:.0} events/s per core (start-up included)",
        figures.producer.cpu_seconds,
        figures.producer.per_core_events_per_second()
    );
    println!(
        "  ConsumerPerformance  {:.0} records/s ({:.1} MB/s) fetching = {:.0} events/s; JVM CPU {:.2} s",
        consumer.fetch_records_per_second,
        consumer.fetch_megabytes_per_second,
        figures.consumer.events_per_second(),
        figures.consumer.cpu_seconds
    );
    Ok(())
}

/// The producer settings the collector uses, as ProducerPerformance's `--producer-props`.
fn producer_props(kafka: &KafkaConfig) -> Vec<String> {
    vec![
        format!("bootstrap.servers={}", kafka.brokers),
        "acks=all".into(),
        "enable.idempotence=true".into(),
        format!("compression.type={}", kafka.compression),
        format!("linger.ms={}", kafka.linger_ms),
    ]
}

/// Produces and consumes the records on a topic of its own, deleted afterwards.
pub async fn measure(args: &KafkaFloorArgs) -> anyhow::Result<KafkaFloorFigures> {
    let script = super::kafka_script(args.kafka_tools.as_deref())?;
    let run_id = super::run_id();
    let mut kafka = args.kafka.clone();
    kafka.events_topic = format!("hourglass.bench.{run_id}.kafka-floor");
    admin::ensure_topics(&kafka, &[Topic::Events]).await.context("failed to create the floor's topic")?;
    let result = produce_and_consume(args, &script, &kafka, &run_id).await;
    admin::delete_topics(&kafka, &[&kafka.events_topic]).await?;
    result
}

async fn produce_and_consume(
    args: &KafkaFloorArgs,
    script: &std::path::Path,
    kafka: &KafkaConfig,
    run_id: &str,
) -> anyhow::Result<KafkaFloorFigures> {
    let sample = EventBatchRecord {
        customer_id: "bench".into(),
        batch_id: uuid::Uuid::now_v7().to_string(),
        collector_id: "bench".into(),
        events: loadgen::generate_batch(run_id, 0, args.batch_size),
        ..Default::default()
    };
    let record_bytes = record::encode("bench".into(), &sample).payload.len();
    let records = args.events.div_ceil(args.batch_size as u64).max(1);

    let mut producer = Command::new(script);
    producer
        .arg("perf-producer")
        .args(["--topic", &kafka.events_topic])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_bytes.to_string()])
        .args(["--throughput", "-1"])
        .arg("--producer-props")
        .args(producer_props(kafka));
    let started = std::time::Instant::now();
    let (status, stdout, stderr, producer_cpu) =
        tokio::task::spawn_blocking(move || super::run_measured(producer)).await??;
    let producer_wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("ProducerPerformance failed ({status}): {}", stderr.trim());
    }
    let producer_summary = parse_producer_output(&stdout)
        .with_context(|| format!("unexpected ProducerPerformance output:\n{stdout}{stderr}"))?;
    anyhow::ensure!(producer_summary.records == records, "sent {} of {records} records", producer_summary.records);

    let mut consumer = Command::new(script);
    consumer
        .arg("perf-consumer")
        .args(["--bootstrap-server", &kafka.brokers])
        .args(["--topic", &kafka.events_topic])
        .args(["--messages", &records.to_string()])
        .args(["--group", &format!("hourglass-bench-{run_id}")])
        .args(["--timeout", "60000"]);
    let started = std::time::Instant::now();
    let (status, stdout, stderr, consumer_cpu) =
        tokio::task::spawn_blocking(move || super::run_measured(consumer)).await??;
    let consumer_wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("ConsumerPerformance failed ({status}): {}", stderr.trim());
    }
    let consumer_summary = parse_consumer_output(&stdout)
        .with_context(|| format!("unexpected ConsumerPerformance output:\n{stdout}{stderr}"))?;
    anyhow::ensure!(consumer_summary.records >= records, "consumed {} of {records} records", consumer_summary.records);

    let events_per_record = args.batch_size as u64;
    // The tools' own rates exclude the JVM's start-up; the wall time here would not.
    let producer = Measurement {
        events: records * events_per_record,
        wall_seconds: records as f64 / producer_summary.records_per_second.max(f64::MIN_POSITIVE),
        cpu_seconds: producer_cpu,
        peak_rss_kib: None,
        store_cpu_seconds: None,
    };
    let consumer = Measurement {
        events: records * events_per_record,
        wall_seconds: consumer_summary.fetch_ms / 1e3,
        cpu_seconds: consumer_cpu,
        peak_rss_kib: None,
        store_cpu_seconds: None,
    };
    tracing::debug!(producer_wall, consumer_wall, "kafka tools ran");
    Ok(KafkaFloorFigures { record_bytes, producer, producer_summary, consumer, consumer_summary })
}

/// Parses ProducerPerformance's summary, the last line like `500000 records sent, 98716.7 records/sec
/// (18.83 MB/sec), 1234.56 ms avg latency, 2345.00 ms max latency, 12 ms 50th, 34 ms 95th, 56 ms 99th,
/// 78 ms 99.9th.` (the progress lines before it have no percentiles).
pub fn parse_producer_output(output: &str) -> Option<ProducerSummary> {
    let line = output.lines().rev().find(|line| line.contains("records sent") && line.contains("99th"))?;
    let number_before = |suffix: &str| -> Option<f64> {
        let end = line.find(suffix)?;
        line[..end].trim_end().rsplit([' ', '(', ',']).next()?.parse().ok()
    };
    Some(ProducerSummary {
        records: number_before(" records sent")? as u64,
        records_per_second: number_before(" records/sec")?,
        megabytes_per_second: number_before(" MB/sec")?,
        average_latency_ms: number_before(" ms avg latency")?,
        p99_latency_ms: number_before(" ms 99th")?,
    })
}

/// Parses ConsumerPerformance's output: a header of comma-separated names (`start.time, end.time,
/// data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
/// fetch.MB.sec, fetch.nMsg.sec`) and a line of values in the same order; found by name, so a
/// reordered or extended header still parses.
pub fn parse_consumer_output(output: &str) -> Option<ConsumerSummary> {
    let mut lines = output.lines().skip_while(|line| !line.contains("data.consumed.in.nMsg"));
    let names: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
    let values: Vec<&str> =
        lines.find(|line| line.split(',').count() == names.len())?.split(',').map(str::trim).collect();
    let value = |name: &str| -> Option<f64> { values.get(names.iter().position(|each| *each == name)?)?.parse().ok() };
    Some(ConsumerSummary {
        records: value("data.consumed.in.nMsg")? as u64,
        fetch_records_per_second: value("fetch.nMsg.sec")?,
        fetch_megabytes_per_second: value("fetch.MB.sec")?,
        fetch_ms: value("fetch.time.ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of kafka.sh perf-producer (Kafka 4.1.1) on this project's broker, warnings on stderr.
    const PRODUCER_OUTPUT: &str = "\
1403 records sent, 280.4 records/sec (5.35 MB/sec), 2301.9 ms avg latency, 3790.0 ms max latency.
2000 records sent, 989.6 records/sec (18.88 MB/sec), 520.69 ms avg latency, 768.00 ms max latency, 545 ms 50th, 697 ms 95th, 720 ms 99th, 739 ms 99.9th.
";

    const CONSUMER_OUTPUT: &str = "\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-29 12:40:34:229, 2026-11-29 12:40:35:408, 38.1470, 32.3554, 2000, 1696.3528, 537, 642, 59.4190, 3115.2648
";

    #[test]
    fn the_producer_summary_is_the_line_with_percentiles() {
        let summary = parse_producer_output(PRODUCER_OUTPUT).unwrap();
        assert_eq!(
            summary,
            ProducerSummary {
                records: 2000,
                records_per_second: 989.6,
                megabytes_per_second: 18.88,
                average_latency_ms: 520.69,
                p99_latency_ms: 720.0,
            }
        );
        // Only progress lines: the run did not finish.
        assert_eq!(parse_producer_output(PRODUCER_OUTPUT.lines().next().unwrap()), None);
        assert_eq!(parse_producer_output(""), None);
    }

    #[test]
    fn the_consumer_figures_are_found_by_their_names() {
        let summary = parse_consumer_output(CONSUMER_OUTPUT).unwrap();
        assert_eq!(
            summary,
            ConsumerSummary {
                records: 2000,
                fetch_records_per_second: 3115.2648,
                fetch_megabytes_per_second: 59.419,
                fetch_ms: 642.0
            }
        );
        let reordered =
            "warning first\nfetch.nMsg.sec, data.consumed.in.nMsg, fetch.MB.sec, fetch.time.ms\n10.5, 7, 1.5, 700\n";
        let summary = parse_consumer_output(reordered).unwrap();
        assert_eq!((summary.records, summary.fetch_records_per_second, summary.fetch_ms), (7, 10.5, 700.0));
        assert_eq!(parse_consumer_output("start.time, end.time\n"), None);
        let header_only = CONSUMER_OUTPUT.lines().next().unwrap();
        assert_eq!(parse_consumer_output(header_only), None);
    }

    #[test]
    fn the_producer_gets_the_collectors_durability_and_batching() {
        let kafka = KafkaConfig::for_brokers("127.0.0.1:1");
        let props = producer_props(&kafka);
        for expected in ["acks=all", "enable.idempotence=true", "compression.type=lz4", "linger.ms=5"] {
            assert!(props.iter().any(|prop| prop == expected), "{expected} in {props:?}");
        }
    }
}
