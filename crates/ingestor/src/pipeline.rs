//! The ingest loop: read → write → mark dirty → commit, over any [`EventLogConsumer`]: a Kafka consumer
//! group member in distributed mode, `log.db`'s consumer in standalone mode.
//!
//! Records are written concurrently (at most [`IngestLoopConfig::max_in_flight_records`]); when that many
//! are in flight the loop stops reading. Records already waiting are written together (up to
//! [`IngestLoopConfig::max_records_per_write`]), so rows of one partition from several records share a
//! batch. Every commit interval, the loop first marks the customer-hours of the finished records dirty in
//! the job queue, and only if that succeeded commits the positions below every record still in flight
//! ([`OffsetTracker`]). A store that is down makes writes retry with backoff ([`RecordHandler`]); nothing
//! is committed past them, so a crash or a rebalance redelivers them: at-least-once into an idempotent
//! store (invariant 1 of docs/architecture.md).
//!
//! Each stored record's `ingestor.record` span (see [`crate::handler`]) stays open until its hours are
//! marked dirty: the mark appears in the record's trace as an `ingestor.mark_dirty` child, so one
//! batch's trace runs from the collector's publish to the mark that makes it aggregatable.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hourglass_core::event_log::{CommitPosition, EventLog, EventLogConsumer, EventLogError, PartitionLag};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::IngestLoopConfig;
use crate::error::IngestorError;
use crate::handler::{Handled, RecordHandler};
use crate::offsets::OffsetTracker;
use crate::suppression::Suppression;
use crate::telemetry;

/// Reads `consumer` until `shutdown` is cancelled, then finishes in-flight writes (at most the drain
/// timeout), marks, commits and closes the consumer (leaving its group).
///
/// It stops early, with an error, when the consumer cannot go on: reading fails, or a commit fails
/// fatally. It still drains, marks and commits what it can first.
///
/// The events of the people `suppression` lists are dropped before the write and counted as erased.
#[allow(clippy::too_many_arguments)]
pub async fn run<C, S, Q, L>(
    config: IngestLoopConfig,
    mut consumer: C,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    dead_letter_log: Arc<L>,
    suppression: Suppression,
    shutdown: CancellationToken,
) -> Result<(), IngestorError>
where
    C: EventLogConsumer,
    S: RawStore,
    Q: JobQueue,
    L: EventLog,
{
    telemetry::describe();
    tracing::info!("ingestor consuming");
    let handler = Arc::new(RecordHandler::new(
        raw_store,
        dead_letter_log,
        suppression,
        config.retry_backoff(),
        config.max_retry_backoff(),
    ));
    let abandon = CancellationToken::new();
    let mut tracker = OffsetTracker::default();
    let mut pending_hours = PendingHours::default();
    let mut in_flight = FuturesUnordered::new();
    let mut commit_tick = tokio::time::interval(config.commit_interval());
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_in_flight = config.max_in_flight_records.max(1);
    let max_group = config.max_records_per_write.max(1);
    let mut in_flight_records = 0usize;
    let mut lag_report = LagReport::default();
    let mut streaks = Streaks::default();

    // `next_records` is cancel-safe (the seam's contract): losing this race to another branch loses no
    // record. The other branches' handlers run once it is dropped, so they may use the consumer.
    let stopped: Result<(), IngestorError> = loop {
        let room = max_group.min(max_in_flight.saturating_sub(in_flight_records));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(results) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_records -= apply_all(&mut tracker, &mut pending_hours, results);
                metrics::gauge!(telemetry::IN_FLIGHT_RECORDS).set(tracker.in_flight() as f64);
            }
            _ = commit_tick.tick() => {
                let marked = mark_and_commit(&mut consumer, &*job_queue, &mut tracker, &mut pending_hours, &mut streaks);
                if let Err(error) = marked.await {
                    break Err(error);
                }
                lag_report.report(&consumer.lag());
            }
            group = consumer.next_records(room), if room > 0 => match group {
                Ok(group) => {
                    for record in &group {
                        tracker.start(record.partition, record.offset);
                    }
                    in_flight_records += group.len();
                    let handler = Arc::clone(&handler);
                    let abandon = abandon.clone();
                    in_flight.push(async move {
                        let handled = handler.handle(&group, &abandon).await;
                        group.iter().map(|record| (record.partition, record.offset)).zip(handled).collect::<Vec<_>>()
                    });
                }
                Err(error) => break Err(IngestorError::Log(error)),
            },
        }
    };
    if let Err(error) = &stopped {
        tracing::error!(%error, "ingestor stopping: the event log cannot go on");
    }

    tracing::info!(in_flight = in_flight.len(), "ingestor draining");
    let drain_deadline = tokio::time::sleep(Duration::from_secs(config.drain_timeout_secs));
    tokio::pin!(drain_deadline);
    while !in_flight.is_empty() {
        tokio::select! {
            Some(results) = in_flight.next() => {
                apply_all(&mut tracker, &mut pending_hours, results);
            }
            () = &mut drain_deadline, if !abandon.is_cancelled() => {
                tracing::warn!(in_flight = in_flight.len(), "drain timeout: abandoning writes still retrying (they stay uncommitted)");
                abandon.cancel();
            }
        }
    }
    metrics::gauge!(telemetry::IN_FLIGHT_RECORDS).set(tracker.in_flight() as f64);
    let committed = mark_and_commit(&mut consumer, &*job_queue, &mut tracker, &mut pending_hours, &mut streaks).await;
    if let Err(error) = consumer.close().await {
        tracing::warn!(%error, "closing the event log consumer failed; uncommitted records will be redelivered");
    }
    tracing::info!("ingestor stopped");
    stopped.and(committed)
}

