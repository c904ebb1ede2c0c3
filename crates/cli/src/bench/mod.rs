//! `hourglass bench`: benchmarks that run a stage as a child process against the real servers and
//! print events/s and CPU per event, measured from `/proc` apart from the load generator's.

mod aggregator;
mod collector;
mod ingestor;
mod query;
mod standalone;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Flags of `hourglass bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(clap::Subcommand)]
enum BenchTarget {
    /// The collector: gRPC IngestStream → Kafka (acks=all).
    Collector(Box<collector::CollectorBenchArgs>),
    /// The ingestor: Kafka → the CQL raw store, dirty hours, offset commits.
    Ingestor(Box<ingestor::IngestorBenchArgs>),
    /// The aggregator: one customer-hour of raw events rolled up.
    Aggregator(Box<aggregator::AggregatorBenchArgs>),
    /// The query service: a 30-day hourly report under concurrent clients, p50/p99 latency and req/s.
    Query(Box<query::QueryBenchArgs>),
    /// Standalone: sustained ingest into one process, until every event is counted in the rollups.
    Standalone(Box<standalone::StandaloneBenchArgs>),
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        BenchTarget::Collector(args) => collector::run(*args).await,
        BenchTarget::Ingestor(args) => ingestor::run(*args).await,
        BenchTarget::Aggregator(args) => aggregator::run(*args).await,
        BenchTarget::Query(args) => query::run(*args).await,
        BenchTarget::Standalone(args) => standalone::run(*args).await,
    }
}

/// Waits until the gRPC server at `target` reports SERVING.
async fn wait_until_serving(target: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(target.to_owned())?.connect().await {
            let mut client = HealthClient::new(channel);
            let request = HealthCheckRequest { service: String::new() };
            if let Ok(response) = client.check(request).await
                && response.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server at {target} was not SERVING after {timeout:?} (are its backends running? e2e/servers/start-all.sh)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
    let after_name = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn self_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).context("no VmHWM in /proc status")?;
    Ok(line.split_whitespace().nth(1).context("malformed VmHWM")?.parse()?)
}

/// The pid of e2e/servers/cassandra.sh's instance `main`, if it runs here.
fn cassandra_main_pid() -> Option<u32> {
    let cache = std::env::var("HOURGLASS_CACHE_DIR")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|home| format!("{home}/.cache/hourglass")))?;
    std::fs::read_to_string(format!("{cache}/cassandra-instances/main/cassandra.pid")).ok()?.trim().parse().ok()
}

/// Sends SIGTERM to a child and waits for it, warning if it does not exit cleanly.
async fn terminate(child: &mut tokio::process::Child, what: &str) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    if !matches!(exit, Ok(Ok(status)) if status.success()) {
        eprintln!("warning: the {what} did not exit cleanly after SIGTERM: {exit:?}");
    }
}
