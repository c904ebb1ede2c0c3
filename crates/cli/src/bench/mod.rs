//! `hourglass bench`: benchmarks that run a stage as a child process against the real servers and
//! print events/s and CPU per event, measured from `/proc` apart from the load generator's.
//!
//! Each stage bench has a `measure` function returning what it found and a `run` that prints it;
//! `bench all` (`all.rs`) calls the `measure` functions of every stage and of the floors each is
//! compared with (`floor_*.rs`), and renders one table, JSON and SVG chart (`report.rs`).

mod aggregator;
mod all;
mod collector;
mod floor_cql;
mod floor_decode;
mod floor_kafka;
mod ingestor;
mod outage;
mod query;
mod report;
mod standalone;
pub(crate) mod tracking_plan;

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
    /// A floor a stage is compared with: the Kafka tools, decode+produce, or CQL writes and reads.
    Floor(Box<FloorArgs>),
    /// The collector's peak RSS while its (private) Kafka broker is stopped under twice the load.
    Outage(Box<outage::OutageBenchArgs>),
    /// Every floor and every stage on the same servers: one table, plus JSON and an SVG chart.
    All(Box<all::AllBenchArgs>),
}

/// Flags of `hourglass bench floor`.
#[derive(clap::Args)]
struct FloorArgs {
    #[command(subcommand)]
    kind: FloorKind,
}

#[derive(clap::Subcommand)]
enum FloorKind {
    /// The Kafka distribution's ProducerPerformance and ConsumerPerformance, with the collector's
    /// record size and producer settings.
    Kafka(Box<floor_kafka::KafkaFloorArgs>),
    /// Protobuf-decode the collector's batches and produce the same bytes, no other logic.
    DecodeProduce(Box<floor_decode::DecodeProduceFloorArgs>),
    /// Prepared unlogged single-partition CQL batches of a record's rows, and a read of them back.
    Cql(Box<floor_cql::CqlFloorArgs>),
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        BenchTarget::Collector(args) => collector::run(*args).await,
        BenchTarget::Ingestor(args) => ingestor::run(*args).await,
        BenchTarget::Aggregator(args) => aggregator::run(*args).await,
        BenchTarget::Query(args) => query::run(*args).await,
        BenchTarget::Standalone(args) => standalone::run(*args).await,
        BenchTarget::Floor(floor) => match floor.kind {
            FloorKind::Kafka(args) => floor_kafka::run(*args).await,
            FloorKind::DecodeProduce(args) => floor_decode::run(*args).await,
            FloorKind::Cql(args) => floor_cql::run(*args).await,
        },
        BenchTarget::Outage(args) => outage::run(*args).await,
        BenchTarget::All(args) => all::run(*args).await,
    }
}

/// What a bench measured of the process it is about: events through it, the wall time, that
/// process's CPU, and the CQL server's CPU over the same interval when it matters. Each bench prints
/// more; `bench all` tabulates these.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurement {
    /// Events through the measured process.
    pub events: u64,
    /// Wall seconds of the measured run.
    pub wall_seconds: f64,
    /// User + system CPU-seconds of the measured process over the run.
    pub cpu_seconds: f64,
    /// Peak resident set size of the measured process, in KiB, when it was a process of its own.
    pub peak_rss_kib: Option<u64>,
    /// CPU-seconds the CQL server spent over the run, when it was measured.
    pub store_cpu_seconds: Option<f64>,
}

impl Measurement {
    /// Events per wall second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall_seconds.max(f64::MIN_POSITIVE)
    }

    /// Events per CPU-second of the measured process: its rate on one core of its own.
    pub fn per_core_events_per_second(&self) -> f64 {
        self.events as f64 / self.cpu_seconds.max(f64::MIN_POSITIVE)
    }

    /// CPU-seconds of the measured process per million events.
    pub fn cpu_seconds_per_million(&self) -> f64 {
        self.cpu_seconds / (self.events.max(1) as f64) * 1e6
    }

    /// CPU-seconds of the CQL server per million events, when measured.
    pub fn store_cpu_seconds_per_million(&self) -> Option<f64> {
        self.store_cpu_seconds.map(|cpu| cpu / (self.events.max(1) as f64) * 1e6)
    }
}

/// A run's unique suffix for topics, keyspaces and customers: the Unix time in milliseconds, so the
/// steps of one `bench all` (seconds apart) never share a name.
fn run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("bench{}", now.as_millis())
}

/// Finds `e2e/servers/kafka.sh`: the path given, else in the working directory or one of its
/// parents, else in the source tree this binary was built from.
fn kafka_script(given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    server_script("e2e/servers/kafka.sh", given)
}

/// Finds a script of `e2e/servers` as [`kafka_script`] does.
fn server_script(script: &str, given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = given {
        anyhow::ensure!(path.is_file(), "--kafka-tools {}: no such file", path.display());
        return Ok(path.to_owned());
    }
    let from_working_directory = std::env::current_dir()
        .ok()
        .into_iter()
        .flat_map(|dir| dir.ancestors().map(|a| a.join(script)).collect::<Vec<_>>());
    let from_source_tree = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(script);
    from_working_directory.chain([from_source_tree]).find(|path| path.is_file()).with_context(|| {
        format!("cannot find {script} in the working directory or its parents: run from the repository or pass --kafka-tools PATH")
    })
}

