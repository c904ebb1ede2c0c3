//! `hourglass bench outage`: the collector's memory while its Kafka broker is down and clients keep
//! sending twice the collector bench's load (twice the streams, each as many batches in flight, every
//! refused batch resent after its retry-after). The collector must push back, not buffer: its peak RSS
//! stays under what it was before the load plus `--max-in-flight-bytes` (decoded batches) plus the
//! producer's queue (`--kafka-queue-max-kbytes`), the two bounds docs/architecture.md's invariants give.
//!
//! The broker is a private instance this bench starts (`kafka.sh start --name bench-outage`), stops
//! mid-load and destroys afterwards, whatever happens: never the shared one.

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hourglass_kafka::KafkaConfig;
use hourglass_postgres::PostgresConfig;
use indicatif::ProgressBar;

use super::{peak_rss_kib, wait_until_serving};
use crate::loadgen::{self, EventSource, LoadPlan};

/// Flags of `hourglass bench outage`.
#[derive(clap::Args, Clone)]
pub struct OutageBenchArgs {
    /// Seconds of load with the broker up, before it is stopped.
    #[arg(long, default_value_t = 10)]
    pub(super) load_secs: u64,
    /// Seconds of load with the broker stopped.
    #[arg(long, default_value_t = 30)]
    pub(super) outage_secs: u64,
    /// The collector's `--max-in-flight-bytes` for this run (smaller than the default, so the bound
    /// is tested at a size this machine's load fills).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub(super) max_in_flight_bytes: u64,
    /// The private broker's instance name (e2e/servers/kafka.sh --name).
    #[arg(long, default_value = "bench-outage")]
    pub(super) broker_name: String,
    /// The private broker's port (its controller listens on this + 1000).
    #[arg(long, default_value_t = 19392)]
    pub(super) broker_port: u16,
    /// The script running the Kafka instances (`e2e/servers/kafka.sh`); by default found from the
    /// working directory.
    #[arg(long)]
    pub(super) kafka_tools: Option<PathBuf>,
    #[command(flatten)]
    pub(super) postgres: PostgresConfig,
}

/// What the outage bench measured.
#[derive(Clone, Copy, Debug)]
pub struct OutageFigures {
    /// The collector's resident set once serving, before any load, in KiB.
    pub idle_rss_kib: u64,
    /// Its peak resident set (VmHWM) before the broker was stopped, in KiB.
    pub peak_rss_before_kib: u64,
    /// Its peak resident set (VmHWM) at the end of the outage, in KiB.
    pub peak_rss_kib: u64,
    /// The bound: idle RSS + the decoded-batch budget + the producer's queue, in KiB.
    pub bound_kib: u64,
    /// Events acknowledged before the broker was stopped.
    pub acked_before: u64,
    /// Events acknowledged during the outage (accepted before the broker went, acked late).
    pub acked_during: u64,
    /// Seconds of load before the stop.
    pub load_seconds: f64,
}

impl OutageFigures {
    /// Whether the peak stayed within the bound.
    pub fn bounded(&self) -> bool {
        self.peak_rss_kib <= self.bound_kib
    }
}

/// Runs the outage bench and prints what it measured.
pub async fn run(args: OutageBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "outage bench: the collector under twice the collector bench's load, broker stopped after {} s for {} s",
        args.load_secs, args.outage_secs
    );
    println!(
        "  before the stop    {:.0} events/s acked; peak RSS {:.1} MiB (idle {:.1} MiB)",
        figures.acked_before as f64 / figures.load_seconds,
        mib(figures.peak_rss_before_kib),
        mib(figures.idle_rss_kib)
    );
    println!(
        "  broker stopped     peak RSS {:.1} MiB, bound {:.1} MiB (idle + --max-in-flight-bytes + producer queue): {}",
        mib(figures.peak_rss_kib),
        mib(figures.bound_kib),
        if figures.bounded() { "bounded" } else { "OVER THE BOUND" }
    );
    println!("                     {} events acked during the outage", figures.acked_during);
    Ok(())
}

/// A private Kafka instance, destroyed when dropped (also on an error or a panic).
struct PrivateBroker {
    script: PathBuf,
    name: String,
}

impl PrivateBroker {
    fn start(script: &Path, name: &str, port: u16) -> anyhow::Result<Self> {
        let broker = Self { script: script.to_owned(), name: name.to_owned() };
        broker.command(&["start", "--port", &port.to_string()])?;
        Ok(broker)
    }

