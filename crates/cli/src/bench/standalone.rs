//! `hourglass bench standalone`: sustained ingest into a real `hourglass standalone` process on a fresh
//! data directory, with ingestion and rollups keeping up. Prints the acknowledged events/s, how long after
//! the last ack every event was counted in the hourly rollups (and so the end-to-end rate), and the
//! process's CPU per event and peak RSS.

use std::net::TcpListener as StdTcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_proto::v1::{GetLedgerRequest, TimeRange};
use indicatif::ProgressStyle;

use super::{Measurement, peak_rss_kib, process_cpu_seconds, self_cpu_seconds, wait_until_serving};
use crate::loadgen::{self, EventSource, LoadPlan};

/// Flags of `hourglass bench standalone`.
#[derive(clap::Args, Clone)]
pub struct StandaloneBenchArgs {
    /// Events to send.
    #[arg(long, default_value_t = 3_000_000)]
    pub(super) events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    pub(super) connections: usize,
    /// Streams per connection.
    #[arg(long, default_value_t = 2)]
    pub(super) streams_per_connection: usize,
    /// Unacknowledged batches per stream.
    #[arg(long, default_value_t = 32)]
    pub(super) in_flight: usize,
    /// Where to make the fresh data directory (it is deleted afterwards). Use the disk standalone would
    /// run on: the log fsyncs every group commit.
    #[arg(long, default_value = "hourglass-bench-data")]
    pub(super) data_dir_parent: std::path::PathBuf,
}

async fn counted_events(
    client: &mut QueryServiceClient<tonic::transport::Channel>,
    key: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<(u64, u64)> {
    let mut request = tonic::Request::new(GetLedgerRequest {
        range: Some(TimeRange {
            start: Some(Timestamp { seconds: from, nanos: 0 }),
            end: Some(Timestamp { seconds: to, nanos: 0 }),
        }),
    });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse()?);
    let rows = client.get_ledger(request).await?.into_inner().rows;
    Ok((rows.iter().map(|row| row.counted).sum(), rows.iter().map(|row| row.accepted).sum()))
}

/// What the standalone bench measured.
pub struct StandaloneFigures {
    /// The standalone process's events, wall time until every event was counted, CPU and peak RSS.
    pub measurement: Measurement,
    /// Seconds until the last ack.
    pub acked_seconds: f64,
    /// Seconds until every record was in the raw store.
    pub ingested_seconds: f64,
    /// Bytes of the data directory at the end (the log trimmed as ingested).
    pub data_dir_bytes: u64,
    /// The load generator's CPU-seconds (this process), apart from the figures.
    pub client_cpu_seconds: f64,
}

/// Runs the standalone benchmark and prints what it measured.
pub async fn run(args: StandaloneBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args, super::Bars::Shown).await?;
    print(&args, &figures);
    Ok(())
}

