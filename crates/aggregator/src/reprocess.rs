//! `reprocess`: recompute a range of hours with the current aggregation logic, after a logic bug.
//!
//! Each hour is leased like a job (so no worker writes it meanwhile), recomputed from its raw rows,
//! compared with its current rollup, and swapped in through the same transaction a job completes with:
//! readers see the old hour or the new one, never a mix, and the revision goes up. A dry run computes and
//! compares only: it leases nothing and writes nothing.
//!
//! Hours past their horizon (`hourglass_core::retention`: some of their raw rows may have expired) are
//! neither read nor written, dry run or not: a recomputation would replace their rollup with an
//! undercount. They are listed in [`Reprocessed::refused`], and the other hours are reprocessed.

use std::time::Duration;

use hourglass_core::job_queue::CustomerHour;
use hourglass_core::raw_store::{RawStore, RawStoreError};
use hourglass_core::rollup_store::{Completion, EventTypeRollup, JobLease, RollupStore, RollupStoreError};

use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::worker::{aggregate_hour, holding_lease};

/// How long reprocessing waits for a worker to release an hour before giving up on the run.
const BUSY_HOUR_TIMEOUT: Duration = Duration::from_secs(120);

/// Why reprocessing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    /// The raw store could not be read.
    #[error(transparent)]
    RawStore(#[from] RawStoreError),
    /// The rollup store could not be read or written.
    #[error(transparent)]
    RollupStore(#[from] RollupStoreError),
    /// A worker held the hour for too long.
    #[error("hour {hour_start} of {customer_id} stayed leased by a worker for {BUSY_HOUR_TIMEOUT:?}; run again")]
    Busy {
        /// The customer.
        customer_id: String,
        /// The hour.
        hour_start: i64,
    },
    /// The hour's lease was lost (it expired, say while the store was unreachable for renewals, or the
    /// hour was leased again) before its new rollup was written: nothing was written for the hour.
    #[error(
        "lost the lease on hour {hour_start} of {customer_id} before writing its rollup (it expired or the hour \
         was leased again); nothing was written for that hour; run again"
    )]
    LeaseLost {
        /// The customer.
        customer_id: String,
        /// The hour.
        hour_start: i64,
    },
}

/// Whether an hour's rollup computed at `now_unix` is final: the hour and its allowed lateness are over.
pub(crate) fn is_final_at(config: &AggregatorConfig, hour_start: i64, now_unix: i64) -> bool {
    hour_start + 3600 + config.allowed_lateness_secs as i64 <= now_unix
}

/// Leases `customer_hour` as `owner`, waiting while a worker holds it, at most [`BUSY_HOUR_TIMEOUT`].
pub(crate) async fn lease_hour_waiting<S: RollupStore>(
    config: &AggregatorConfig,
    rollup_store: &S,
    customer_hour: &CustomerHour,
    owner: &str,
) -> Result<JobLease, ReprocessError> {
    let never_stopped = CancellationToken::new();
    let leased = lease_hour_waiting_until(config, rollup_store, customer_hour, owner, &never_stopped).await?;
    Ok(leased.expect("only a cancelled token stops the wait"))
}

