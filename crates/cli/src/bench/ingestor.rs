//! `hourglass bench ingestor`: N events in collector-format records through Kafka into the CQL store,
//! by a real ingestor process. Prints events/s, the ingestor's CPU-seconds per million events and peak
//! RSS, and the CQL server's CPU separately.
//!
//! The ingestor starts first on an empty topic and is warmed with one record; then the records are
//! published and the clock runs until the group's committed offsets reach the topic's end, which the
//! ingestor only commits after the events are written and their hours marked.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::hour;
use hourglass_core::record;
use hourglass_cql::CqlConfig;
use hourglass_kafka::{KafkaConfig, KafkaEventLog, admin};
use hourglass_postgres::PostgresConfig;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::v1::RejectionReason;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Measurement, cassandra_main_pid, cassandra_pid, peak_rss_kib, process_cpu_seconds};
use crate::loadgen;

/// Flags of `hourglass bench ingestor`.
#[derive(clap::Args, Clone)]
pub struct IngestorBenchArgs {
    /// Events to ingest in the measured run.
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) events: u64,
    /// Events per Kafka record (the collector's batch size).
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// Records the ingestor writes at once.
    #[arg(long, default_value_t = 64)]
    pub(super) max_in_flight_records: usize,
    /// Customers the records belong to, chosen per record with a seeded Zipf law (exponent 1.1): a
    /// few customers send most records, as in production.
    #[arg(long, default_value_t = loadgen::BENCH_CUSTOMERS)]
    pub(super) customers: usize,
    /// Pid of the CQL server, to report its CPU; by default read from e2e/servers/cassandra.sh's
    /// instance `main` (or the one `--flush-instance` names).
    #[arg(long)]
    pub(super) store_pid: Option<u32>,
    /// After the measured run, flush the keyspace to SSTables on this e2e/servers/cassandra.sh instance
    /// (`nodetool flush`) and report the CQL server's CPU for it apart: what the table's compression,
    /// indexes and bloom filter cost, which the run itself (commit log and memtable) does not show.
    #[arg(long, value_name = "INSTANCE")]
    pub(super) flush_instance: Option<String>,
    /// Publish records without outcome counts, so the store writes no `batch_outcomes` rows: compared
    /// with a run with them, it shows what those rows cost the CQL server.
    #[arg(long)]
    pub(super) without_outcomes: bool,
    #[command(flatten)]
    pub(super) kafka: KafkaConfig,
    #[command(flatten)]
    pub(super) cql: CqlConfig,
    #[command(flatten)]
    pub(super) postgres: PostgresConfig,
}

/// What the ingestor bench measured.
pub struct IngestorFigures {
    /// The ingestor process's events, wall time, CPU and peak RSS, and the CQL server's CPU.
    pub measurement: Measurement,
    /// Seconds until every record was published (overlapping the ingesting).
    pub published_seconds: f64,
    /// The keyspace written (dropped afterwards).
    pub keyspace: String,
    /// CPU-seconds the CQL server spent flushing the keyspace after the run, with `--flush-instance`.
    pub flush_store_cpu_seconds: Option<f64>,
    /// Rows of `raw_event_blocks` the run left (blocks: what the CQL server pays per row).
    pub block_rows: u64,
}

/// Runs the ingestor benchmark and prints what it measured.
pub async fn run(args: IngestorBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args, super::Bars::Shown).await?;
    print(&args, &figures);
    Ok(())
}

