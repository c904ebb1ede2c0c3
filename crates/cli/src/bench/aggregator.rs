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
use hourglass_cql::{CqlConfig, CqlRawStore, schema};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use indicatif::{ProgressBar, ProgressStyle};

use super::{cassandra_main_pid, process_cpu_seconds, self_cpu_seconds};
use crate::loadgen;

/// Events of the busiest hour the platform plans for (41.4k/s for an hour, rounded up).
const PEAK_HOUR_EVENTS: f64 = 150_000_000.0;

/// Flags of `hourglass bench aggregator`.
#[derive(clap::Args)]
pub struct AggregatorBenchArgs {
    /// Raw events in the customer-hour.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Pid of the CQL server, to report its CPU; by default e2e/servers/cassandra.sh's instance `main`.
    #[arg(long)]
    store_pid: Option<u32>,
    #[command(flatten)]
    cql: CqlConfig,
}

/// Runs the aggregator benchmark.
pub async fn run(args: AggregatorBenchArgs) -> anyhow::Result<()> {
    let run_id = format!("bench{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
    let mut cql = args.cql.clone();
    cql.keyspace = format!("bench_aggregator_{run_id}");
    let session = Arc::new(cql.connect().await?);
    schema::migrate(&session, &cql).await.context("failed to create the bench keyspace")?;
    let raw_store = CqlRawStore::with_session(Arc::clone(&session), &cql).await?;

    // One closed hour of one customer, written the way the ingestor writes it.
    let hour_start = hour::hour_start(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64) - 3 * 3600;
    let progress = ProgressBar::new(args.events)
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
            raw_store.write_records(&records).await?;
            progress.inc(written);
            Ok::<_, anyhow::Error>(())
        }
    });
    let mut writes = writes.buffer_unordered(8);
    while let Some(result) = writes.next().await {
        result?;
    }
    progress.finish_and_clear();

    let store_pid = args.store_pid.or_else(cassandra_main_pid);
    let store_cpu_before = store_pid.and_then(|pid| process_cpu_seconds(pid).ok());
    let cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let rollup = hourglass_aggregator::aggregate_hour(&raw_store, "bench", hour_start, true).await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let our_cpu = self_cpu_seconds() - cpu_before;
    let store_cpu =
        store_pid.zip(store_cpu_before).and_then(|(pid, before)| Some(process_cpu_seconds(pid).ok()? - before));
    anyhow::ensure!(rollup.events == args.events, "rolled up {} of {} events", rollup.events, args.events);

    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", cql.keyspace), ()).await?;
    let events = args.events as f64;
    let read_rate = events / wall_seconds;
    println!(
        "aggregator bench: one customer-hour of {} events ({} buckets), {} event types",
        args.events,
        raw_store.bucket_count(),
        rollup.event_types.len()
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
    println!(
        "  peak hour          150M events at this read rate: {:.1} min on one job (the target is 3 min; buckets and\n                     read concurrency scale it, as does a store on dedicated cores)",
        PEAK_HOUR_EVENTS / read_rate / 60.0
    );
    Ok(())
}