/// Runs a program to its end, returning its exit status, stdout, stderr and the CPU-seconds it (and
/// the children it waited for) used, from wait4(2)'s resource usage: exact, unlike sampling /proc
/// before the process is gone.
fn run_measured(mut command: std::process::Command) -> anyhow::Result<(std::process::ExitStatus, String, String, f64)> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    let mut stdout_pipe = child.stdout.take().context("no stdout")?;
    let mut stderr_pipe = child.stderr.take().context("no stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).map(|_| text)
    });
    let mut stdout = String::new();
    stdout_pipe.read_to_string(&mut stdout)?;
    let stderr = stderr_reader.join().map_err(|_| anyhow::anyhow!("stderr reader panicked"))??;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which std has not reaped (we never called wait on it).
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    anyhow::ensure!(waited > 0, "wait4 failed: {}", std::io::Error::last_os_error());
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    Ok((std::process::ExitStatus::from_raw(status), stdout, stderr, cpu))
}

/// An ingest key of the customer `bench` (named `run_id`), whose quota no benchmark reaches: a collector
/// bench measures the collector, not its throttling. Migrates Postgres first.
async fn unthrottled_ingest_key(
    postgres: &hourglass_postgres::PostgresConfig,
    run_id: &str,
) -> anyhow::Result<hourglass_core::api_key::ApiKey> {
    unthrottled_ingest_key_of(postgres, "bench", run_id).await
}

/// An unthrottled ingest key, as [`unthrottled_ingest_key`], of the customer `customer`.
async fn unthrottled_ingest_key_of(
    postgres: &hourglass_postgres::PostgresConfig,
    customer: &str,
    run_id: &str,
) -> anyhow::Result<hourglass_core::api_key::ApiKey> {
    use hourglass_core::key_store::{CustomerLimits, KeyStore};
    let pool = postgres.connect_lazy()?;
    hourglass_postgres::migrate::run(&pool)
        .await
        .context("failed to migrate postgres (is it running? e2e/servers/postgres.sh start)")?;
    let key_store = hourglass_postgres::PostgresKeyStore::new(pool);
    let customer = hourglass_core::customer::CustomerId::new(customer)?;
    let api_key = key_store.create_key(&customer, hourglass_core::api_key::Scope::Ingest, run_id).await?;
    let unlimited = CustomerLimits {
        events_per_second: Some(i32::MAX as u32),
        burst_events: Some(i32::MAX as u32),
        ..Default::default()
    };
    key_store.set_customer_limits(&customer, unlimited).await?;
    Ok(api_key)
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
    cassandra_pid("main")
}

/// The pid of e2e/servers/cassandra.sh's instance `instance`, if it runs here.
fn cassandra_pid(instance: &str) -> Option<u32> {
    let cache = std::env::var("HOURGLASS_CACHE_DIR")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|home| format!("{home}/.cache/hourglass")))?;
    std::fs::read_to_string(format!("{cache}/cassandra-instances/{instance}/cassandra.pid")).ok()?.trim().parse().ok()
}

/// Flushes a keyspace's memtables to SSTables on e2e/servers/cassandra.sh's instance `instance`
/// (`nodetool flush`, which returns when the SSTables are written) and returns the CPU-seconds the CQL
/// server spent meanwhile (nodetool's own JVM apart), when its pid is known. Until a flush, a write
/// costs the server its commit log and memtable only: the table's compression and the SSTable's
/// indexes and bloom filter are paid here, and again by every compaction.
async fn flush_keyspace(instance: &str, keyspace: &str, store_pid: Option<u32>) -> anyhow::Result<Option<f64>> {
    let script = server_script("e2e/servers/cassandra.sh", None)?;
    let mut nodetool = std::process::Command::new("bash");
    nodetool.arg(script).args(["nodetool", "--name", instance, "flush", keyspace]);
    let store_cpu_before = store_pid.and_then(|pid| process_cpu_seconds(pid).ok());
    let (status, _, stderr, _) = tokio::task::spawn_blocking(move || run_measured(nodetool)).await??;
    anyhow::ensure!(status.success(), "nodetool flush {keyspace} on instance {instance} failed: {stderr}");
    Ok(store_pid.zip(store_cpu_before).and_then(|(pid, before)| Some(process_cpu_seconds(pid).ok()? - before)))
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

/// Whether a bench draws its progress bars: `hourglass bench <stage>` does; `bench all` prints one
/// line per step instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bars {
    /// Drawn on stderr.
    Shown,
    /// Not drawn.
    Hidden,
}

/// A progress bar of `length` steps, drawn or not.
fn progress_bar(length: u64, bars: Bars) -> indicatif::ProgressBar {
    match bars {
        Bars::Shown => indicatif::ProgressBar::new(length),
        Bars::Hidden => indicatif::ProgressBar::hidden(),
    }
}
