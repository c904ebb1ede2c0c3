//! `hourglass bench floor cql`: what the CQL server costs for the raw store's writes and reads with no
//! logic around them. Each collector record (100 events) becomes one prepared, unlogged,
//! single-partition batch of one row per event (partition: customer, hour, bucket; clustering: event
//! id; the event's protobuf bytes as a blob, ~200 bytes), customers drawn from the benchmarks' seeded
//! Zipf law; then every partition written is read back, paged. The CQL server's CPU per million events
//! is the figure the raw store is held to (issue 24: ≤ 5 CPU-s per million written).
//!
//! It uses a keyspace of its own (`hourglass_bench_floor`), dropped afterwards, and the scylla driver
//! directly, not `crates/cql`: a floor must not move when the store's layout does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hourglass_cql::CqlConfig;
use indicatif::ProgressStyle;
use prost::Message;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use super::{Measurement, cassandra_main_pid, process_cpu_seconds, self_cpu_seconds};
use crate::loadgen;

/// The floor's keyspace.
const KEYSPACE: &str = "hourglass_bench_floor";
/// Distinct batches of row payloads generated before the clock starts, reused in turn.
const POOL_BATCHES: u64 = 1000;

/// Flags of `hourglass bench floor cql`.
#[derive(clap::Args, Clone)]
pub struct CqlFloorArgs {
    /// Events (rows) to write and read back.
    #[arg(long, default_value_t = 1_000_000)]
    pub(super) events: u64,
    /// Rows per batch: the events of one collector record.
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// Batches in flight (the ingestor's default records in flight).
    #[arg(long, default_value_t = 64)]
    pub(super) in_flight: usize,
    /// Customers the batches belong to, drawn with the seeded Zipf law.
    #[arg(long, default_value_t = loadgen::BENCH_CUSTOMERS)]
    pub(super) customers: usize,
    /// Pid of the CQL server, to report its CPU; by default e2e/servers/cassandra.sh's instance `main`.
    #[arg(long)]
    pub(super) store_pid: Option<u32>,
    #[command(flatten)]
    pub(super) cql: CqlConfig,
}

/// What the CQL floor measured: the write and the read, each with this process's CPU (the driver) and
/// the CQL server's.
#[derive(Clone, Copy, Debug)]
pub struct CqlFloorFigures {
    /// Writing the rows.
    pub write: Measurement,
    /// Reading them back.
    pub read: Measurement,
}

/// Runs the CQL floor and prints what it measured.
pub async fn run(args: CqlFloorArgs) -> anyhow::Result<()> {
    let figures = measure(&args, super::Bars::Shown).await?;
    println!(
        "cql floor: {} rows in {}-row unlogged single-partition batches, {} in flight, {} customers (Zipf)",
        args.events, args.batch_size, args.in_flight, args.customers
    );
    for (what, measurement) in [("write", figures.write), ("read ", figures.read)] {
        let store = measurement
            .store_cpu_seconds_per_million()
            .map_or_else(|| "unknown (pass --store-pid)".to_owned(), |cpu| format!("{cpu:.2} CPU-s per million"));
        println!(
            "  {what}  {:.2} s = {:.0} events/s; driver {:.2} CPU-s per million; CQL server {store}",
            measurement.wall_seconds,
            measurement.events_per_second(),
            measurement.cpu_seconds_per_million()
        );
    }
    Ok(())
}

/// Writes and reads back on the floor's keyspace, dropped afterwards.
pub async fn measure(args: &CqlFloorArgs, bars: super::Bars) -> anyhow::Result<CqlFloorFigures> {
    let session = Arc::new(
        args.cql.connect().await.context("failed to connect to CQL (is it running? e2e/servers/cassandra.sh start)")?,
    );
    let table = format!("{KEYSPACE}.rows_{}", super::run_id());
    for statement in [
        format!("CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = {}", args.cql.replication),
        format!(
            "CREATE TABLE {table} (customer_id text, hour_start timestamp, bucket int, event_id text, payload blob, \
             PRIMARY KEY ((customer_id, hour_start, bucket), event_id))"
        ),
    ] {
        session.query_unpaged(statement, ()).await.context("failed to create the floor's table")?;
    }
    let result = write_and_read(args, &session, &table, bars).await;
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {KEYSPACE}"), ()).await?;
    result
}

