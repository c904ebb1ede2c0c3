//! `hourglass bench aggregator`: rolls up one customer-hour of N raw events, as an aggregation job does,
//! and prints events/s per core of this process's CPU (reading rows through the driver and folding
//! them), the CQL server's CPU separately, and what that read rate means for a peak hour.
//!
//! It runs in this process: the job is a function, and this process does nothing else while it runs.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use hourglass_core::hour;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_cql::{CqlConfig, CqlRawStore, schema};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use indicatif::ProgressStyle;

use super::{Measurement, cassandra_main_pid, cassandra_pid, process_cpu_seconds, self_cpu_seconds};
use crate::loadgen;

/// Events of the busiest hour the platform plans for (41.4k/s for an hour, rounded up).
const PEAK_HOUR_EVENTS: f64 = 150_000_000.0;

/// Flags of `hourglass bench aggregator`.
#[derive(clap::Args, Clone)]
pub struct AggregatorBenchArgs {
    /// Raw events in the customer-hour.
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) events: u64,
    /// Pid of the CQL server, to report its CPU; by default e2e/servers/cassandra.sh's instance `main`
    /// (or the one `--flush-instance` names).
    #[arg(long)]
    pub(super) store_pid: Option<u32>,
    /// Flush the written hour to SSTables on this e2e/servers/cassandra.sh instance (`nodetool flush`)
    /// before reading it, as a closed hour mostly is in production, and report the flush's CPU apart.
    /// Without it the hour is read from the memtable, which the table's compression never touches.
    #[arg(long, value_name = "INSTANCE")]
    pub(super) flush_instance: Option<String>,
    /// Buckets folded at once, each in a task of its own: the aggregator's
    /// `--aggregator-bucket-concurrency` (1 folds them one after the other).
    #[arg(long = "aggregator-bucket-concurrency", default_value_t = default_bucket_concurrency())]
    pub(super) bucket_concurrency: usize,
    #[command(flatten)]
    pub(super) cql: CqlConfig,
}

/// The aggregator role's default `--aggregator-bucket-concurrency`.
pub(super) fn default_bucket_concurrency() -> usize {
    hourglass_aggregator::AggregatorConfig::with_defaults().bucket_concurrency
}

/// What the aggregator bench measured.
pub struct AggregatorFigures {
    /// This process's events, wall time and CPU while rolling the hour up, and the CQL server's CPU.
    pub measurement: Measurement,
    /// Buckets the hour was read from.
    pub buckets: u32,
    /// Event types in the rollup.
    pub event_types: usize,
    /// CPU-seconds the CQL server spent flushing the hour before the read, with `--flush-instance`.
    pub flush_store_cpu_seconds: Option<f64>,
    /// Buckets folded at once.
    pub bucket_concurrency: usize,
}

impl AggregatorFigures {
    /// Minutes one job would take for the busiest planned hour at the measured read rate.
    pub fn peak_hour_minutes(&self) -> f64 {
        PEAK_HOUR_EVENTS / self.measurement.events_per_second() / 60.0
    }
}

/// Runs the aggregator benchmark and prints what it measured.
pub async fn run(args: AggregatorBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args, super::Bars::Shown).await?;
    print(&figures);
    Ok(())
}

