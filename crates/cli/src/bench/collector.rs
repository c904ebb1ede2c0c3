//! `hourglass bench collector`: streams N events through a real collector process into Kafka and prints
//! events/s, the collector's CPU-seconds per million events, and its peak RSS.
//!
//! The collector runs as a child process (this same binary, `hourglass collector`) so its CPU and memory
//! are measured apart from the load generator's, from `/proc/<pid>`.
//!
//! With `--tracking-plan MODE` it measures what a tracking plan costs: the events are the bench plan's
//! (`tracking_plan.rs`), sent with the same numbers to a collector of their own each time, for a customer
//! without a plan and for one with the plan pushed in that mode, in `--plan-pairs` pairs of runs. A pair's
//! share is the difference in the collector's CPU per event over its CPU per event with the plan; the
//! plan's share is the median pair's. Pairs alternate which run goes first, and the median is taken,
//! because on the shared cores the collector's CPU per event moves by ±20% from one run to the next with
//! no plan at all (the load generator and the broker beside it): one pair alone says little.
//! `CompiledPlan::check` alone, and what the plan adds to the validation of an event (the collector
//! checks the plan in validation's walk over the properties), are measured in this process too, on the
//! same events, where that noise does not reach them.

use std::net::TcpListener as StdTcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hourglass_collector::config::RecordLayout;
use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::store::PlanStore;
use hourglass_core::tracking_plan::{PlanDocument, PlanMode};
use hourglass_kafka::{KafkaConfig, admin};
use hourglass_postgres::{PostgresConfig, PostgresPlanStore};
use indicatif::{ProgressBar, ProgressStyle};

use super::tracking_plan::{self, CheckFigures};
use super::{Measurement, peak_rss_kib, process_cpu_seconds, self_cpu_seconds, wait_until_serving};
use crate::loadgen::{self, EventSource, LoadPlan};

/// The mode of the tracking plan a collector bench pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrackingPlanMode {
    /// The plan is stored but not applied (the collector still looks it up).
    Off,
    /// Violations are counted, every event accepted.
    Warn,
    /// Violating events are rejected.
    Enforce,
}

impl TrackingPlanMode {
    fn plan_mode(self) -> PlanMode {
        match self {
            TrackingPlanMode::Off => PlanMode::Off,
            TrackingPlanMode::Warn => PlanMode::Warn,
            TrackingPlanMode::Enforce => PlanMode::Enforce,
        }
    }
}

/// Events checked per pass, and passes, of the in-process measure of `CompiledPlan::check`: five
/// thousand of each of the plan's types, each pass a few tens of milliseconds.
const CHECK_EVENTS: usize = 100_000;
const CHECK_PASSES: usize = 21;

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
    /// Measure a tracking plan's cost: the bench's 20-type plan (docs/tracking-plans/bench-20-types.json)
    /// in this mode. The events are then the plan's, sent twice with the same numbers: for a customer
    /// without a plan, then for one with the plan; and `CompiledPlan::check` alone is measured in this
    /// process on the same events. Without it: one run of the plain generated events, no plan.
    #[arg(long, value_enum)]
    pub(super) tracking_plan: Option<TrackingPlanMode>,
    /// With --tracking-plan: the fraction of events breaking one of the plan's rules (each rule in
    /// turn); in enforce mode exactly these are rejected.
    #[arg(long, default_value_t = 0.0, requires = "tracking_plan")]
    pub(super) plan_violation_rate: f64,
    /// With --tracking-plan: only the in-process measure of `CompiledPlan::check` (no servers).
    #[arg(long, requires = "tracking_plan")]
    pub(super) plan_check_only: bool,
    /// With --tracking-plan: pairs of runs without and with the plan (each pair in the other order than
    /// the last); the plan's share is the median pair's.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), requires = "tracking_plan")]
    pub(super) plan_pairs: u32,
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

/// One run without the plan and one with it, on the same events.
pub struct PlanPair {
    /// The run for a customer without a plan.
    pub without: CollectorFigures,
    /// The run for a customer with the plan.
    pub with: CollectorFigures,
    /// Whether the run with the plan went first.
    pub with_first: bool,
}

impl PlanPair {
    /// The plan's share of the collector's CPU per event in this pair: the difference between the runs
    /// over the run with the plan.
    pub fn share(&self) -> f64 {
        let with = self.with.measurement.cpu_seconds_per_million();
        (with - self.without.measurement.cpu_seconds_per_million()) / with.max(f64::MIN_POSITIVE)
    }
}

/// What the collector bench measured of a tracking plan: the same events without and with it.
pub struct PlanFigures {
    /// The plan's mode.
    pub mode: TrackingPlanMode,
    /// Events in a million that broke the plan.
    pub violations_per_million: u32,
    /// The pairs of runs, in the order run (at least one).
    pub pairs: Vec<PlanPair>,
    /// `CompiledPlan::check` alone, in this process.
    pub check: CheckFigures,
}

