//! `hourglass bench all`: every floor and every stage, one after the other on the same servers, with
//! fixed seeds and sizes (~200-byte events in 100-event batches, 1k customers drawn with a Zipf law
//! where records carry a customer), then one table of stage against floor and issue 24's targets,
//! written also as `bench.json`, `bench.md` and `bench.svg` in `--out`.
//!
//! Each step prints one progress line. A step that fails is a row saying so, and the run goes on: an
//! hour of measurements is not thrown away for one server's hiccup; the command still exits non-zero.

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use hourglass_collector::config::RecordLayout;
use hourglass_cql::CqlConfig;
use hourglass_kafka::KafkaConfig;
use hourglass_postgres::PostgresConfig;

use super::report::{self, Check, Report, Row, thousands};
use super::{
    Bars, Measurement, aggregator, collector, floor_cql, floor_decode, floor_kafka, ingestor, outage, query, standalone,
};

/// Flags of `hourglass bench all`.
#[derive(clap::Args)]
pub struct AllBenchArgs {
    /// Multiplies every step's event count and duration: 1.0 takes 3 to 10 minutes on 2 cores, 0.1
    /// one or two (sizes, seeds and the report's 30 days stay fixed).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Where to write bench.json, bench.md and bench.svg (and standalone's temporary data directory).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The script running the Kafka tools and instances (`e2e/servers/kafka.sh`); by default found
    /// from the working directory.
    #[arg(long)]
    kafka_tools: Option<PathBuf>,
    /// Pid of the CQL server, to report its CPU; by default e2e/servers/cassandra.sh's instance `main`.
    #[arg(long)]
    store_pid: Option<u32>,
    /// The private broker the outage step starts, stops and destroys (never the shared one).
    #[arg(long, default_value_t = 19392)]
    outage_broker_port: u16,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// The steps, in order.
const STEPS: usize = 10;

/// One step's progress line: `[n/10] what … elapsed, rate`, begun before and ended after it runs.
struct Progress {
    step: usize,
    started: Instant,
}

impl Progress {
    fn begin(step: usize, what: &str) -> Self {
        eprint!("[{step}/{STEPS}] {what} … ");
        Self { step, started: Instant::now() }
    }

    fn end(self, outcome: &str) {
        eprintln!("{:.1} s, {outcome}", self.started.elapsed().as_secs_f64());
        debug_assert!(self.step <= STEPS);
    }
}

/// Runs a step, ending its progress line with `rate` of the result or the error; a failure becomes a
/// row naming the step.
async fn step<T>(
    number: usize,
    what: &str,
    failures: &mut Vec<Row>,
    work: impl Future<Output = anyhow::Result<T>>,
    rate: impl Fn(&T) -> String,
) -> Option<T> {
    let progress = Progress::begin(number, what);
    match work.await {
        Ok(value) => {
            progress.end(&rate(&value));
            Some(value)
        }
        Err(error) => {
            progress.end(&format!("FAILED: {error:#}"));
            failures.push(Row {
                name: format!("{what} (failed)"),
                notes: vec![format!("{error:#}").replace('|', "/")],
                ..Row::default()
            });
            None
        }
    }
}

fn events_per_second(measurement: &Measurement) -> String {
    format!("{} events/s", thousands(measurement.events_per_second()))
}

/// A row of a measured process: its rate, per-core rate and CPU per million events.
fn measured_row(name: &str, is_floor: bool, measurement: &Measurement) -> Row {
    Row {
        name: name.into(),
        is_floor,
        events_per_second: Some(measurement.events_per_second()),
        per_core_events_per_second: Some(measurement.per_core_events_per_second()),
        cpu_seconds_per_million: Some(measurement.cpu_seconds_per_million()),
        ..Row::default()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn store_note(what: &str, measurement: &Measurement) -> Option<String> {
    measurement.store_cpu_seconds_per_million().map(|cpu| format!("Cassandra {cpu:.1} CPU-s/M {what}"))
}

/// This machine, for the report: cores, memory and CPU model.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().find(|line| line.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or_else(String::new, |kib| format!(", {:.1} GiB", kib / 1024.0 / 1024.0));
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            Some(info.lines().find(|line| line.starts_with("model name"))?.split_once(':')?.1.trim().to_owned())
        })
        .map_or_else(String::new, |model| format!(", {model}"));
    format!("{cores} cores{memory_gib}{model}; Kafka, Cassandra, Postgres and the load generator on the same cores")
}

