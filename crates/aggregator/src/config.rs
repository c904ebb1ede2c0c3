//! The aggregator's configuration, from flags and `HOURGLASS_AGGREGATOR_*` environment variables.

use std::time::Duration;

/// How the aggregator leases and runs jobs.
#[derive(Clone, Debug, clap::Args)]
pub struct AggregatorConfig {
    /// Names this worker in leases and logs; defaults to the host name and process id. Need not be unique:
    /// each lease has a token of its own, and only the current lease's token writes an hour.
    #[arg(long = "aggregator-worker-id", env = "HOURGLASS_AGGREGATOR_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Jobs this worker runs at once.
    #[arg(long = "aggregator-concurrency", env = "HOURGLASS_AGGREGATOR_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// How long a lease lasts; a worker that dies loses its jobs to others after this.
    #[arg(long = "aggregator-lease-secs", env = "HOURGLASS_AGGREGATOR_LEASE_SECS", default_value_t = 300)]
    pub lease_secs: u64,

    /// How long after an hour closes its jobs wait for late events before the final rollup.
    #[arg(long = "allowed-lateness-secs", env = "HOURGLASS_ALLOWED_LATENESS_SECS", default_value_t = 600)]
    pub allowed_lateness_secs: u64,

    /// Provisional rollups of open hours (and hours within their lateness) that received data are
    /// recomputed at most this often; 0 turns them off.
    #[arg(long = "provisional-interval-secs", env = "HOURGLASS_PROVISIONAL_INTERVAL_SECS", default_value_t = 60)]
    pub provisional_interval_secs: u64,

    /// How often to look for jobs when there were none.
    #[arg(
        long = "aggregator-poll-interval-ms",
        env = "HOURGLASS_AGGREGATOR_POLL_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub poll_interval_ms: u64,

    /// How long a failed job waits before it is tried again.
    #[arg(long = "aggregator-retry-after-secs", env = "HOURGLASS_AGGREGATOR_RETRY_AFTER_SECS", default_value_t = 30)]
    pub retry_after_secs: u64,
}

impl AggregatorConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_core::config::defaults()
    }

    /// The worker id: the configured one, else host name and process id.
    pub fn resolved_worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|name| name.trim().to_owned()))
                .unwrap_or_else(|| "aggregator".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}
