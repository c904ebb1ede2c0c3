//! [`SqliteEventLogConsumer`]: the read side of `log.db`, a named consumer of the Events topic.
//!
//! Its committed offset is a row of `log.db` (`consumer_offsets`), written through the log's writer, so
//! a commit shares a group commit (one fsync) with the appends queued meanwhile and is durable when it
//! resolves. The row holds the last record done; the seam's [`CommitPosition`] names the first record
//! not done, so the two differ by one and are converted here.
//!
//! The consumer also trims the log ([`LogTrimConfig`]): every trim interval it deletes the Events records
//! at or below its committed offset (but the newest `keep` of them), so `log.db` does not grow with
//! everything ever ingested. Only the ingest consumer trims, and it is the only consumer: standalone has
//! one ingestion, and nothing else reads its Events.
//!
//! A commit or a trim refused for want of disk space is not fatal: the commit fails as unavailable (the
//! ingest loop commits again at its next interval, and what it has not committed is delivered again
//! after a crash), and the trim is skipped until the next interval. Every other failure of `log.db` is
//! fatal ([`log_error`]).

use std::sync::Arc;
use std::time::Duration;

use hourglass_core::event_log::{CommitPosition, ConsumedRecord, EventLogConsumer, EventLogError, PartitionLag, Topic};
use tokio::time::Instant;

use super::{SqliteEventLog, SqliteLogError};

/// How standalone's ingest consumer trims ingested records from `log.db`.
#[derive(Clone, Debug, clap::Args)]
pub struct LogTrimConfig {
    /// How often ingested Events records are deleted from the log. Default 10.
    #[arg(
        long = "embedded-ingest-trim-interval-secs",
        env = "HOURGLASS_EMBEDDED_INGEST_TRIM_INTERVAL_SECS",
        default_value_t = 10
    )]
    pub trim_interval_secs: u64,

    /// Ingested Events records kept in the log at each trim, newest first. Default 0: once a record is
    /// in the raw store the raw store is the copy that matters, and standalone has no tool that replays
    /// the log, so keeping a tail would only grow `log.db`. Raise it to keep recent records for
    /// inspection. Dead letters are always kept.
    #[arg(
        long = "embedded-ingest-keep-ingested-records",
        env = "HOURGLASS_EMBEDDED_INGEST_KEEP_INGESTED_RECORDS",
        default_value_t = 0
    )]
    pub keep_ingested_records: u64,
}

impl LogTrimConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }
}

/// The embedded implementation of [`EventLogConsumer`]: `log.db`'s Events topic, partition 0, from a
/// named consumer's committed offset on. See the module documentation.
pub struct SqliteEventLogConsumer {
    log: Arc<SqliteEventLog>,
    name: String,
    /// The last record handed out: the next read starts after it.
    delivered_through: i64,
    /// The last record committed (the stored form).
    committed_through: i64,
    trim: Option<Trim>,
}

/// Where the periodic trim stands.
struct Trim {
    interval: Duration,
    keep_records: u64,
    next_at: Instant,
    /// The committed offset the last trim deleted through.
    trimmed_through: i64,
}

impl SqliteEventLog {
    /// A consumer of the Events topic named `name`, starting after its committed offset (from the first
    /// record if it never committed). With `trim`, it deletes what it has committed from the log.
    pub async fn events_consumer(
        self: &Arc<Self>,
        name: &str,
        trim: Option<LogTrimConfig>,
    ) -> Result<SqliteEventLogConsumer, SqliteLogError> {
        let committed_through = self.committed_offset(name).await?;
        tracing::info!(consumer = name, committed_offset = committed_through, "log.db consumer starting");
        let trim = trim.map(|config| {
            let interval = Duration::from_secs(config.trim_interval_secs.max(1));
            Trim {
                interval,
                keep_records: config.keep_ingested_records,
                next_at: Instant::now() + interval,
                trimmed_through: 0,
            }
        });
        Ok(SqliteEventLogConsumer {
            log: Arc::clone(self),
            name: name.to_owned(),
            delivered_through: committed_through,
            committed_through,
            trim,
        })
    }
}

impl SqliteEventLogConsumer {
    /// Trims the log through the committed offset if the trim interval has passed.
    async fn trim_if_due(&mut self) -> Result<(), EventLogError> {
        let Some(trim) = &mut self.trim else { return Ok(()) };
        if Instant::now() < trim.next_at {
            return Ok(());
        }
        trim.next_at = Instant::now() + trim.interval;
        if self.committed_through <= trim.trimmed_through {
            return Ok(());
        }
        // If this is cancelled, the next trim (an interval later) deletes the same records: trimming
        // through an offset twice deletes nothing the second time.
        let through = self.committed_through;
        let deleted = match self.log.trim_events(through, trim.keep_records).await {
            Ok(deleted) => deleted,
            // A trim frees rows but writes the WAL first; the log's disk-full state has said why.
            Err(SqliteLogError::DiskFull(reason)) => {
                tracing::debug!(%reason, "trim skipped until there is room");
                return Ok(());
            }
            Err(error) => return Err(log_error(error)),
        };
        trim.trimmed_through = through;
        tracing::debug!(deleted, through, "trimmed ingested records from the log");
        Ok(())
    }
}

impl EventLogConsumer for SqliteEventLogConsumer {
    async fn next_records(&mut self, max_records: usize) -> Result<Vec<ConsumedRecord>, EventLogError> {
        loop {
            self.trim_if_due().await?;
            let records = self
                .log
                .read_after(Topic::Events, self.delivered_through, max_records.max(1))
                .await
                .map_err(log_error)?;
            // No wait between the read and this: a cancelled call has delivered nothing.
            if let Some(last) = records.last() {
                self.delivered_through = last.offset;
                return Ok(records);
            }
            let next_trim = self.trim.as_ref().map(|trim| trim.next_at);
            tokio::select! {
                () = self.log.wait_for_records_after(Topic::Events, self.delivered_through) => {}
                () = sleep_until_some(next_trim) => {}
            }
        }
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), EventLogError> {
        for position in positions {
            if position.partition != 0 {
                return Err(EventLogError::Rejected(
                    format!("log.db has one partition, 0; cannot commit partition {}", position.partition).into(),
                ));
            }
            // Stored as the last record done.
            let through = position.next_offset - 1;
            self.log.commit_offset(&self.name, through).await.map_err(log_error)?;
            self.committed_through = through;
        }
        Ok(())
    }

    fn lag(&self) -> Vec<PartitionLag> {
        // Offsets are one sequence over both topics, so a dead-lettered record between two events
        // counts too: the lag is in offsets, a close upper bound on the records behind.
        let records = (self.log.last_offset(Topic::Events) - self.committed_through).max(0);
        vec![PartitionLag { partition: 0, records }]
    }

    async fn close(self) -> Result<(), EventLogError> {
        // Every commit was durable when it resolved, and there is no group to leave.
        Ok(())
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Every failure of `log.db` but a full disk stops the consumer for good: the log is a local file, so a
/// failure is the file's (unreadable, corrupt, its writer stopped), which retrying will not cure, and the
/// ingestion cannot know what it has ingested without it. Standalone then exits non-zero and its
/// supervisor restarts it; nothing past the last commit is lost. A full disk is an operator's to fix and
/// ends by itself: the write is retried.
fn log_error(error: SqliteLogError) -> EventLogError {
    match error {
        SqliteLogError::DiskFull(_) => EventLogError::Unavailable(Box::new(error)),
        _ => EventLogError::Fatal(Box::new(error)),
    }
}