/// [`lease_hour_waiting`], or `None` once `shutdown` is cancelled while it waits. The wait is stopped only
/// between two attempts, never inside one, so a stopped wait holds no lease on the hour.
pub(crate) async fn lease_hour_waiting_until<S: RollupStore>(
    config: &AggregatorConfig,
    rollup_store: &S,
    customer_hour: &CustomerHour,
    owner: &str,
    shutdown: &CancellationToken,
) -> Result<Option<JobLease>, ReprocessError> {
    let deadline = tokio::time::Instant::now() + BUSY_HOUR_TIMEOUT;
    loop {
        if let Some(lease) = rollup_store.lease_hour(customer_hour, owner, config.lease()).await? {
            return Ok(Some(lease));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ReprocessError::Busy {
                customer_id: customer_hour.customer_id.as_str().to_owned(),
                hour_start: customer_hour.hour_start,
            });
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// One hour's counts before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourDiff {
    /// The customer-hour.
    pub customer_hour: CustomerHour,
    /// Per event type: (event type, events before, events after, distinct users before, after).
    pub event_types: Vec<(String, u64, u64, u64, u64)>,
    /// The hour's revision after the swap (`None` in a dry run).
    pub revision: Option<u32>,
}

impl HourDiff {
    /// Whether any count changed.
    pub fn changed(&self) -> bool {
        self.event_types.iter().any(|(_, events_before, events_after, users_before, users_after)| {
            events_before != events_after || users_before != users_after
        })
    }
}

fn diff(customer_hour: &CustomerHour, before: &[EventTypeRollup], after: &[EventTypeRollup]) -> HourDiff {
    let mut event_types: Vec<String> = before.iter().chain(after).map(|row| row.event_type.clone()).collect();
    event_types.sort();
    event_types.dedup();
    let find = |rows: &[EventTypeRollup], event_type: &str| {
        rows.iter().find(|row| row.event_type == event_type).map_or((0, 0), |row| (row.events, row.distinct_users))
    };
    HourDiff {
        customer_hour: customer_hour.clone(),
        event_types: event_types
            .into_iter()
            .map(|event_type| {
                let (events_before, users_before) = find(before, &event_type);
                let (events_after, users_after) = find(after, &event_type);
                (event_type, events_before, events_after, users_before, users_after)
            })
            .collect(),
        revision: None,
    }
}

/// What a reprocessing run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reprocessed {
    /// The hours recomputed (and, unless a dry run, swapped in), oldest first.
    pub diffs: Vec<HourDiff>,
    /// The hours left as they were, oldest first: past their horizon, their raw rows may have expired.
    pub refused: Vec<CustomerHour>,
}

/// Reprocesses every hour with data starting in `[from, to)` (of one customer, or all) as of `now_unix`,
/// but those past their horizon, which it refuses; `on_progress(done, total)` after each hour.
#[allow(clippy::too_many_arguments)]
pub async fn reprocess<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    customer_id: Option<&str>,
    from_unix: i64,
    to_unix: i64,
    dry_run: bool,
    now_unix: i64,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Reprocessed, ReprocessError> {
    let owner = format!("reprocess-{}", config.resolved_worker_id());
    let hours = rollup_store.hours_with_data(customer_id, from_unix, to_unix).await?;
    let mut diffs = Vec::with_capacity(hours.len());
    let mut refused = Vec::new();
    for (index, customer_hour) in hours.iter().enumerate() {
        let customer = customer_hour.customer_id.as_str();
        if config.raw_retention.is_past_horizon(customer_hour.hour_start, now_unix) {
            tracing::warn!(
                customer_id = customer,
                hour_start = customer_hour.hour_start,
                reason = %config.raw_retention.past_horizon_reason(),
                "not reprocessing an hour past its horizon; its rollup stays as it was"
            );
            refused.push(customer_hour.clone());
            on_progress(index + 1, hours.len());
            continue;
        }
        let is_final = is_final_at(config, customer_hour.hour_start, now_unix);
        let lease =
            if dry_run { None } else { Some(lease_hour_waiting(config, rollup_store, customer_hour, &owner).await?) };
        let before = rollup_store.current_rollup(customer_hour).await?;
        let aggregation =
            aggregate_hour(raw_store, customer, customer_hour.hour_start, is_final, config.bucket_concurrency);
        let lease_lost =
            || ReprocessError::LeaseLost { customer_id: customer.to_owned(), hour_start: customer_hour.hour_start };
        let rollup = match &lease {
            Some(lease) => holding_lease(config, rollup_store, lease, aggregation).await.ok_or_else(lease_lost)??,
            None => aggregation.await?,
        };
        let mut hour_diff = diff(customer_hour, &before, &rollup.event_types);
        if let Some(lease) = lease {
            match rollup_store.complete(&lease, &rollup).await? {
                Completion::Replaced { revision } => hour_diff.revision = Some(revision),
                Completion::LeaseLost => return Err(lease_lost()),
            }
        }
        diffs.push(hour_diff);
        on_progress(index + 1, hours.len());
    }
    Ok(Reprocessed { diffs, refused })
}