impl PlanFigures {
    /// The pair whose share is the median (the lower of the middle two for an even count): the runs the
    /// figures quote.
    pub fn median_pair(&self) -> &PlanPair {
        let mut pairs: Vec<&PlanPair> = self.pairs.iter().collect();
        pairs.sort_by(|left, right| left.share().total_cmp(&right.share()));
        pairs[(pairs.len() - 1) / 2]
    }

    /// The plan's share of the collector's CPU per event: the median pair's.
    pub fn share(&self) -> f64 {
        self.median_pair().share()
    }

    /// The lowest and highest pair's share.
    pub fn share_range(&self) -> (f64, f64) {
        let shares = self.pairs.iter().map(PlanPair::share);
        (shares.clone().fold(f64::INFINITY, f64::min), shares.fold(f64::NEG_INFINITY, f64::max))
    }

    /// The collector's CPU per event with the plan, in nanoseconds: the median pair's.
    fn collector_nanos_with_plan(&self) -> f64 {
        self.median_pair().with.measurement.cpu_seconds_per_million() * 1e3
    }

    /// The check's own CPU per event measured in process over the collector's CPU per event with the
    /// plan: the share without the runs' noise.
    pub fn check_share(&self) -> f64 {
        self.check.check_nanos_per_event / self.collector_nanos_with_plan().max(f64::MIN_POSITIVE)
    }

    /// What the plan adds to validation, measured in process, over the collector's CPU per event with
    /// the plan: the plan's share in the collector's path without the runs' noise.
    pub fn added_share(&self) -> f64 {
        self.check.plan_added_nanos_per_event() / self.collector_nanos_with_plan().max(f64::MIN_POSITIVE)
    }
}

/// Runs the collector benchmark and prints what it measured.
pub async fn run(args: CollectorBenchArgs) -> anyhow::Result<()> {
    let Some(mode) = args.tracking_plan else {
        let figures = measure(&args, super::Bars::Shown).await?;
        print(&args, &figures);
        return Ok(());
    };
    if args.plan_check_only {
        let violations = tracking_plan::violations_per_million(args.plan_violation_rate)?;
        let check = tracking_plan::measure_check(mode.plan_mode(), CHECK_EVENTS, CHECK_PASSES, violations)?;
        print_check(mode, &check);
        return Ok(());
    }
    let figures = measure_with_plan(&args, mode, super::Bars::Shown).await?;
    let median = figures.median_pair();
    println!("the median pair's run without a plan (customer of its own, the plan's events):");
    print(&args, &median.without);
    println!("the median pair's run with the 20-type plan in {} mode:", mode.plan_mode().as_str());
    print(&args, &median.with);
    print_plan(&figures);
    Ok(())
}

/// What a run sends, and to which customer with which plan.
struct RunSetup {
    /// `None`: the customer `bench`, no plan pushed; else a customer of its own.
    customer: Option<String>,
    /// The plan pushed for that customer before the collector starts.
    plan: Option<PlanDocument>,
    /// `None`: the plain generated events; else the plan's, this many in a million violating.
    planned_violations_per_million: Option<u32>,
}

/// Streams the events through a collector process of its own and measures it; `bars` says whether its
/// progress bar is drawn (not under `bench all`).
pub async fn measure(args: &CollectorBenchArgs, bars: super::Bars) -> anyhow::Result<CollectorFigures> {
    let plain = RunSetup { customer: None, plan: None, planned_violations_per_million: None };
    measure_run(args, bars, &plain).await
}

/// `--plan-pairs` pairs of a run without a plan and a run with the plan in `mode`, on the same events,
/// alternating which goes first, then the check alone in this process.
pub async fn measure_with_plan(
    args: &CollectorBenchArgs,
    mode: TrackingPlanMode,
    bars: super::Bars,
) -> anyhow::Result<PlanFigures> {
    let violations_per_million = tracking_plan::violations_per_million(args.plan_violation_rate)?;
    let plan = tracking_plan::plan_document(mode.plan_mode())?;
    // Customers of their own: no other bench or test has (or pushes) a plan for them.
    let prefix = super::run_id();
    let without_plan = RunSetup {
        customer: Some(format!("{prefix}-noplan")),
        plan: None,
        planned_violations_per_million: Some(violations_per_million),
    };
    let with_plan = RunSetup {
        customer: Some(format!("{prefix}-plan")),
        plan: Some(plan),
        planned_violations_per_million: Some(violations_per_million),
    };
    let mut pairs = Vec::new();
    for pair in 0..args.plan_pairs.max(1) {
        let with_first = pair % 2 == 1;
        let mut order = [(&without_plan, "without a plan"), (&with_plan, "with the plan")];
        if with_first {
            order.reverse();
        }
        let mut runs = Vec::with_capacity(2);
        for (setup, what) in order {
            let figures = measure_run(args, bars, setup).await;
            runs.push(figures.with_context(|| format!("pair {}: the run {what} failed", pair + 1))?);
        }
        let (second, first) = (runs.pop().expect("two runs"), runs.pop().expect("two runs"));
        let (without, with) = if with_first { (second, first) } else { (first, second) };
        pairs.push(PlanPair { without, with, with_first });
    }
    let check = tokio::task::spawn_blocking(move || {
        tracking_plan::measure_check(mode.plan_mode(), CHECK_EVENTS, CHECK_PASSES, violations_per_million)
    })
    .await??;
    Ok(PlanFigures { mode, violations_per_million, pairs, check })
}