/// Writes one customer-hour to a keyspace of its own, then measures rolling it up in this process.
pub async fn measure(args: &AggregatorBenchArgs, bars: super::Bars) -> anyhow::Result<AggregatorFigures> {
    let run_id = super::run_id();
    let mut cql = args.cql.clone();
    cql.keyspace = format!("bench_aggregator_{run_id}");
    let session = Arc::new(cql.connect().await?);
    schema::migrate(&session, &cql).await.context("failed to create the bench keyspace")?;
    let raw_store = CqlRawStore::with_session(Arc::clone(&session), &cql).await?;

    // One closed hour of one customer, written the way the ingestor writes it.
    let hour_start = hour::hour_start(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64) - 3 * 3600;
    let progress = super::progress_bar(args.events, bars)
        .with_style(ProgressStyle::with_template("writing raw events {bar:40} {human_pos}/{human_len}  {per_sec}")?);
    let batches = args.events.div_ceil(100);
    let writes = futures::stream::iter(0..batches.div_ceil(16)).map(|group| {
        let records: Vec<EventBatchRecord> = (group * 16..((group + 1) * 16).min(batches))
            .map(|batch| {
                let first = batch * 100;
                let count = (args.events - first).min(100) as usize;
                let mut events = loadgen::generate_batch(&run_id, first, count);
                for (offset, event) in events.iter_mut().enumerate() {
                    event.occurred_at =
                        Some(Timestamp { seconds: hour_start + ((first as i64 + offset as i64) % 3600), nanos: 0 });
                }
                EventBatchRecord {
                    customer_id: "bench".into(),
                    batch_id: format!("{run_id}-{batch}"),
                    events,
                    ..Default::default()
                }
            })
            .collect();
        let written: u64 = records.iter().map(|record| record.events.len() as u64).sum();
        let raw_store = &raw_store;
        let progress = &progress;
        async move {
            raw_store.write_records(&RecordView::from_records(&records)).await?;
            progress.inc(written);
            Ok::<_, anyhow::Error>(())
        }
    });
    let mut writes = writes.buffer_unordered(8);
    while let Some(result) = writes.next().await {
        result?;
    }
    progress.finish_and_clear();

    let store_pid = match &args.flush_instance {
        Some(instance) => args.store_pid.or_else(|| cassandra_pid(instance)),
        None => args.store_pid.or_else(cassandra_main_pid),
    };
    let flush_store_cpu_seconds = match &args.flush_instance {
        Some(instance) => super::flush_keyspace(instance, &cql.keyspace, store_pid).await?,
        None => None,
    };
    let store_cpu_before = store_pid.and_then(|pid| process_cpu_seconds(pid).ok());
    let cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let rollup =
        hourglass_aggregator::aggregate_hour(&raw_store, "bench", hour_start, true, args.bucket_concurrency).await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let our_cpu = self_cpu_seconds() - cpu_before;
    let store_cpu =
        store_pid.zip(store_cpu_before).and_then(|(pid, before)| Some(process_cpu_seconds(pid).ok()? - before));
    anyhow::ensure!(rollup.events == args.events, "rolled up {} of {} events", rollup.events, args.events);

    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", cql.keyspace), ()).await?;
    let measurement = Measurement {
        events: args.events,
        wall_seconds,
        cpu_seconds: our_cpu,
        peak_rss_kib: None,
        store_cpu_seconds: store_cpu,
    };
    Ok(AggregatorFigures {
        measurement,
        buckets: raw_store.bucket_count(),
        event_types: rollup.event_types.len(),
        flush_store_cpu_seconds,
        bucket_concurrency: args.bucket_concurrency,
    })
}

fn print(figures: &AggregatorFigures) {
    let AggregatorFigures { measurement, buckets, event_types, flush_store_cpu_seconds, bucket_concurrency } = figures;
    let (wall_seconds, our_cpu, store_cpu) =
        (measurement.wall_seconds, measurement.cpu_seconds, measurement.store_cpu_seconds);
    let events = measurement.events as f64;
    let read_rate = measurement.events_per_second();
    println!(
        "aggregator bench: one customer-hour of {} events ({buckets} buckets, {} folded at once), {event_types} event \
         types",
        measurement.events, bucket_concurrency
    );
    println!("  wall time          {wall_seconds:.2} s = {read_rate:.0} events/s read and rolled up");
    println!(
        "  our CPU            {our_cpu:.2} s = {:.0} events/s per core (driver decoding + fold)",
        events / our_cpu
    );
    match store_cpu {
        Some(cpu) => println!(
            "  CQL server CPU     {cpu:.2} s = {:.2} CPU-s per million events (same machine)",
            cpu / events * 1e6
        ),
        None => println!("  CQL server CPU     unknown (pass --store-pid)"),
    }
    if let Some(cpu) = flush_store_cpu_seconds {
        println!(
            "  CQL server flush   {cpu:.2} s = {:.2} CPU-s per million events (nodetool flush before the read)",
            cpu / events * 1e6
        );
    }
    println!(
        "  peak hour          150M events at this read rate: {:.1} min on one job (the target is 3 min; buckets and\n                     read concurrency scale it, as does a store on dedicated cores)",
        figures.peak_hour_minutes()
    );
}
