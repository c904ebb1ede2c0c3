//! The ingestor's configuration, from flags and `HOURGLASS_INGESTOR_*` environment variables.

use std::time::Duration;

/// How the ingestor consumes and writes.
#[derive(Clone, Debug, clap::Args)]
pub struct IngestorConfig {
    /// Kafka consumer group: every ingestor replica of one deployment shares it.
    #[arg(long = "ingestor-group", env = "HOURGLASS_INGESTOR_GROUP", default_value = "hourglass-ingestor")]
    pub group_id: String,

    /// Records written at once (across partitions). Bounds memory and the load on the store; when
    /// reached, the ingestor stops fetching until a write finishes.
    #[arg(
        long = "ingestor-max-in-flight-records",
        env = "HOURGLASS_INGESTOR_MAX_IN_FLIGHT_RECORDS",
        default_value_t = 64
    )]
    pub max_in_flight_records: usize,

    /// Most records written by one store call; records already fetched are grouped so rows sharing a
    /// partition share a batch (fewer, larger requests).
    #[arg(
        long = "ingestor-max-records-per-write",
        env = "HOURGLASS_INGESTOR_MAX_RECORDS_PER_WRITE",
        default_value_t = 16
    )]
    pub max_records_per_write: usize,

    /// How often dirty customer-hours are marked and finished offsets committed. Longer means fewer
    /// commits and more redelivery after a crash (never loss).
    #[arg(
        long = "ingestor-commit-interval-ms",
        env = "HOURGLASS_INGESTOR_COMMIT_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub commit_interval_ms: u64,

    /// First wait before retrying a failed store write; doubles up to `--ingestor-max-retry-backoff-ms`.
    #[arg(long = "ingestor-retry-backoff-ms", env = "HOURGLASS_INGESTOR_RETRY_BACKOFF_MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,

    /// Longest wait between retries of a failed store write.
    #[arg(
        long = "ingestor-max-retry-backoff-ms",
        env = "HOURGLASS_INGESTOR_MAX_RETRY_BACKOFF_MS",
        default_value_t = 10_000
    )]
    pub max_retry_backoff_ms: u64,

    /// Address of the health server (`grpc.health.v1`, for Kubernetes gRPC probes).
    #[arg(long = "health-listen-addr", env = "HOURGLASS_INGESTOR_HEALTH_LISTEN_ADDR", default_value = "0.0.0.0:50061")]
    pub health_listen_addr: std::net::SocketAddr,

    /// How often readiness (raw store and job queue reachable) is checked.
    #[arg(long = "readiness-interval-ms", env = "HOURGLASS_READINESS_INTERVAL_MS", default_value_t = 5_000)]
    pub readiness_interval_ms: u64,

    /// On shutdown, how long in-flight writes may take before they are abandoned (uncommitted, so they
    /// are redelivered to whoever takes the partition next).
    #[arg(long = "ingestor-drain-timeout-secs", env = "HOURGLASS_INGESTOR_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,
}

impl IngestorConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }

    pub(crate) fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(1))
    }
}