async fn measure_run(
    args: &CollectorBenchArgs,
    bars: super::Bars,
    setup: &RunSetup,
) -> anyhow::Result<CollectorFigures> {
    let run_id = super::run_id();
    let topic = format!("hourglass.bench.{run_id}");

    let api_key = match &setup.customer {
        None => super::unthrottled_ingest_key(&args.postgres, &run_id).await?,
        Some(customer) => super::unthrottled_ingest_key_of(&args.postgres, customer, &run_id).await?,
    };
    if let (Some(customer), Some(plan)) = (&setup.customer, &setup.plan) {
        let plans = PostgresPlanStore::new(args.postgres.open().await?);
        plans.push_plan(&CustomerId::new(customer)?, plan).await.context("failed to push the bench's plan")?;
    }
    let source = |count: u64, run_id: String| match setup.planned_violations_per_million {
        None => EventSource::Generated { count, run_id },
        Some(violations_per_million) => EventSource::Planned { count, run_id, violations_per_million },
    };

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
        source: source(args.warmup_events, format!("{run_id}w")),
        batch_size: args.batch_size,
        connections: args.connections,
        streams_per_connection: args.streams_per_connection,
        in_flight_per_stream: args.in_flight,
        retry: false,
    };
    loadgen::run(&plan, &ProgressBar::hidden()).await.context("warm-up failed")?;

    let measured_plan = LoadPlan { source: source(args.events, run_id.clone()), ..plan };
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

    // Only enforce mode rejects, and exactly the events the generator made violate.
    let expected_rejected = match (&setup.plan, setup.planned_violations_per_million) {
        (Some(plan), Some(violations)) if plan.mode == PlanMode::Enforce => (0..args.events)
            .filter(|number| tracking_plan::planned_violation(*number, violations).is_some())
            .count() as u64,
        _ => 0,
    };
    if report.accepted != args.events - expected_rejected || report.rejected() != expected_rejected {
        bail!(
            "{} of {} events were accepted and {} rejected ({:?}), {expected_rejected} rejections expected",
            report.accepted,
            args.events,
            report.rejected(),
            report.rejected_by_reason
        );
    }
    let measurement = Measurement {
        events: report.accepted + report.rejected(),
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
    let events = (report.accepted + report.rejected()) as f64;
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

fn print_check(mode: TrackingPlanMode, check: &CheckFigures) {
    println!(
        "CompiledPlan::check in this process, plan in {} mode: median of {} passes over {} of the bench's events \
         ({} violating)",
        mode.plan_mode().as_str(),
        check.passes,
        check.events,
        check.violations
    );
    println!(
        "  check              {:.0} ns of CPU per event, of which {:.0} ns reading the properties from the event's bytes",
        check.check_nanos_per_event, check.read_nanos_per_event
    );
    println!(
        "  validation         {:.0} ns of CPU per event without the plan, {:.0} with it checked in the same walk \
         (the collector's path): the plan adds {:.0} ns",
        check.validate_nanos_per_event,
        check.validate_with_plan_nanos_per_event,
        check.plan_added_nanos_per_event()
    );
}

fn print_plan(figures: &PlanFigures) {
    println!(
        "tracking plan: 20 types in {} mode, {:.2}% of events violating, {} pairs of runs",
        figures.mode.plan_mode().as_str(),
        f64::from(figures.violations_per_million) / 1e4,
        figures.pairs.len()
    );
    for (number, pair) in figures.pairs.iter().enumerate() {
        let (without, with) = (&pair.without.measurement, &pair.with.measurement);
        println!(
            "  pair {}{}  {:.2} CPU-s per million events without the plan, {:.2} with it ({:+.0} ns per event, \
             share {:.1}%)",
            number + 1,
            if pair.with_first { " (with first)" } else { "             " },
            without.cpu_seconds_per_million(),
            with.cpu_seconds_per_million(),
            (with.cpu_seconds_per_million() - without.cpu_seconds_per_million()) * 1e3,
            pair.share() * 100.0
        );
    }
    let median = figures.median_pair();
    println!(
        "  throughput         {:.0} events/s without, {:.0} with (the median pair)",
        median.without.measurement.events_per_second(),
        median.with.measurement.events_per_second()
    );
    let (lowest, highest) = figures.share_range();
    println!(
        "  plan's share       {:.1}% of the collector's CPU per event with the plan, the median pair's \
         (pairs {:.1}% to {:.1}%; target < 10%)",
        figures.share() * 100.0,
        lowest * 100.0,
        highest * 100.0
    );
    print_check(figures.mode, &figures.check);
    println!(
        "  check's share      {:.1}% of the collector's CPU per event with the plan (measured apart, no noise)",
        figures.check_share() * 100.0
    );
    println!(
        "  added share        {:.1}%: what the plan adds to validation, measured apart, over the same",
        figures.added_share() * 100.0
    );
}
