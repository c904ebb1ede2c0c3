//! `hourglass bench collector`: streams N events through a real collector process into Kafka and prints
//! events/s, the collector's CPU-seconds per million events, and its peak RSS.
//!
//! The collector runs as a child process (this same binary, `hourglass collector`) so its CPU and memory
//! are measured apart from the load generator's, from `/proc/<pid>`.

use std::net::TcpListener as StdTcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hourglass_collector::config::RecordLayout;
use hourglass_kafka::{KafkaConfig, admin};
use hourglass_postgres::PostgresConfig;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Measurement, peak_rss_kib, process_cpu_seconds, self_cpu_seconds, wait_until_serving};
use crate::loadgen::{self, EventSource, LoadPlan};

/// Flags of `hourglass bench collector`.
#[derive(clap::Args, Clone)]
pub struct CollectorBenchArgs {
    /// Events to send in the measured run.
    #[arg(long, default_value_t = 2_000_000)]
    pub(super) events: u64,
    /// Events sent first, unmeasured, so the producer is connected and the caches are warm.
    #[arg(long, default_value_t = 50_000)]
    pub(super) warmup_events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    pub(super) batch_size: usize,
    /// HTTP/2 connections to the collector.
    #[arg(long, default_value_t = 2)]
    pub(super) connections: usize,
    /// Streams per connection.
    #[arg(long, default_value_t = 2)]
    pub(super) streams_per_connection: usize,
    /// Unacknowledged batches per stream.
    #[arg(long, default_value_t = 32)]
    pub(super) in_flight: usize,
    /// One Kafka record per batch or per event.
    #[arg(long, value_enum, default_value_t = RecordLayout::Batch)]
    pub(super) record_layout: RecordLayout,
    /// Keep the benchmark's Kafka topic afterwards (it is deleted by default).
    #[arg(long)]
    pub(super) keep_topic: bool,
    #[command(flatten)]
    pub(super) kafka: KafkaConfig,
    #[command(flatten)]
    pub(super) postgres: PostgresConfig,
}

/// What the collector bench measured.
pub struct CollectorFigures {
    /// The collector process's events, wall time, CPU and peak RSS.
    pub measurement: Measurement,
    /// What the acks said.
    pub report: loadgen::LoadReport,
    /// The load generator's CPU-seconds (this process), apart from the figures.
    pub client_cpu_seconds: f64,
}

/// Runs the collector benchmark and prints what it measured.
pub async fn run(args: CollectorBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args, super::Bars::Shown).await?;
    print(&args, &figures);
    Ok(())
}

/// Streams the events through a collector process of its own and measures it; `bars` says whether its
/// progress bar is drawn (not under `bench all`).
pub async fn measure(args: &CollectorBenchArgs, bars: super::Bars) -> anyhow::Result<CollectorFigures> {
    let run_id = super::run_id();
    let topic = format!("hourglass.bench.{run_id}");

    let api_key = super::unthrottled_ingest_key(&args.postgres, &run_id).await?;

    let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let layout = layout_name(args.record_layout);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("collector")
        .env("HOURGLASS_COLLECTOR_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("HOURGLASS_KAFKA_BROKERS", &args.kafka.brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", &topic)
        .env("HOURGLASS_DATABASE_URL", &args.postgres.url)
        .env("HOURGLASS_RECORD_LAYOUT", layout)
        .env("HOURGLASS_READINESS_INTERVAL_MS", "200")
        .env("HOURGLASS_LOG", "warn")
        // A service logs to stdout, discarded here: its warnings go to the bench's stderr instead.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the collector")?;
    let collector_pid = child.id().context("collector exited at once")?;
    let target = format!("http://127.0.0.1:{port}");
    wait_until_serving(&target, Duration::from_secs(60)).await?;

    let plan = LoadPlan {
        target: target.clone(),
        api_key: api_key.expose_secret().to_owned(),
        source: EventSource::Generated { count: args.warmup_events, run_id: format!("{run_id}w") },
        batch_size: args.batch_size,
        connections: args.connections,
        streams_per_connection: args.streams_per_connection,
        in_flight_per_stream: args.in_flight,
        retry: false,
    };
    loadgen::run(&plan, &ProgressBar::hidden()).await.context("warm-up failed")?;

    let measured_plan =
        LoadPlan { source: EventSource::Generated { count: args.events, run_id: run_id.clone() }, ..plan };
    let progress = super::progress_bar(args.events, bars)
        .with_style(ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} events  {per_sec}  eta {eta}")?);
    let cpu_before = process_cpu_seconds(collector_pid)?;
    let client_cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let report = loadgen::run(&measured_plan, &progress).await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let collector_cpu = process_cpu_seconds(collector_pid)? - cpu_before;
    let client_cpu = self_cpu_seconds() - client_cpu_before;
    let peak_rss_kib = peak_rss_kib(collector_pid)?;
    progress.finish_and_clear();

    // Graceful shutdown also flushes the producer; it is part of what a deploy does.
    super::terminate(&mut child, "collector").await;
    if !args.keep_topic {
        let mut admin_config = args.kafka.clone();
        admin_config.events_topic = topic.clone();
        admin::delete_topics(&admin_config, &[&topic]).await?;
    }

    if report.accepted != args.events {
        bail!("only {} of {} events were accepted", report.accepted, args.events);
    }
    let measurement = Measurement {
        events: report.accepted,
        wall_seconds,
        cpu_seconds: collector_cpu,
        peak_rss_kib: Some(peak_rss_kib),
        store_cpu_seconds: None,
    };
    Ok(CollectorFigures { measurement, report, client_cpu_seconds: client_cpu })
}

fn layout_name(layout: RecordLayout) -> &'static str {
    match layout {
        RecordLayout::Batch => "batch",
        RecordLayout::Event => "event",
    }
}

fn print(args: &CollectorBenchArgs, figures: &CollectorFigures) {
    let CollectorFigures { measurement, report, client_cpu_seconds: client_cpu } = figures;
    let layout = layout_name(args.record_layout);
    let (wall_seconds, collector_cpu) = (measurement.wall_seconds, measurement.cpu_seconds);
    let peak_rss_kib = measurement.peak_rss_kib.unwrap_or_default();
    let events = report.accepted as f64;
    println!("collector bench: {} events in {}-event batches, record layout {layout}", args.events, args.batch_size);
    println!(
        "  streams            {} connections x {} streams, {} batches in flight each",
        args.connections, args.streams_per_connection, args.in_flight
    );
    println!("  average event      {:.0} bytes encoded", report.event_bytes as f64 / args.events.max(1) as f64);
    println!(
        "  acks               {} batches: {} events accepted, {} rejected, {} throttled, {} unavailable",
        report.batches,
        report.accepted,
        report.rejected(),
        report.throttled,
        report.unavailable
    );
    println!("  wall time          {wall_seconds:.2} s");
    println!("  throughput         {:.0} events/s", events / wall_seconds);
    println!(
        "  collector CPU      {collector_cpu:.2} s = {:.2} CPU-s per million events",
        collector_cpu / events * 1e6
    );
    println!("  per collector core {:.0} events/s", events / collector_cpu);
    println!("  collector peak RSS {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    println!("  load generator CPU {client_cpu:.2} s (same machine, not part of the figures above)");
}
