//! The collector's configuration, from flags and `HOURGLASS_*` environment variables. Every default is
//! stated in its field's doc, which is also the `--help` text.

use std::net::SocketAddr;
use std::time::Duration;

use hourglass_grpc::auth::KeyCacheConfig;
use hourglass_grpc::server::ServerConfig;

use crate::cardinality::CardinalityConfig;
use crate::plans::PlanCacheConfig;
use crate::validate::ValidationLimits;

/// Everything the collector needs besides its key store and event log.
#[derive(Clone, Debug, clap::Args)]
pub struct CollectorConfig {
    /// Address the gRPC server listens on.
    #[arg(long = "listen-addr", env = "HOURGLASS_COLLECTOR_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,

    /// Identifies this collector in event-log records and logs. Defaults to the host name.
    #[arg(long = "collector-id", env = "HOURGLASS_COLLECTOR_ID")]
    pub collector_id: Option<String>,

    /// Per-event and per-batch validation limits.
    #[command(flatten)]
    pub limits: ValidationLimits,

    /// Quota defaults for customers without limits of their own.
    #[command(flatten)]
    pub quota: QuotaConfig,

    /// Cardinality limits (distinct event types and property names per customer-hour).
    #[command(flatten)]
    pub cardinality: CardinalityConfig,

    /// gRPC server hardening.
    #[command(flatten)]
    pub server: ServerConfig,

    /// Limits of ingest streams.
    #[command(flatten)]
    pub streams: StreamConfig,

    /// How a validated key is cached.
    #[command(flatten)]
    pub key_cache: KeyCacheConfig,

    /// How customers' tracking plans are cached.
    #[command(flatten)]
    pub plan_cache: PlanCacheConfig,

    /// How accepted events are laid out in event-log records.
    #[arg(long = "record-layout", env = "HOURGLASS_RECORD_LAYOUT", value_enum, default_value_t = RecordLayout::Batch)]
    pub record_layout: RecordLayout,
}

/// How accepted events become event-log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordLayout {
    /// One record per (customer, batch): the default, about a third of the CPU per event (README).
    Batch,
    /// One record per event; kept to measure against, and for consumers that need per-event records.
    Event,
}

/// Events-per-second budgets, per customer, enforced by each collector process with a token bucket.
/// With N collector replicas behind a balancer a customer can reach N times its budget; divide the
/// budget by the replica count when a hard global limit matters.
#[derive(Clone, Debug, clap::Args)]
pub struct QuotaConfig {
    /// Sustained events per second a customer may send to this collector, unless its own limit is set
    /// (`hourglass keys limits`).
    #[arg(long = "quota-events-per-second", env = "HOURGLASS_QUOTA_EVENTS_PER_SECOND", default_value_t = 20_000)]
    pub default_events_per_second: u32,

    /// Events a customer may send in a burst above the sustained rate, unless its own limit is set.
    #[arg(long = "quota-burst-events", env = "HOURGLASS_QUOTA_BURST_EVENTS", default_value_t = 40_000)]
    pub default_burst_events: u32,

    /// In client-streaming `Ingest`, how long the collector may hold back an over-quota batch (slowing
    /// the client down through HTTP/2 flow control) before reporting it as throttled.
    #[arg(long = "quota-max-wait-ms", env = "HOURGLASS_QUOTA_MAX_WAIT_MS", default_value_t = 2_000)]
    pub max_wait_ms: u64,
}

/// Limits of ingest streams.
#[derive(Clone, Debug, clap::Args)]
pub struct StreamConfig {
    /// A stream that sends no batch for this long, with nothing in flight, is ended with
    /// DEADLINE_EXCEEDED.
    #[arg(long = "idle-stream-timeout-secs", env = "HOURGLASS_IDLE_STREAM_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_stream_timeout_secs: u64,