/// Runs every step and writes the report.
pub async fn run(args: AllBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.scale > 0.0, "--scale must be positive");
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let count = |events: f64| ((events * args.scale).round() as u64).max(1000);
    let seconds = |full: f64, least: u64| ((full * args.scale).round() as u64).max(least);
    let hidden = Bars::Hidden;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    eprintln!("hourglass bench all --scale {}: {STEPS} steps on {}", args.scale, args.kafka.brokers);

    let kafka_floor = floor_kafka::KafkaFloorArgs {
        events: count(2_000_000.0),
        batch_size: 100,
        kafka_tools: args.kafka_tools.clone(),
        kafka: args.kafka.clone(),
    };
    let what = format!(
        "floor: Kafka's ProducerPerformance and ConsumerPerformance, {} events",
        thousands(kafka_floor.events as f64)
    );
    if let Some(figures) = step(1, &what, &mut failures, floor_kafka::measure(&kafka_floor), |figures| {
        format!("produced {}, consumed {}", events_per_second(&figures.producer), events_per_second(&figures.consumer))
    })
    .await
    {
        let mut producer = measured_row("floor: kafka producer", true, &figures.producer);
        producer.notes = vec![
            format!("{} B records", thousands(figures.record_bytes as f64)),
            format!(
                "{:.1} MB/s, p99 {:.0} ms",
                figures.producer_summary.megabytes_per_second, figures.producer_summary.p99_latency_ms
            ),
            format!("JVM {:.1} CPU-s incl. start-up", figures.producer.cpu_seconds),
        ];
        let mut consumer = measured_row("floor: kafka consumer", true, &figures.consumer);
        consumer.notes = vec![
            format!("{:.1} MB/s fetching", figures.consumer_summary.fetch_megabytes_per_second),
            format!("JVM {:.1} CPU-s incl. start-up", figures.consumer.cpu_seconds),
        ];
        rows.extend([producer, consumer]);
    }

    let decode_floor = floor_decode::DecodeProduceFloorArgs {
        events: count(2_000_000.0),
        batch_size: 100,
        in_flight: 128,
        kafka: args.kafka.clone(),
    };
    let what = format!("floor: decode+produce, {} events", thousands(decode_floor.events as f64));
    if let Some(measurement) =
        step(2, &what, &mut failures, floor_decode::measure(&decode_floor, hidden), events_per_second).await
    {
        let mut row = measured_row("floor: decode+produce", true, &measurement);
        row.floor = Some("floor: kafka producer".into());
        rows.push(row);
    }

    let collector_args = collector::CollectorBenchArgs {
        events: count(2_000_000.0),
        warmup_events: count(50_000.0),
        batch_size: 100,
        connections: 2,
        streams_per_connection: 2,
        in_flight: 32,
        record_layout: RecordLayout::Batch,
        keep_topic: false,
        tracking_plan: None,
        plan_violation_rate: 0.0,
        plan_check_only: false,
        plan_pairs: 5,
        kafka: args.kafka.clone(),
        postgres: args.postgres.clone(),
    };
    let what = format!("collector, {} events", thousands(collector_args.events as f64));
    if let Some(figures) = step(3, &what, &mut failures, collector::measure(&collector_args, hidden), |figures| {
        events_per_second(&figures.measurement)
    })
    .await
    {
        let mut row = measured_row("collector", false, &figures.measurement);
        row.floor = Some("floor: decode+produce".into());
        let per_core = figures.measurement.per_core_events_per_second();
        row.checks = vec![Check::new("≥ 500,000/core", per_core >= 500_000.0)];
        row.notes = vec![format!("peak RSS {}", mib(figures.measurement.peak_rss_kib.unwrap_or_default()))];
        rows.push(row);
    }

    let plan_args = collector::CollectorBenchArgs {
        tracking_plan: Some(collector::TrackingPlanMode::Enforce),
        ..collector_args.clone()
    };
    let what = format!(
        "collector with a 20-type plan (enforce) and without, 5 pairs of runs of {} events",
        thousands(plan_args.events as f64)
    );
    let plan_step = collector::measure_with_plan(&plan_args, collector::TrackingPlanMode::Enforce, hidden);
    if let Some(figures) = step(4, &what, &mut failures, plan_step, |figures| {
        format!("the plan's share {:.1}% of the collector's CPU per event", figures.share() * 100.0)
    })
    .await
    {
        let without_name = "collector, the plan's events without a plan";
        let median = figures.median_pair();
        let without = measured_row(without_name, false, &median.without.measurement);
        let mut with = measured_row("collector with a 20-type plan (enforce)", false, &median.with.measurement);
        with.floor = Some(without_name.into());
        with.checks = vec![Check::new("plan < 10% of the collector's CPU/event", figures.share() < 0.10)];
        with.notes = vec![
            format!(
                "plan's share {:.1}%, median of {} pairs ({:.1}% to {:.1}%)",
                figures.share() * 100.0,
                figures.pairs.len(),
                figures.share_range().0 * 100.0,
                figures.share_range().1 * 100.0
            ),
            format!(
                "check alone {:.0} ns/event in process ({:.1}%)",
                figures.check.check_nanos_per_event,
                figures.check_share() * 100.0
            ),
            format!(
                "added to validation {:.0} ns/event in process ({:.1}%)",
                figures.check.plan_added_nanos_per_event(),
                figures.added_share() * 100.0
            ),
        ];
        rows.extend([without, with]);
    }

    let cql_floor = floor_cql::CqlFloorArgs {
        events: count(500_000.0),
        batch_size: 100,
        in_flight: 64,
        customers: crate::loadgen::BENCH_CUSTOMERS,
        store_pid: args.store_pid,
        cql: args.cql.clone(),
    };
    let what = format!("floor: CQL write and read, {} rows", thousands(cql_floor.events as f64));
    if let Some(figures) = step(5, &what, &mut failures, floor_cql::measure(&cql_floor, hidden), |figures| {
        format!("wrote {}, read {}", events_per_second(&figures.write), events_per_second(&figures.read))
    })
    .await
    {
        let mut write = measured_row("floor: cql write", true, &figures.write);
        write.notes = ["driver CPU".to_owned()].into_iter().chain(store_note("written", &figures.write)).collect();
        let mut read = measured_row("floor: cql read", true, &figures.read);
        read.notes = ["driver CPU".to_owned()].into_iter().chain(store_note("read", &figures.read)).collect();
        rows.extend([write, read]);
    }

    let ingestor_args = ingestor::IngestorBenchArgs {
        events: count(500_000.0),
        batch_size: 100,
        max_in_flight_records: 64,
        customers: crate::loadgen::BENCH_CUSTOMERS,
        store_pid: args.store_pid,
        flush_instance: None,
        without_outcomes: false,
        kafka: args.kafka.clone(),
        cql: args.cql.clone(),
        postgres: args.postgres.clone(),
    };
    let what = format!("ingestor, {} events of 1k customers (Zipf)", thousands(ingestor_args.events as f64));
    if let Some(figures) = step(6, &what, &mut failures, ingestor::measure(&ingestor_args, hidden), |figures| {
        events_per_second(&figures.measurement)
    })
    .await
    {
        let measurement = &figures.measurement;
        let mut row = measured_row("ingestor", false, measurement);
        row.floor = Some("floor: cql write".into());
        let store = measurement.store_cpu_seconds_per_million();
        row.checks = vec![
            Check::new("≥ 400,000/core", measurement.per_core_events_per_second() >= 400_000.0),
            Check::new("wall ≥ 150,000/s", measurement.events_per_second() >= 150_000.0),
            Check::new("Cassandra ≤ 5 CPU-s/M", store.is_some_and(|cpu| cpu <= 5.0)),
        ];
        row.notes = store_note("written", measurement)
            .into_iter()
            .chain([format!("peak RSS {}", mib(measurement.peak_rss_kib.unwrap_or_default()))])
            .collect();
        rows.push(row);
    }

    let aggregator_args = aggregator::AggregatorBenchArgs {
        events: count(500_000.0),
        store_pid: args.store_pid,
        flush_instance: None,
        bucket_concurrency: aggregator::default_bucket_concurrency(),
        cql: args.cql.clone(),
    };
    let what = format!("aggregator, one customer-hour of {} events", thousands(aggregator_args.events as f64));
    if let Some(figures) = step(7, &what, &mut failures, aggregator::measure(&aggregator_args, hidden), |figures| {
        events_per_second(&figures.measurement)
    })
    .await
    {
        let measurement = &figures.measurement;
        let mut row = measured_row("aggregator", false, measurement);
        row.floor = Some("floor: cql read".into());
        let minutes = figures.peak_hour_minutes();
        row.checks = vec![
            Check::new("wall ≥ 1,000,000/s", measurement.events_per_second() >= 1_000_000.0),
            Check::new("150M-event hour < 3 min", minutes < 3.0),
        ];
        row.notes =
            [format!("150M-event hour {minutes:.1} min")].into_iter().chain(store_note("read", measurement)).collect();
        rows.push(row);
    }

    let query_args = query::QueryBenchArgs {
        days: 30,
        event_types: 20,
        rate: 1000,
        seconds: seconds(5.0, 1),
        concurrency: 16,
        connections: 4,
        totals: false,
        no_cache: false,
        gzip: false,
        max_frame_size: 16_384,
        postgres: args.postgres.clone(),
        cql: args.cql.clone(),
    };
    // Per type, 1,000 req/s is past what this machine serves (the client alone decodes 543 KiB per
    // answer, ~150 req/s at most here): at 100 req/s the latency is the service's, not a queue's.
    let shapes = [(true, 1000), (false, 100)];
    let what =
        format!("query, 30-day report summed at 1,000 req/s and per type at 100 req/s, {} s each", query_args.seconds);
    if let Some(shapes) = step(8, &what, &mut failures, query::measure(&query_args, &shapes, hidden), |shapes| {
        shapes.iter().map(|shape| format!("p99 {:.1} ms", shape.fixed.p99_ms)).collect::<Vec<_>>().join(" and ")
    })
    .await
    {
        for shape in shapes {
            let mut row =
                Row { name: format!("query, {}", if shape.summed { "summed" } else { "per type" }), ..Row::default() };
            row.checks = if shape.summed {
                vec![Check::new("p99 < 5 ms at 1k req/s", shape.fixed.p99_ms < 5.0 && shape.fixed_failures == 0)]
            } else {
                vec![Check::new("≤ 0.3 ms service CPU/request", shape.fixed_cpu_ms_per_request <= 0.3)]
            };
            row.notes = vec![
                format!(
                    "at {} req/s: p50 {:.2} ms, p99 {:.2} ms, achieved {:.0} req/s, {} failed",
                    shape.rate, shape.fixed.p50_ms, shape.fixed.p99_ms, shape.fixed_achieved_rate, shape.fixed_failures
                ),
                format!("service CPU {:.2} ms/request", shape.fixed_cpu_ms_per_request),
                format!("{} rows, {:.0} KiB", shape.rows, shape.response_bytes as f64 / 1024.0),
                format!("max {:.0} req/s", shape.max_rate),
            ];
            rows.push(row);
        }
    }

    let standalone_args = standalone::StandaloneBenchArgs {
        events: count(1_000_000.0),
        batch_size: 100,
        connections: 2,
        streams_per_connection: 2,
        in_flight: 32,
        data_dir_parent: args.out.join("standalone-data"),
    };
    let what = format!("standalone end to end, {} events", thousands(standalone_args.events as f64));
    if let Some(figures) = step(9, &what, &mut failures, standalone::measure(&standalone_args, hidden), |figures| {
        events_per_second(&figures.measurement)
    })
    .await
    {
        let measurement = &figures.measurement;
        let mut row = measured_row("standalone", false, measurement);
        let bytes_per_event = figures.data_dir_bytes as f64 / measurement.events.max(1) as f64;
        row.checks = vec![
            Check::new("end to end ≥ 150,000/s", measurement.events_per_second() >= 150_000.0),
            Check::new("data dir ≤ 120 B/event", bytes_per_event <= 120.0),
        ];
        row.notes = vec![
            format!("acked {} events/s", thousands(measurement.events as f64 / figures.acked_seconds)),
            format!("data dir {bytes_per_event:.0} B/event"),
            format!("peak RSS {}", mib(measurement.peak_rss_kib.unwrap_or_default())),
        ];
        rows.push(row);
    }

    let outage_args = outage::OutageBenchArgs {
        load_secs: seconds(10.0, 3),
        outage_secs: seconds(30.0, 8),
        max_in_flight_bytes: 64 * 1024 * 1024,
        broker_name: "bench-outage".into(),
        broker_port: args.outage_broker_port,
        kafka_tools: args.kafka_tools.clone(),
        postgres: args.postgres.clone(),
    };
    let what = format!(
        "collector under 2× load, private broker stopped after {} s for {} s",
        outage_args.load_secs, outage_args.outage_secs
    );
    if let Some(figures) = step(10, &what, &mut failures, outage::measure(&outage_args), |figures| {
        format!("peak RSS {} (bound {})", mib(figures.peak_rss_kib), mib(figures.bound_kib))
    })
    .await
    {
        rows.push(Row {
            name: "collector, broker stopped".into(),
            checks: vec![Check::new("peak RSS ≤ idle + --max-in-flight-bytes + producer queue", figures.bounded())],
            notes: vec![
                format!("peak RSS {} (bound {})", mib(figures.peak_rss_kib), mib(figures.bound_kib)),
                format!("{} before the stop", mib(figures.peak_rss_before_kib)),
                format!("--max-in-flight-bytes {}", mib(outage_args.max_in_flight_bytes / 1024)),
            ],
            ..Row::default()
        });
    }

    let failed = failures.len();
    rows.extend(failures);
    report::fill_ratios(&mut rows);
    let report = Report {
        machine: machine(),
        scale: args.scale,
        started_at,
        wall_seconds: started.elapsed().as_secs_f64(),
        rows,
    };
    let table = report::render_table(&report);
    std::fs::write(args.out.join("bench.md"), &table)?;
    std::fs::write(args.out.join("bench.json"), serde_json::to_string_pretty(&report::to_json(&report))?)?;
    std::fs::write(args.out.join("bench.svg"), report::render_svg(&report))?;
    println!("hourglass bench all --scale {} ({:.0} s; {})\n", args.scale, report.wall_seconds, report.machine);
    print!("{table}");
    println!("\nwritten: {0}/bench.md, {0}/bench.json, {0}/bench.svg", args.out.display());
    anyhow::ensure!(failed == 0, "{failed} of {STEPS} steps failed (their rows say why)");
    Ok(())
}
