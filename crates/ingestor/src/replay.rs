//! Replay: re-read a range of the event log into the raw store, after an ingestion bug or a lost store.
//!
//! The log reads the range (`hourglass-kafka` reads each partition from a start up to its end as of the
//! start of the replay) and hands the records over as a stream; here they go through the same
//! [`RecordHandler`] as the ingest loop: same idempotent writes, same dead-lettering, same dirty marks (so
//! the aggregator recomputes the replayed hours). A replay commits nothing, so the ingestor's consumer
//! group is not disturbed and the two can run at once.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use hourglass_core::event_log::{ConsumedRecord, EventLog, EventLogError};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use tokio_util::sync::CancellationToken;

use crate::config::IngestLoopConfig;
use crate::handler::{Handled, RecordHandler};
use crate::suppression::Suppression;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The range could not be read.
    #[error("failed to read the range: {0}")]
    Log(#[source] EventLogError),
    /// Dirty hours could not be marked (the replayed events are stored; run the replay again).
    #[error("failed to mark replayed hours dirty: {0}")]
    Marks(#[from] hourglass_core::job_queue::JobQueueError),
    /// Interrupted before the end.
    #[error("replay interrupted after {done} of {total} records")]
    Interrupted {
        /// Records replayed.
        done: u64,
        /// Records in the range.
        total: u64,
    },
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Records written to the raw store.
    pub stored: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Customer-hours marked dirty.
    pub hours_marked: u64,
}

/// Replays `records`, a range of `total` records that ends where the range does, in groups of at most
/// `config.max_records_per_write`; marks every touched hour dirty at the end. The events of the people
/// `suppression` lists are dropped and counted as erased, as the ingest loop does. `on_progress` is told
/// how many records were handled so far.
#[allow(clippy::too_many_arguments)]
pub async fn replay<R, S, Q, L>(
    config: &IngestLoopConfig,
    records: R,
    total: u64,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    dead_letter_log: Arc<L>,
    suppression: Suppression,
    stop: CancellationToken,
    mut on_progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError>
where
    R: Stream<Item = Result<ConsumedRecord, EventLogError>>,
    S: RawStore,
    Q: JobQueue,
    L: EventLog,
{
    let handler =
        RecordHandler::new(raw_store, dead_letter_log, suppression, config.retry_backoff(), config.max_retry_backoff());
    let group_size = config.max_records_per_write.max(1);
    let mut records = pin!(records);
    let mut summary = ReplaySummary::default();
    let mut hours: HashSet<CustomerHour> = HashSet::new();
    let mut done = 0u64;
    let mut ended = false;
    while !ended {
        let mut group = Vec::with_capacity(group_size);
        while group.len() < group_size {
            let next = if group.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return Err(ReplayError::Interrupted { done, total }),
                    next = records.next() => next,
                }
            } else {
                // Only what is already there: a group never waits for its last records.
                match records.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            match next {
                Some(record) => group.push(record.map_err(ReplayError::Log)?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if group.is_empty() {
            continue;
        }
        for outcome in handler.handle(&group, &stop).await {
            match outcome {
                Handled::Stored { hours: touched, .. } => {
                    summary.stored += 1;
                    hours.extend(touched);
                }
                Handled::DeadLettered => summary.dead_lettered += 1,
                Handled::Abandoned => return Err(ReplayError::Interrupted { done, total }),
            }
        }
        done += group.len() as u64;
        on_progress(done);
    }
    let hours: Vec<CustomerHour> = hours.into_iter().collect();
    job_queue.mark_dirty(&hours).await?;
    summary.hours_marked = hours.len() as u64;
    Ok(summary)
}