    /// Most batches of one stream being published at once. When a stream has this many unacknowledged
    /// batches the collector stops reading it, and HTTP/2 flow control pushes back on the client.
    #[arg(
        long = "max-in-flight-batches",
        env = "HOURGLASS_MAX_IN_FLIGHT_BATCHES",
        default_value_t = 32,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536)
    )]
    pub max_in_flight_batches: usize,

    /// A stream whose client reads no ack for this long, while acks wait to be sent, is ended: the
    /// batches it holds are released (the client resends what was not acked). Without it a client that
    /// never reads would hold its in-flight batches for as long as its connection lives.
    #[arg(
        long = "ack-write-timeout-secs",
        env = "HOURGLASS_ACK_WRITE_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub ack_write_timeout_secs: u64,

    /// Bytes of batches the collector holds at once, streams and unary calls together (an estimate of
    /// their in-memory size: each event's encoded bytes plus a 32-byte handle, so tiny events count
    /// several times their encoded size). A
    /// stream whose batch does not fit waits, reading nothing, so its client is slowed by HTTP/2 flow
    /// control; a unary call waits at most `--budget-wait-ms`, then gets UNAVAILABLE with a retry delay.
    #[arg(
        long = "max-in-flight-bytes",
        env = "HOURGLASS_MAX_IN_FLIGHT_BYTES",
        default_value_t = 256 * 1024 * 1024,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..)
    )]
    pub max_in_flight_bytes: usize,

    /// How long a unary call waits for room in the memory budget before it is told to retry.
    #[arg(long = "budget-wait-ms", env = "HOURGLASS_BUDGET_WAIT_MS", default_value_t = 5_000)]
    pub budget_wait_ms: u64,

    /// Most ingest streams one customer may hold open on one collector; more are refused with
    /// RESOURCE_EXHAUSTED. Each open stream may hold one batch beyond the memory budget.
    #[arg(
        long = "max-streams-per-customer",
        env = "HOURGLASS_MAX_STREAMS_PER_CUSTOMER",
        default_value_t = 64,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_streams_per_customer: usize,

    /// At shutdown, after the calls have drained, how long the event log may take to flush.
    #[arg(long = "flush-timeout-secs", env = "HOURGLASS_FLUSH_TIMEOUT_SECS", default_value_t = 5)]
    pub flush_timeout_secs: u64,
}

impl CollectorConfig {
    /// The configuration with every default, listening on `listen_addr`.
    pub fn with_defaults(listen_addr: SocketAddr) -> Self {
        let mut config: Self = hourglass_config::defaults();
        config.listen_addr = listen_addr;
        config
    }

    /// The collector id: the configured one, else the host name, else "collector".
    pub fn resolved_collector_id(&self) -> String {
        self.collector_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|name| name.trim().to_owned()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "collector".to_owned())
    }
}

impl StreamConfig {
    /// The idle-stream timeout as a duration.
    pub fn idle_stream_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_stream_timeout_secs)
    }

    /// The ack write timeout as a duration.
    pub fn ack_write_timeout(&self) -> Duration {
        Duration::from_secs(self.ack_write_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use super::StreamConfig;

    fn parse(args: &[&str]) -> Result<StreamConfig, clap::Error> {
        let matches = StreamConfig::augment_args(Command::new("collector")).try_get_matches_from(args)?;
        <StreamConfig as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    #[test]
    fn zero_in_flight_batches_or_a_zero_ack_timeout_are_refused_with_the_flag_named() {
        // Zero in-flight batches once reached `mpsc::channel(0)`, which panics, on the first stream.
        let error = parse(&["collector", "--max-in-flight-batches", "0"]).unwrap_err().to_string();
        assert!(error.contains("--max-in-flight-batches"), "{error}");
        let error = parse(&["collector", "--ack-write-timeout-secs", "0"]).unwrap_err().to_string();
        assert!(error.contains("--ack-write-timeout-secs"), "{error}");
        assert_eq!(parse(&["collector", "--max-in-flight-batches", "1"]).unwrap().max_in_flight_batches, 1);
    }
}