async fn write_and_read(
    args: &CqlFloorArgs,
    session: &Arc<Session>,
    table: &str,
    bars: super::Bars,
) -> anyhow::Result<CqlFloorFigures> {
    let insert = session
        .prepare(format!(
            "INSERT INTO {table} (customer_id, hour_start, bucket, event_id, payload) VALUES (?, ?, ?, ?, ?)"
        ))
        .await?;
    let select = session
        .prepare(format!(
            "SELECT event_id, payload FROM {table} WHERE customer_id = ? AND hour_start = ? AND bucket = ?"
        ))
        .await?;
    let run_id = super::run_id();
    let batch_size = args.batch_size.max(1) as u64;
    let batches = args.events.div_ceil(batch_size);
    let pool: Vec<Vec<Vec<u8>>> = (0..batches.min(POOL_BATCHES))
        .map(|batch| {
            let events = loadgen::generate_batch(&run_id, batch * batch_size, batch_size as usize);
            events.iter().map(Message::encode_to_vec).collect()
        })
        .collect();
    let mut statement = Batch::new(BatchType::Unlogged);
    (0..batch_size).for_each(|_| statement.append_statement(insert.clone()));
    let hour_start = CqlTimestamp(
        hourglass_core::hour::hour_start(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64) * 1000,
    );
    // Each batch is one partition: the customer's, in a bucket that turns with the batch number.
    let mut customers = loadgen::ZipfCustomers::new(args.customers, loadgen::BENCH_ZIPF_EXPONENT, loadgen::BENCH_SEED);
    let partitions: Vec<(String, i32)> = (0..batches)
        .map(|batch| {
            (loadgen::ZipfCustomers::customer_id(customers.next_rank()), (batch % u64::from(args.cql.buckets)) as i32)
        })
        .collect();
    let last_batch_rows = args.events - (batches - 1) * batch_size;
    let mut last_statement = Batch::new(BatchType::Unlogged);
    (0..last_batch_rows).for_each(|_| last_statement.append_statement(insert.clone()));

    let store_pid = args.store_pid.or_else(cassandra_main_pid);
    let progress = super::progress_bar(args.events, bars).with_style(ProgressStyle::with_template(
        "cql floor: writing {bar:40} {human_pos}/{human_len} rows  {per_sec}",
    )?);
    let write = measured(store_pid, args.events, async {
        let writes = futures::stream::iter(0..batches).map(|batch| {
            let (customer_id, bucket) = &partitions[batch as usize];
            let payloads = &pool[(batch % pool.len() as u64) as usize];
            let rows = if batch + 1 == batches { last_batch_rows } else { batch_size };
            let values: Vec<_> = (0..rows as usize)
                .map(|row| {
                    let event_id = format!("{run_id}-{:012}", batch * batch_size + row as u64);
                    (customer_id.as_str(), hour_start, *bucket, event_id, payloads[row].as_slice())
                })
                .collect();
            let statement = if rows == batch_size { &statement } else { &last_statement };
            let progress = &progress;
            async move {
                session.batch(statement, values).await?;
                progress.inc(rows);
                Ok::<_, anyhow::Error>(())
            }
        });
        let mut writes = writes.buffer_unordered(args.in_flight.max(1));
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    })
    .await?;
    progress.finish_and_clear();

    let distinct: BTreeSet<&(String, i32)> = partitions.iter().collect();
    let read_rows = std::sync::atomic::AtomicU64::new(0);
    let read = measured(store_pid, args.events, async {
        let reads = futures::stream::iter(distinct).map(|(customer_id, bucket)| {
            let (select, read_rows): (&PreparedStatement, _) = (&select, &read_rows);
            async move {
                let mut rows = session
                    .execute_iter(select.clone(), (customer_id.as_str(), hour_start, *bucket))
                    .await?
                    .rows_stream::<(String, Vec<u8>)>()?;
                while let Some((_event_id, payload)) = rows.try_next().await? {
                    debug_assert!(!payload.is_empty());
                    read_rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        let mut reads = reads.buffer_unordered(8);
        while let Some(result) = reads.next().await {
            result?;
        }
        Ok(())
    })
    .await?;
    let read_rows = read_rows.into_inner();
    anyhow::ensure!(read_rows == args.events, "read back {read_rows} of {} rows", args.events);
    Ok(CqlFloorFigures { write, read })
}

/// Runs `work`, measuring its wall time, this process's CPU and the CQL server's.
async fn measured(
    store_pid: Option<u32>,
    events: u64,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Measurement> {
    let store_before = store_pid.and_then(|pid| process_cpu_seconds(pid).ok());
    let cpu_before = self_cpu_seconds();
    let started = Instant::now();
    work.await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = self_cpu_seconds() - cpu_before;
    let store_cpu_seconds =
        store_pid.zip(store_before).and_then(|(pid, before)| Some(process_cpu_seconds(pid).ok()? - before));
    Ok(Measurement { events, wall_seconds, cpu_seconds, peak_rss_kib: None, store_cpu_seconds })
}