    fn stop(&self) -> anyhow::Result<()> {
        self.command(&["stop"])
    }

    fn command(&self, arguments: &[&str]) -> anyhow::Result<()> {
        let output = std::process::Command::new(&self.script)
            .arg(arguments[0])
            .args(["--name", &self.name])
            .args(&arguments[1..])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run {}", self.script.display()))?;
        if !output.status.success() {
            bail!(
                "kafka.sh {} --name {} failed: {}",
                arguments.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Err(error) = self.command(&["destroy"]) {
            eprintln!("warning: the private broker {} was not destroyed: {error:#}", self.name);
        }
    }
}

/// The collector's current resident set, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS in /proc status")?;
    Ok(line.split_whitespace().nth(1).context("malformed VmRSS")?.parse()?)
}

/// Starts the private broker and a collector on it, loads it, stops the broker and watches the
/// collector's memory.
pub async fn measure(args: &OutageBenchArgs) -> anyhow::Result<OutageFigures> {
    let script = super::kafka_script(args.kafka_tools.as_deref())?;
    let broker = tokio::task::block_in_place(|| PrivateBroker::start(&script, &args.broker_name, args.broker_port))?;
    let brokers = format!("127.0.0.1:{}", args.broker_port);
    let run_id = super::run_id();

    let api_key = super::unthrottled_ingest_key(&args.postgres, &run_id).await?;

    let kafka = KafkaConfig::for_brokers(&brokers);
    let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("collector")
        .env("HOURGLASS_COLLECTOR_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("HOURGLASS_KAFKA_BROKERS", &brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", format!("hourglass.bench.{run_id}"))
        .env("HOURGLASS_DATABASE_URL", &args.postgres.url)
        .env("HOURGLASS_MAX_IN_FLIGHT_BYTES", args.max_in_flight_bytes.to_string())
        // Batches the broker never confirms come back UNAVAILABLE after this, and are resent.
        .env("HOURGLASS_KAFKA_DELIVERY_TIMEOUT_MS", "5000")
        .env("HOURGLASS_READINESS_INTERVAL_MS", "200")
        // Its warnings (every batch the stopped broker does not confirm) are the expected outcome here;
        // errors go to the bench's stderr, as the other benches' stages' logs do.
        .env("HOURGLASS_LOG", "error")
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the collector")?;
    let collector_pid = child.id().context("collector exited at once")?;
    let target = format!("http://127.0.0.1:{port}");
    wait_until_serving(&target, Duration::from_secs(60)).await?;
    let idle_rss_kib = rss_kib(collector_pid)?;

    // Twice the collector bench's load: 4 connections x 2 streams x 32 batches in flight, resending.
    let plan = LoadPlan {
        target,
        api_key: api_key.expose_secret().to_owned(),
        source: EventSource::Generated { count: u64::MAX / 2, run_id: run_id.clone() },
        batch_size: 100,
        connections: 4,
        streams_per_connection: 2,
        in_flight_per_stream: 32,
        retry: true,
    };
    let acked = ProgressBar::hidden();
    let load = tokio::spawn({
        let acked = acked.clone();
        async move { loadgen::run(&plan, &acked).await }
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.load_secs)).await;
    let load_seconds = started.elapsed().as_secs_f64();
    let acked_before = acked.position();
    let peak_rss_before_kib = peak_rss_kib(collector_pid)?;
    if load.is_finished() {
        bail!("the load ended before the outage: {:?}", load.await);
    }

    tokio::task::block_in_place(|| broker.stop())?;
    tokio::time::sleep(Duration::from_secs(args.outage_secs)).await;
    let peak_rss = peak_rss_kib(collector_pid)?;
    let acked_during = acked.position() - acked_before;
    load.abort();
    // The broker is gone: the collector's flush at shutdown cannot succeed, so do not wait for it.
    child.kill().await.ok();
    tokio::task::block_in_place(|| drop(broker));

    let bound_kib = idle_rss_kib + args.max_in_flight_bytes / 1024 + kafka.queue_max_kbytes;
    Ok(OutageFigures {
        idle_rss_kib,
        peak_rss_before_kib,
        peak_rss_kib: peak_rss,
        bound_kib,
        acked_before,
        acked_during,
        load_seconds,
    })
}