/// Publishes the records and measures an ingestor process of its own until it has committed them all.
pub async fn measure(args: &IngestorBenchArgs, bars: super::Bars) -> anyhow::Result<IngestorFigures> {
    let run_id = super::run_id();
    let mut kafka = args.kafka.clone();
    kafka.events_topic = format!("hourglass.bench.{run_id}");
    kafka.dead_letter_topic = format!("hourglass.bench.{run_id}.dlq");
    let keyspace = format!("bench_{run_id}");
    let group = format!("hourglass-bench-{run_id}");
    let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "hourglass-bench-producer").await?);

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("ingestor")
        .env("HOURGLASS_KAFKA_BROKERS", &kafka.brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", &kafka.events_topic)
        .env("HOURGLASS_KAFKA_DEAD_LETTER_TOPIC", &kafka.dead_letter_topic)
        .env("HOURGLASS_CQL_NODES", args.cql.nodes.join(","))
        .env("HOURGLASS_CQL_KEYSPACE", &keyspace)
        .env("HOURGLASS_DATABASE_URL", &args.postgres.url)
        .env("HOURGLASS_INGESTOR_GROUP", &group)
        .env("HOURGLASS_INGESTOR_MAX_IN_FLIGHT_RECORDS", args.max_in_flight_records.to_string())
        .env("HOURGLASS_LOG", "warn")
        // A service logs to stdout, discarded here: its warnings go to the bench's stderr instead.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the ingestor")?;
    let ingestor_pid = child.id().context("ingestor exited at once")?;

    // Warm-up: one record through the whole path, so the group has joined and statements are prepared.
    publish(&event_log, &format!("{run_id}w"), 1, args, &ProgressBar::hidden()).await?;
    wait_until_committed(&kafka, &group, Duration::from_secs(120)).await.context("warm-up")?;

    let store_pid = match &args.flush_instance {
        Some(instance) => args.store_pid.or_else(|| cassandra_pid(instance)),
        None => args.store_pid.or_else(cassandra_main_pid),
    };
    let store_cpu_before = store_pid.and_then(|pid| process_cpu_seconds(pid).ok());
    let cpu_before = process_cpu_seconds(ingestor_pid)?;
    let started = Instant::now();
    let progress = super::progress_bar(args.events, bars)
        .with_style(ProgressStyle::with_template("publishing {bar:40} {human_pos}/{human_len} events  {per_sec}")?);
    publish(&event_log, &run_id, args.events, args, &progress).await?;
    progress.finish_and_clear();
    let published_seconds = started.elapsed().as_secs_f64();
    wait_until_committed(&kafka, &group, Duration::from_secs(1800)).await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let ingestor_cpu = process_cpu_seconds(ingestor_pid)? - cpu_before;
    let store_cpu =
        store_pid.zip(store_cpu_before).and_then(|(pid, before)| Some(process_cpu_seconds(pid).ok()? - before));
    let peak_rss = peak_rss_kib(ingestor_pid)?;
    super::terminate(&mut child, "ingestor").await;
    let flush_store_cpu_seconds = match &args.flush_instance {
        Some(instance) => super::flush_keyspace(instance, &keyspace, store_pid).await?,
        None => None,
    };

    admin::delete_topics(&kafka, &[&kafka.events_topic, &kafka.dead_letter_topic]).await?;
    let session = args.cql.connect().await?;
    let block_rows = count_block_rows(&session, &keyspace).await?;
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await?;

    let measurement = Measurement {
        events: args.events,
        wall_seconds,
        cpu_seconds: ingestor_cpu,
        peak_rss_kib: Some(peak_rss),
        store_cpu_seconds: store_cpu,
    };
    Ok(IngestorFigures { measurement, published_seconds, keyspace, flush_store_cpu_seconds, block_rows })
}

/// The rows of the keyspace's blocks table, counted by paging through one small column (a `COUNT(*)` of
/// a large table times out).
async fn count_block_rows(session: &scylla::client::session::Session, keyspace: &str) -> anyhow::Result<u64> {
    let mut statement = scylla::statement::unprepared::Statement::new(format!(
        "SELECT bucket FROM {keyspace}.{}",
        hourglass_cql::schema::BLOCKS_TABLE
    ));
    statement.set_page_size(5000);
    let mut rows = session.query_iter(statement, ()).await?.rows_stream::<(i32,)>()?;
    let mut count = 0u64;
    while rows.try_next().await?.is_some() {
        count += 1;
    }
    Ok(count)
}

fn print(args: &IngestorBenchArgs, figures: &IngestorFigures) {
    let IngestorFigures { measurement, published_seconds, keyspace, flush_store_cpu_seconds, block_rows } = figures;
    let (wall_seconds, ingestor_cpu) = (measurement.wall_seconds, measurement.cpu_seconds);
    let (peak_rss, store_cpu) = (measurement.peak_rss_kib.unwrap_or_default(), measurement.store_cpu_seconds);
    let events = args.events as f64;
    println!(
        "ingestor bench: {} events in {}-event records into CQL keyspace {keyspace}",
        args.events, args.batch_size
    );
    println!("  publishing         {published_seconds:.2} s (overlaps with ingesting)");
    println!("  wall time          {wall_seconds:.2} s until every offset was committed");
    println!("  throughput         {:.0} events/s", events / wall_seconds);
    println!("  ingestor CPU       {ingestor_cpu:.2} s = {:.2} CPU-s per million events", ingestor_cpu / events * 1e6);
    println!("  per ingestor core  {:.0} events/s", events / ingestor_cpu);
    println!("  ingestor peak RSS  {:.1} MiB", peak_rss as f64 / 1024.0);
    match store_cpu {
        Some(cpu) => println!(
            "  CQL server CPU     {cpu:.2} s = {:.2} CPU-s per million events (same machine)",
            cpu / events * 1e6
        ),
        None => println!("  CQL server CPU     unknown (pass --store-pid)"),
    }
    println!("  CQL block rows     {block_rows} = {:.0} per million events", *block_rows as f64 / events * 1e6);
    if let Some(cpu) = flush_store_cpu_seconds {
        println!(
            "  CQL server flush   {cpu:.2} s = {:.2} CPU-s per million events (nodetool flush after the run)",
            cpu / events * 1e6
        );
    }
}