/// The consumer-lag gauges this replica has set, so a partition it stops reading (a rebalance gave it to
/// another replica) goes back to 0 rather than showing its last lag forever.
#[derive(Default)]
struct LagReport {
    reported: BTreeSet<i32>,
}

impl LagReport {
    fn report(&mut self, lag: &[PartitionLag]) {
        let now: BTreeSet<i32> = lag.iter().map(|partition| partition.partition).collect();
        for gone in self.reported.difference(&now) {
            metrics::gauge!(telemetry::CONSUMER_LAG_RECORDS, "partition" => gone.to_string()).set(0.0);
        }
        for partition in lag {
            metrics::gauge!(telemetry::CONSUMER_LAG_RECORDS, "partition" => partition.partition.to_string())
                .set(partition.records as f64);
        }
        self.reported = now;
    }
}

/// Records what became of a group of records; returns how many there were.
fn apply_all(
    tracker: &mut OffsetTracker,
    pending_hours: &mut PendingHours,
    results: Vec<((i32, i64), Handled)>,
) -> usize {
    let count = results.len();
    for ((partition, offset), handled) in results {
        match handled {
            Handled::Stored { hours, span } => {
                pending_hours.hours.extend(hours);
                // While marking keeps failing records still finish; past the cap their spans end
                // unmarked rather than holding memory without bound.
                if pending_hours.record_spans.len() < MAX_PENDING_RECORD_SPANS {
                    pending_hours.record_spans.push(span);
                }
                tracker.finish(partition, offset);
            }
            Handled::DeadLettered => tracker.finish(partition, offset),
            Handled::Abandoned => tracker.abandon(partition, offset),
        }
    }
    count
}

/// The most record spans kept open waiting for their hours to be marked.
const MAX_PENDING_RECORD_SPANS: usize = 10_000;

/// The customer-hours of the records stored since the last successful mark, and those records' spans
/// (ended when the mark succeeds).
#[derive(Default)]
struct PendingHours {
    hours: HashSet<CustomerHour>,
    record_spans: Vec<tracing::Span>,
}

/// The marks and the commits failing now, each logged when its failure starts and when it ends rather
/// than at every commit interval (every 100 ms in standalone, where a full disk can last minutes).
#[derive(Default)]
struct Streaks {
    marking: FailureStreak,
    committing: FailureStreak,
}

/// Consecutive failures of one repeated write.
#[derive(Default)]
struct FailureStreak {
    failures: u64,
}

impl FailureStreak {
    /// Notes a failure; `true` for the first of a streak (the one to log).
    fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Notes a success; returns how many failures it ended (0 if none).
    fn succeeded(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }
}

/// Marks the finished records' hours dirty, then commits the positions below every in-flight record.
/// If marking fails nothing is committed: the records will be redelivered and re-marked, or marked at
/// the next commit interval. A failed commit is retried at the next one too, unless it is fatal: then
/// the error stops the loop.
async fn mark_and_commit<C: EventLogConsumer, Q: JobQueue>(
    consumer: &mut C,
    job_queue: &Q,
    tracker: &mut OffsetTracker,
    pending_hours: &mut PendingHours,
    streaks: &mut Streaks,
) -> Result<(), IngestorError> {
    let committable = tracker.committable();
    if !pending_hours.hours.is_empty() {
        let hours: Vec<CustomerHour> = pending_hours.hours.iter().cloned().collect();
        // One call for every record finished since the last mark: each record's trace gets its own
        // span over it (the call's warnings log under the first).
        let mark_spans: Vec<tracing::Span> = pending_hours
            .record_spans
            .iter()
            .map(|record_span| tracing::info_span!(parent: record_span, "ingestor.mark_dirty", hours = hours.len()))
            .collect();
        let marked = job_queue
            .mark_dirty(&hours)
            .instrument(mark_spans.first().cloned().unwrap_or_else(tracing::Span::none))
            .await;
        drop(mark_spans);
        if let Err(error) = marked {
            metrics::counter!(telemetry::DIRTY_MARK_FAILURES_TOTAL).increment(1);
            if streaks.marking.failed() {
                tracing::warn!(%error, "cannot mark dirty hours; offsets stay uncommitted until it works");
            } else {
                tracing::debug!(%error, "cannot mark dirty hours yet");
            }
            return Ok(());
        }
        let failures = streaks.marking.succeeded();
        if failures > 0 {
            tracing::info!(failures, "marking dirty hours works again");
        }
        pending_hours.hours.clear();
        pending_hours.record_spans.clear();
    }
    if committable.is_empty() {
        return Ok(());
    }
    let positions: Vec<CommitPosition> = committable
        .iter()
        .map(|(partition, next_offset)| CommitPosition { partition: *partition, next_offset: *next_offset })
        .collect();
    match consumer.commit(&positions).await {
        Ok(()) => {
            metrics::counter!(telemetry::COMMITS_TOTAL, "result" => "ok").increment(1);
            tracker.mark_committed(&committable);
            let failures = streaks.committing.succeeded();
            if failures > 0 {
                tracing::info!(failures, "offset commits work again");
            }
            Ok(())
        }
        Err(error) => {
            metrics::counter!(telemetry::COMMITS_TOTAL, "result" => "failed").increment(1);
            if let EventLogError::Fatal(_) = error {
                return Err(IngestorError::Log(error));
            }
            if streaks.committing.failed() {
                tracing::warn!(%error, "offset commit failed; the records may be redelivered (no loss)");
            } else {
                tracing::debug!(%error, "offset commit failed again");
            }
            Ok(())
        }
    }
}
