//! `hourglass send` (alias `loadgen`): streams generated events, or events from a JSON-lines file, to any
//! collector (distributed or standalone) over `IngestStream`, many batches in flight, with a progress bar
//! and a summary. Throttled and unavailable batches are resent after their retry-after with the same
//! event ids, so every event is acknowledged once the command succeeds.
//!
//! A line of the file is one event; only `event_type` is required:
//! `{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false}}`
//! (`hourglass_core::json_event` parses it: camelCase names, as protobuf's JSON mapping writes them, are
//! accepted too). A missing `event_id` gets a fresh UUIDv7; a missing `occurred_at` is now.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hourglass_core::json_event;
use hourglass_proto::v1::Event;
use indicatif::{ProgressBar, ProgressStyle};

use crate::loadgen::{self, EventSource, LoadPlan};

/// Flags of `hourglass send`.
#[derive(clap::Args)]
pub struct SendArgs {
    /// The collector's (or standalone's) gRPC address.
    #[arg(long, env = "HOURGLASS_TARGET", default_value = "http://127.0.0.1:50051", hide_env_values = true)]
    target: String,
    /// An ingest API key (`hgk_…`).
    #[arg(long, env = "HOURGLASS_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Generate this many events (20 event types, 100k users, the current time).
    #[arg(long, default_value_t = 10_000, conflicts_with = "file")]
    events: u64,
    /// Send the events of this JSON-lines file instead (`-` reads standard input).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Streams per connection.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Unacknowledged batches per stream.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Report throttled and unavailable batches instead of resending them.
    #[arg(long)]
    no_retry: bool,
}

fn read_events(path: &PathBuf) -> anyhow::Result<Vec<Event>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(json_event::parse_line(&line).with_context(|| format!("{} line {}", path.display(), index + 1))?);
    }
    Ok(events)
}

/// Sends the events and prints the summary; fails unless every event was acknowledged.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let source = match &args.file {
        Some(path) => EventSource::Given(Arc::new(read_events(path)?)),
        None => EventSource::Generated {
            count: args.events,
            run_id: format!("send-{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()),
        },
    };
    let total = source.len();
    let plan = LoadPlan {
        target: args.target.clone(),
        api_key: args.api_key.clone(),
        source,
        batch_size: args.batch_size,
        connections: args.connections,
        streams_per_connection: args.streams,
        in_flight_per_stream: args.in_flight,
        retry: !args.no_retry,
    };
    let progress = ProgressBar::new(total).with_style(ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} events acked  {per_sec}  eta {eta}",
    )?);
    let started = Instant::now();
    let report = loadgen::run(&plan, &progress).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let acked = report.accepted + report.rejected();
    println!("sent {total} events to {} in {seconds:.2} s ({:.0} events/s)", args.target, acked as f64 / seconds);
    println!("  accepted   {}", report.accepted);
    println!("  rejected   {}", report.rejected());
    for (reason, count) in &report.rejected_by_reason {
        println!("    {reason:<24} {count}");
    }
    println!(
        "  throttled  {} (events in throttled acks{})",
        report.throttled,
        if plan.retry { ", all resent" } else { ", not resent" }
    );
    println!(
        "  unavailable {} (events in unavailable acks{})",
        report.unavailable,
        if plan.retry { ", all resent" } else { "" }
    );
    if report.invalid > 0 {
        println!("  invalid    {} (batches refused whole: see the warnings above)", report.invalid);
    }
    println!("  batches    {} acks, {} resent", report.batches, report.resent_batches);
    if plan.retry && acked + report.invalid != total {
        bail!("{} of {total} events were not acknowledged", total - acked - report.invalid);
    }
    Ok(())
}