/// Publishes `events` events as collector-format records, 256 appends in flight, each record of a
/// customer drawn from the seeded Zipf law and keyed by it, as the collector keys records.
async fn publish(
    event_log: &Arc<KafkaEventLog>,
    run_id: &str,
    events: u64,
    args: &IngestorBenchArgs,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let batch_size = args.batch_size;
    let batches = events.div_ceil(batch_size as u64);
    let mut customers = loadgen::ZipfCustomers::new(args.customers, loadgen::BENCH_ZIPF_EXPONENT, loadgen::BENCH_SEED);
    let received_at_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let appends = futures::stream::iter(0..batches).map(|batch| {
        let first = batch * batch_size as u64;
        let count = (events - first).min(batch_size as u64) as usize;
        let batch_events = loadgen::generate_batch(run_id, first, count);
        let hour_start = hour::hour_start(received_at_unix_ms / 1000);
        let customer_id = loadgen::ZipfCustomers::customer_id(customers.next_rank());
        let record = EventBatchRecord {
            customer_id: customer_id.clone(),
            received_at_unix_ms,
            batch_id: format!("{run_id}-{batch}"),
            collector_id: "bench".into(),
            events: batch_events,
            outcomes: if args.without_outcomes {
                Vec::new()
            } else {
                vec![OutcomeCount {
                    hour_start_unix_secs: hour_start,
                    outcome: Outcome::Accepted.into(),
                    reason: RejectionReason::Unspecified.into(),
                    count: count as u32,
                }]
            },
            plan_checks: Vec::new(),
        };
        let log_record = record::encode(customer_id, &record);
        let append = event_log.append(Topic::Events, log_record);
        async move {
            append.await?;
            progress.inc(count as u64);
            Ok::<_, anyhow::Error>(())
        }
    });
    let mut appends = appends.buffer_unordered(256);
    while let Some(result) = appends.next().await {
        result?;
    }
    Ok(())
}

/// Waits until the group has committed every partition's high watermark.
async fn wait_until_committed(kafka: &KafkaConfig, group: &str, timeout: Duration) -> anyhow::Result<()> {
    let (kafka, group) = (kafka.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut config = kafka.client_config("hourglass-bench-watcher")?;
        config.set("group.id", &group);
        let watcher: BaseConsumer = config.create()?;
        let deadline = Instant::now() + timeout;
        let request_timeout = Duration::from_secs(10);
        loop {
            // A topic created moments ago may have no leader yet (NotLeaderForPartition): an error
            // only means "not yet", until the deadline.
            let committed_everything = || -> anyhow::Result<bool> {
                let metadata = watcher.fetch_metadata(Some(&kafka.events_topic), request_timeout)?;
                let mut partitions = TopicPartitionList::new();
                let mut ends = Vec::new();
                for partition in metadata.topics()[0].partitions() {
                    partitions.add_partition(&kafka.events_topic, partition.id());
                    ends.push(watcher.fetch_watermarks(&kafka.events_topic, partition.id(), request_timeout)?.1);
                }
                let committed = watcher.committed_offsets(partitions, request_timeout)?;
                Ok(committed.elements().iter().zip(&ends).all(|(element, end)| match element.offset() {
                    Offset::Offset(offset) => offset >= *end,
                    _ => *end == 0,
                }))
            };
            match committed_everything() {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() > deadline => {
                    bail!("the ingestor had not committed everything after {timeout:?}")
                }
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!("committed offsets still unreadable after {timeout:?}")));
                }
                Ok(false) | Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await?
}