/// Sends the events to a standalone process of its own, on a fresh data directory it deletes
/// afterwards, and measures it until every event is counted in the rollups.
pub async fn measure(args: &StandaloneBenchArgs, bars: super::Bars) -> anyhow::Result<StandaloneFigures> {
    let run_id = super::run_id();
    let data_dir = std::path::absolute(args.data_dir_parent.join(&run_id))?;
    // Only the parent: standalone creates its data directory itself, private to its owner.
    std::fs::create_dir_all(&args.data_dir_parent)?;
    let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("standalone")
        .arg("--data-dir")
        .arg(&data_dir)
        .env("HOURGLASS_COLLECTOR_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("HOURGLASS_LOG", "warn")
        // A service logs to stdout, discarded here: its warnings go to the bench's stderr instead.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start hourglass standalone")?;
    let pid = child.id().context("standalone exited at once")?;
    let target = format!("http://127.0.0.1:{port}");
    wait_until_serving(&target, Duration::from_secs(60)).await?;

    let keys = std::fs::read_to_string(data_dir.join("demo-keys.txt")).context("standalone wrote no demo keys")?;
    let key = |scope: &str| {
        keys.lines()
            .find_map(|line| line.strip_prefix(scope).map(|key| key.trim().to_owned()))
            .context("demo key missing")
    };
    let (ingest_key, query_key) = (key("ingest:")?, key("query:")?);
    // The benchmark measures the platform, not the default quota.
    let meta = SqliteMetaStore::open(&data_dir).await?;
    let unlimited = CustomerLimits {
        events_per_second: Some(i32::MAX as u32),
        burst_events: Some(i32::MAX as u32),
        ..Default::default()
    };
    meta.set_customer_limits(&CustomerId::new("demo")?, unlimited).await?;

    let plan = LoadPlan {
        target: target.clone(),
        api_key: ingest_key,
        source: EventSource::Generated { count: args.events, run_id: run_id.clone() },
        batch_size: args.batch_size,
        connections: args.connections,
        streams_per_connection: args.streams_per_connection,
        in_flight_per_stream: args.in_flight,
        retry: true,
    };
    let progress = super::progress_bar(args.events, bars).with_style(ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} events acked  {per_sec}  eta {eta}",
    )?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let (from, to) = (hourglass_core::hour::hour_start(now) - 3600, hourglass_core::hour::hour_start(now) + 7200);
    let cpu_before = process_cpu_seconds(pid)?;
    let client_cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let report = loadgen::run(&plan, &progress).await?;
    let acked_at = started.elapsed().as_secs_f64();
    let client_cpu = self_cpu_seconds() - client_cpu_before;
    progress.finish_and_clear();
    if report.accepted != args.events {
        bail!("only {} of {} events were accepted", report.accepted, args.events);
    }

    // Every acked record ingested: the ingestion loop's committed offset reached the log's last offset.
    let log = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("log.db")).read_only(true))
        .await?;
    let ingested_at = loop {
        let (committed, last): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT committed_offset FROM consumer_offsets WHERE consumer = ?1), \
             (SELECT seq FROM sqlite_sequence WHERE name = 'log_records')",
        )
        .bind(hourglass_embedded::log::INGEST_CONSUMER)
        .fetch_one(&log)
        .await?;
        if committed.is_some() && committed >= last {
            break started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    log.close().await;

    // Every acked event counted in a rollup: ingestion and aggregation have caught up.
    let mut client = QueryServiceClient::new(tonic::transport::Endpoint::from_shared(target)?.connect().await?);
    let deadline = Instant::now() + Duration::from_secs(600);
    let counted_at = loop {
        let (counted, _) = counted_events(&mut client, &query_key, from, to).await?;
        if counted >= args.events {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("after 10 minutes only {counted} of {} events are counted", args.events);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cpu = process_cpu_seconds(pid)? - cpu_before;
    let peak_rss = peak_rss_kib(pid)?;
    super::terminate(&mut child, "standalone").await;
    let data_bytes: u64 =
        std::fs::read_dir(&data_dir)?.filter_map(|entry| entry.ok()?.metadata().ok()).map(|meta| meta.len()).sum();
    std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot remove {}", data_dir.display()))?;

    let measurement = Measurement {
        events: args.events,
        wall_seconds: counted_at,
        cpu_seconds: cpu,
        peak_rss_kib: Some(peak_rss),
        store_cpu_seconds: None,
    };
    Ok(StandaloneFigures {
        measurement,
        acked_seconds: acked_at,
        ingested_seconds: ingested_at,
        data_dir_bytes: data_bytes,
        client_cpu_seconds: client_cpu,
    })
}

fn print(args: &StandaloneBenchArgs, figures: &StandaloneFigures) {
    let StandaloneFigures {
        measurement,
        acked_seconds: acked_at,
        ingested_seconds: ingested_at,
        data_dir_bytes,
        client_cpu_seconds: client_cpu,
    } = figures;
    let (counted_at, cpu, peak_rss) =
        (measurement.wall_seconds, measurement.cpu_seconds, measurement.peak_rss_kib.unwrap_or_default());
    let data_bytes = *data_dir_bytes;
    let events = args.events as f64;
    println!(
        "standalone bench: {} events in {}-event batches ({} connections x {} streams, {} in flight each)",
        args.events, args.batch_size, args.connections, args.streams_per_connection, args.in_flight
    );
    println!(
        "  acked              {acked_at:.2} s = {:.0} events/s (each ack after the group commit's fsync)",
        events / acked_at
    );
    println!(
        "  all ingested       {ingested_at:.2} s after the first send = {:.0} events/s into the raw store",
        events / ingested_at
    );
    println!(
        "  all counted        {counted_at:.2} s after the first send = {:.0} events/s end to end",
        events / counted_at
    );
    println!(
        "                     ({:.2} s after the last ack: ingestion's lag, then a rollup once it is idle)",
        counted_at - acked_at
    );
    println!(
        "  standalone CPU     {cpu:.2} s = {:.2} CPU-s per million events ({:.0} events/s per core)",
        cpu / events * 1e6,
        events / cpu
    );
    println!("  standalone RSS     {:.1} MiB peak", peak_rss as f64 / 1024.0);
    println!(
        "  data directory     {:.0} MiB for {} events (log trimmed as ingested)",
        data_bytes as f64 / 1048576.0,
        args.events
    );
    println!("  load generator CPU {client_cpu:.2} s (same machine, not part of the figures above)");
}
