//! The ingestor's configuration: [`IngestorConfig`] (`hourglass ingestor`, flags and
//! `HOURGLASS_INGESTOR_*` environment variables) and [`EmbeddedIngestConfig`] (`hourglass standalone`,
//! `--embedded-ingest-*`), each mapped onto the one ingest loop's [`IngestLoopConfig`].

use std::time::Duration;

/// How the ingest loop ([`crate::run`]) reads, writes and commits, whichever mode runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestLoopConfig {
    /// Most records being written at once; when reached, the loop stops reading until a write finishes.
    pub max_in_flight_records: usize,
    /// Most records written by one store call (records already waiting are taken together).
    pub max_records_per_write: usize,
    /// How often the finished records' hours are marked dirty and their positions committed.
    pub commit_interval_ms: u64,
    /// First wait before retrying a failed store write; doubles up to `max_retry_backoff_ms`.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries of a failed store write.
    pub max_retry_backoff_ms: u64,
    /// On shutdown, how long in-flight writes may take before they are abandoned (uncommitted).
    pub drain_timeout_secs: u64,
}

impl IngestLoopConfig {
    pub(crate) fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(1))
    }

    pub(crate) fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms)
    }

    pub(crate) fn max_retry_backoff(&self) -> Duration {
        Duration::from_millis(self.max_retry_backoff_ms)
    }
}

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
    // The health server's own settings (`--readiness-interval-ms`, `--shutdown-delay-ms`,
    // `--drain-timeout-secs`, HTTP/2 limits) are the server flags every role shares, which
    // `hourglass ingestor` adds beside this configuration (`hourglass replay`, which also uses it, serves
    // nothing).
    #[arg(long = "health-listen-addr", env = "HOURGLASS_INGESTOR_HEALTH_LISTEN_ADDR", default_value = "0.0.0.0:50061")]
    pub health_listen_addr: std::net::SocketAddr,

    /// On shutdown, how long in-flight writes may take before they are abandoned (uncommitted, so they
    /// are redelivered to whoever takes the partition next).
    // Its own id: `drain_timeout_secs` is the health server's `--drain-timeout-secs`.
    #[arg(
        id = "ingestor_drain_timeout_secs",
        value_name = "DRAIN_TIMEOUT_SECS",
        long = "ingestor-drain-timeout-secs",
        env = "HOURGLASS_INGESTOR_DRAIN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub drain_timeout_secs: u64,
}

impl IngestorConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }

    /// The ingest loop's settings.
    pub fn loop_config(&self) -> IngestLoopConfig {
        IngestLoopConfig {
            max_in_flight_records: self.max_in_flight_records,
            max_records_per_write: self.max_records_per_write,
            commit_interval_ms: self.commit_interval_ms,
            retry_backoff_ms: self.retry_backoff_ms,
            max_retry_backoff_ms: self.max_retry_backoff_ms,
            drain_timeout_secs: self.drain_timeout_secs,
        }
    }
}

/// How often standalone marks the finished records' hours dirty and commits their position in `log.db`.
/// Standalone has no flag for it: its ingestion used to mark and commit after every write, and a tenth
/// of a second keeps its marks about as fresh while sharing one mark and one commit among the writes of
/// that time (each costs an fsync).
pub const EMBEDDED_COMMIT_INTERVAL_MS: u64 = 100;

/// How the ingest loop runs in standalone mode, over the embedded log (`--embedded-ingest-*`). Its
/// defaults are standalone's own: one process on one disk, where the SQLite raw store takes one write at
/// a time.
#[derive(Clone, Debug, clap::Args)]
pub struct EmbeddedIngestConfig {
    /// Most log records written to the raw store by one write (records already waiting are taken
    /// together, so a backlog is written in large batches). Default 64.
    #[arg(
        long = "embedded-ingest-max-records-per-write",
        env = "HOURGLASS_EMBEDDED_INGEST_MAX_RECORDS_PER_WRITE",
        default_value_t = 64
    )]
    pub max_records_per_write: usize,

    /// First wait before retrying a failed raw-store write; doubles up to
    /// `--embedded-ingest-max-retry-backoff-ms`. Default 100.
    #[arg(
        long = "embedded-ingest-retry-backoff-ms",
        env = "HOURGLASS_EMBEDDED_INGEST_RETRY_BACKOFF_MS",
        default_value_t = 100
    )]
    pub retry_backoff_ms: u64,

    /// Longest wait between retries. Default 10000.
    #[arg(
        long = "embedded-ingest-max-retry-backoff-ms",
        env = "HOURGLASS_EMBEDDED_INGEST_MAX_RETRY_BACKOFF_MS",
        default_value_t = 10_000
    )]
    pub max_retry_backoff_ms: u64,

    /// On shutdown, how long the records being written may keep retrying before they are abandoned
    /// (uncommitted, so they are ingested again at the next start). Default 20.
    #[arg(
        id = "embedded_ingest_drain_timeout_secs",
        long = "embedded-ingest-drain-timeout-secs",
        env = "HOURGLASS_EMBEDDED_INGEST_DRAIN_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub drain_timeout_secs: u64,
}

impl EmbeddedIngestConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }

    /// The ingest loop's settings: one write at a time (the embedded raw store is one SQLite file, which
    /// takes one writer at a time, so a second write in flight would only wait), marks and commits every
    /// [`EMBEDDED_COMMIT_INTERVAL_MS`].
    pub fn loop_config(&self) -> IngestLoopConfig {
        IngestLoopConfig {
            max_in_flight_records: self.max_records_per_write,
            max_records_per_write: self.max_records_per_write,
            commit_interval_ms: EMBEDDED_COMMIT_INTERVAL_MS,
            retry_backoff_ms: self.retry_backoff_ms,
            max_retry_backoff_ms: self.max_retry_backoff_ms,
            drain_timeout_secs: self.drain_timeout_secs,
        }
    }
}
