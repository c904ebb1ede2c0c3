//! The collector's configuration, from flags and `HOURGLASS_*` environment variables. Every default is
//! stated in its field's doc, which is also the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

    /// gRPC server hardening.
    #[command(flatten)]
    pub server: ServerConfig,

    /// How a validated key is cached.
    #[command(flatten)]
    pub key_cache: KeyCacheConfig,

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

/// gRPC server limits: the defaults are safe to expose to the internet behind a balancer.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerConfig {
    /// Largest gRPC message accepted, in bytes. Larger messages fail the call with OUT_OF_RANGE before
    /// they are decoded; batch limits (`--max-batch-bytes`) are checked after.
    #[arg(long = "max-message-bytes", env = "HOURGLASS_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most concurrent gRPC streams (calls) per HTTP/2 connection.
    #[arg(long = "max-concurrent-streams", env = "HOURGLASS_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,

    /// Largest HTTP/2 header list accepted, in bytes.
    #[arg(long = "max-header-list-bytes", env = "HOURGLASS_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,

    /// Interval of HTTP/2 keepalive pings to idle connections.
    #[arg(long = "keepalive-interval-secs", env = "HOURGLASS_KEEPALIVE_INTERVAL_SECS", default_value_t = 30)]
    pub keepalive_interval_secs: u64,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long = "keepalive-timeout-secs", env = "HOURGLASS_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    pub keepalive_timeout_secs: u64,

    /// Close connections after this long (clients reconnect, and a balancer spreads them anew).
    #[arg(long = "max-connection-age-secs", env = "HOURGLASS_MAX_CONNECTION_AGE_SECS", default_value_t = 1800)]
    pub max_connection_age_secs: u64,

    /// A stream that sends no batch for this long, with nothing in flight, is ended with
    /// DEADLINE_EXCEEDED.
    #[arg(long = "idle-stream-timeout-secs", env = "HOURGLASS_IDLE_STREAM_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_stream_timeout_secs: u64,

    /// Most batches of one stream being published at once. When a stream has this many unacknowledged
    /// batches the collector stops reading it, and HTTP/2 flow control pushes back on the client.
    #[arg(long = "max-in-flight-batches", env = "HOURGLASS_MAX_IN_FLIGHT_BATCHES", default_value_t = 32)]
    pub max_in_flight_batches: usize,

    /// PEM certificate chain; with `--tls-key-path`, the server speaks TLS only.
    #[arg(long = "tls-cert-path", env = "HOURGLASS_TLS_CERT_PATH", requires = "tls_key_path")]
    pub tls_cert_path: Option<PathBuf>,

    /// PEM private key for `--tls-cert-path`.
    #[arg(long = "tls-key-path", env = "HOURGLASS_TLS_KEY_PATH", requires = "tls_cert_path")]
    pub tls_key_path: Option<PathBuf>,

    /// After SIGTERM, how long health reports NOT_SERVING before the collector stops accepting, so
    /// balancers take it out of rotation first.
    #[arg(long = "shutdown-delay-ms", env = "HOURGLASS_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// After that, how long in-flight batches may take to be acked before streams are cut.
    #[arg(long = "drain-timeout-secs", env = "HOURGLASS_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,

    /// Then, how long the event log may take to flush.
    #[arg(long = "flush-timeout-secs", env = "HOURGLASS_FLUSH_TIMEOUT_SECS", default_value_t = 5)]
    pub flush_timeout_secs: u64,

    /// How often readiness (event log and key store reachable) is checked for the health service.
    #[arg(long = "readiness-interval-ms", env = "HOURGLASS_READINESS_INTERVAL_MS", default_value_t = 5_000)]
    pub readiness_interval_ms: u64,
}

/// How long a key look-up is trusted.
#[derive(Clone, Debug, clap::Args)]
pub struct KeyCacheConfig {
    /// How long a key (and its customer's limits) is cached; a revoked key stops working within this.
    #[arg(long = "key-cache-ttl-secs", env = "HOURGLASS_KEY_CACHE_TTL_SECS", default_value_t = 30)]
    pub ttl_secs: u64,

    /// How long an unknown key is remembered as unknown, sparing the database from repeated bad keys.
    #[arg(long = "key-cache-negative-ttl-secs", env = "HOURGLASS_KEY_CACHE_NEGATIVE_TTL_SECS", default_value_t = 5)]
    pub negative_ttl_secs: u64,

    /// Most keys cached; past it, expired entries are dropped, then the whole cache.
    #[arg(long = "key-cache-max-entries", env = "HOURGLASS_KEY_CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: usize,
}

impl CollectorConfig {
    /// The configuration with every default, listening on `listen_addr`.
    pub fn with_defaults(listen_addr: SocketAddr) -> Self {
        let mut config: Self = hourglass_core::config::defaults();
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

impl ServerConfig {
    /// The idle-stream timeout as a duration.
    pub fn idle_stream_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_stream_timeout_secs)
    }
}
