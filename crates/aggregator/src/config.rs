//! The aggregator's configuration, from flags and `HOURGLASS_AGGREGATOR_*` environment variables.

use std::time::Duration;

use hourglass_core::retention::RawRetention;

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

    /// Buckets of one job folded at once, each in a task of its own, so a job uses several cores (at least
    /// one). Each bucket being folded keeps its event ids in memory (about the ids' size plus 24 bytes
    /// per event), so a worker holds up to `--aggregator-concurrency` times this many buckets' ids.
    #[arg(
        long = "aggregator-bucket-concurrency",
        env = "HOURGLASS_AGGREGATOR_BUCKET_CONCURRENCY",
        default_value_t = 4
    )]
    pub bucket_concurrency: usize,

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

    /// How often this worker recounts the raw store for one slice of final hours (`verify`) and sets
    /// `hourglass_ledger_unbalanced_final_hours` to the slice's unbalanced hours; 0 (the default) turns it
    /// off. Each run takes the hours that reached `--ledger-verify-age-hours` since the last, so every hour
    /// is recounted once per worker that has this on: a deployment turns it on in one worker only.
    #[arg(long = "ledger-verify-interval-secs", env = "HOURGLASS_LEDGER_VERIFY_INTERVAL_SECS", default_value_t = 0)]
    pub ledger_verify_interval_secs: u64,

    /// How old, in hours since it started, an hour is when the periodic verification recounts it. A day
    /// by default: rows lost from the raw store after the final rollup (a TTL set too short, a failed
    /// restore) have had time to go missing, and the hour is still far inside its horizon. At least the
    /// hour plus `--allowed-lateness-secs`, so only final hours are recounted (checked at start-up).
    #[arg(long = "ledger-verify-age-hours", env = "HOURGLASS_LEDGER_VERIFY_AGE_HOURS", default_value_t = 24)]
    pub ledger_verify_age_hours: u64,

    /// How long the raw store keeps an hour's rows, and so which hours are past their horizon: never
    /// aggregated again, since some of their raw rows may be gone (`hourglass_core::retention`). Not a flag
    /// of its own: the binary sets it from the raw store's retention flag (`--cql-ttl-days`, or
    /// standalone's `--raw-retention-days`), so the aggregator cannot disagree with the store. Defaults
    /// to 30 days, less a 1-day margin.
    #[arg(skip = RawRetention::default())]
    pub raw_retention: RawRetention,
}

/// Why the aggregator refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AggregatorConfigError {
    /// Hours would pass their horizon before they could get a final rollup.
    #[error(
        "the raw retention of {retention_secs} s less its {margin_secs} s safety margin leaves less than a day \
         between an hour's final rollup ({finalizable_after_secs} s after the hour starts: the hour plus \
         --allowed-lateness-secs) and the hour's horizon, after which it is never aggregated again: raise the \
         retention (--cql-ttl-days, or --raw-retention-days in standalone)"
    )]
    RetentionTooShort {
        /// The raw retention.
        retention_secs: i64,
        /// The expiry margin.
        margin_secs: i64,
        /// How long after its start an hour gets its final rollup.
        finalizable_after_secs: i64,
    },
    /// The periodic ledger verification would recount hours that may not be final yet.
    #[error(
        "--ledger-verify-age-hours {age_hours} is younger than an hour's final rollup ({finalizable_after_secs} s \
         after the hour starts: the hour plus --allowed-lateness-secs): raise it"
    )]
    LedgerVerifyTooEarly {
        /// The configured age.
        age_hours: u64,
        /// How long after its start an hour gets its final rollup.
        finalizable_after_secs: i64,
    },
}

impl AggregatorConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
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

    /// Checks the configuration can work: every hour must be able to get its final rollup before it
    /// passes its horizon (a day at least, so a day's backlog is not refused).
    pub fn check(&self) -> Result<(), AggregatorConfigError> {
        let finalizable_after_secs = hourglass_core::hour::SECONDS_PER_HOUR
            .saturating_add(i64::try_from(self.allowed_lateness_secs).unwrap_or(i64::MAX));
        if self.raw_retention.rewritable_secs() < finalizable_after_secs.saturating_add(86_400) {
            return Err(AggregatorConfigError::RetentionTooShort {
                retention_secs: self.raw_retention.retention_secs,
                margin_secs: self.raw_retention.expiry_margin_secs,
                finalizable_after_secs,
            });
        }
        let verify_age_secs = i64::try_from(self.ledger_verify_age_hours.saturating_mul(3600)).unwrap_or(i64::MAX);
        if self.ledger_verify_interval_secs > 0 && verify_age_secs < finalizable_after_secs {
            return Err(AggregatorConfigError::LedgerVerifyTooEarly {
                age_hours: self.ledger_verify_age_hours,
                finalizable_after_secs,
            });
        }
        Ok(())
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::{AggregatorConfig, AggregatorConfigError};

    #[test]
    fn the_periodic_ledger_verification_refuses_hours_that_may_not_be_final() {
        let mut config = AggregatorConfig::with_defaults();
        config.ledger_verify_age_hours = 1;
        assert_eq!(config.check(), Ok(()), "off by default, so the age is not checked");
        config.ledger_verify_interval_secs = 3600;
        assert_eq!(
            config.check(),
            Err(AggregatorConfigError::LedgerVerifyTooEarly { age_hours: 1, finalizable_after_secs: 3600 + 600 })
        );
        config.ledger_verify_age_hours = 2;
        assert_eq!(config.check(), Ok(()));
    }
}
