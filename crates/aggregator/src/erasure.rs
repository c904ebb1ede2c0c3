//! Per-user erasure: find the hours holding one person's raw events, delete those events, and recompute
//! each hour through the same leased, atomic swap as [`reprocess`](crate::reprocess), so exact distinct
//! users and sketches no longer include the person.
//!
//! # Finding the hours: a bounded scan
//! The hours are found by scanning the customer's hours with data that are still inside their horizon
//! (`hourglass_core::retention`: older hours are never recomputed, and their raw rows expire within the
//! margin), hashing the user of every event with the salt ([`UserMatcher`]). An index from (customer,
//! user) to hours would answer at once, but the ingestor would write it for every record: a row per
//! distinct user and hour, which for a busy customer is millions of rows an hour on the ingest path, for
//! an operation that runs a few times a month. The scan reads what an aggregation reads (README
//! "Erasure" has the measured figures).
//!
//! # The run of a request, and resuming it
//! A request ([`ErasureStore`]) is leased by one run. A pending request is planned first: the hours found,
//! with the person's events in each, are recorded in one step and the request becomes `erasing`. Then each
//! planned hour not yet done is leased like a job, its raw events of the person deleted
//! ([`RawStore::erase_user_events`]) and the hour recomputed and swapped in under that lease, and the
//! hour's new revision recorded with the request. A run that dies anywhere (kill -9, a failure) leaves the
//! request leased until its lease expires; the next run resumes with the hours not recorded as done
//! (deleting again finds nothing, recomputing again changes nothing but the revision), and never plans
//! again: a recount after a deletion would find nothing in an hour whose rollup still counts the person.
//!
//! A run stopped by shutdown (SIGTERM; [`run_request_until`]) stops at a safe point instead: while
//! scanning, which writes nothing, or between two hours, after the hour under way is swapped in and
//! recorded (an hour's work is never cut: its hour lease would be left until it expired). It then gives
//! the request's lease back ([`ErasureStore::release_erasure`]), holding no hour lease, so the next run
//! takes the request at once and resumes it as above.
//!
//! A request records until when the person's events are to be dropped at ingestion (`suppress_until`,
//! listed by [`ErasureStore::suppressed_users`]); until the ingestor applies that list, a record
//! redelivered or replayed after a run writes the person's events back, and erasing again removes them
//! (docs/guarantees.md, "Erasure").

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{
    ErasureHour, ErasureLease, ErasureRequest, ErasureSalt, ErasureState, ErasureStore, ErasureStoreError,
    FindHoursError, SaltTooShort, UserHash, UserMatcher,
};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::raw_store::{RawStore, RawStoreError};
use hourglass_core::rollup_store::{Completion, RollupStore, RollupStoreError};
use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::reprocess::{ReprocessError, is_final_at, lease_hour_waiting_until};
use crate::worker::{aggregate_hour, holding_lease};

pub use hourglass_config::ErasureConfig;
pub use hourglass_core::erasure::FoundHours;

/// What the aggregator reads of [`ErasureConfig`]: the salt, checked, and the end of suppression.
pub trait ErasureSettings {
    /// The salt, refused when missing or too short.
    fn erasure_salt(&self) -> Result<ErasureSalt, ErasureError>;

    /// Until when a request recorded at `now` suppresses the person's events.
    fn suppress_until(&self, now: DateTime<Utc>) -> DateTime<Utc>;
}

impl ErasureSettings for ErasureConfig {
    fn erasure_salt(&self) -> Result<ErasureSalt, ErasureError> {
        let secret = self.salt.as_deref().ok_or(ErasureError::NoSalt)?;
        Ok(ErasureSalt::new(secret)?)
    }

    fn suppress_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::days(i64::from(self.suppress_days))
    }
}

/// Why an erasure stopped.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// No salt is configured.
    #[error("no erasure salt: set --erasure-salt or HOURGLASS_ERASURE_SALT (the same secret in every role)")]
    NoSalt,
    /// The salt is too short.
    #[error(transparent)]
    Salt(#[from] SaltTooShort),
    /// The raw store failed.
    #[error(transparent)]
    RawStore(#[from] RawStoreError),
    /// The rollup store failed.
    #[error(transparent)]
    RollupStore(#[from] RollupStoreError),
    /// The erasure store failed.
    #[error(transparent)]
    ErasureStore(#[from] ErasureStoreError),
    /// Finding the person's hours failed.
    #[error(transparent)]
    FindHours(#[from] FindHoursError),
    /// An hour could not be leased or its lease was lost.
    #[error(transparent)]
    Hour(#[from] ReprocessError),
    /// The request's lease was lost (it expired, or another run leased it).
    #[error("lost the lease on erasure request {0} (it expired or another run took it); run again to resume")]
    LeaseLost(String),
    /// Shutdown stopped the run between two hours (or while it scanned, before planning), and its lease
    /// was given back: the next run takes the request at once and resumes on the hours not done.
    #[error("erasure request {request_id} stopped by shutdown with {hours_done} hours done, {hours_left} left")]
    Stopped {
        /// The request.
        request_id: String,
        /// Planned hours done (0 when stopped while scanning).
        hours_done: usize,
        /// Planned hours not done (0 when stopped while scanning: nothing was planned yet).
        hours_left: usize,
    },
}

/// What a run is doing, for progress output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureProgress {
    /// Scanning the customer's hours for the person's events: `done` of `total` hours.
    Scanning {
        /// Hours scanned.
        done: usize,
        /// Hours to scan.
        total: usize,
    },
    /// Erasing and recomputing the planned hours: `done` of `total`.
    Erasing {
        /// Hours done.
        done: usize,
        /// Hours planned.
        total: usize,
    },
}

/// Scans the customer's hours with data whose raw rows may still exist for the matcher's user, oldest
/// first ([`find_user_hours`](hourglass_core::erasure::find_user_hours)); `on_progress` after each hour.
pub async fn find_hours<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    matcher: &UserMatcher,
    now_unix: i64,
    mut on_progress: impl FnMut(ErasureProgress),
) -> Result<FoundHours, ErasureError> {
    let found = hourglass_core::erasure::find_user_hours(
        raw_store,
        rollup_store,
        &config.raw_retention,
        matcher,
        now_unix,
        |done, total| on_progress(ErasureProgress::Scanning { done, total }),
    )
    .await;
    Ok(found?)
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erased {
    /// The request, done.
    pub request: ErasureRequest,
    /// Its planned hours, each with its new revision.
    pub hours: Vec<ErasureHour>,
    /// Hours past their horizon found when this run planned the request (empty when it resumed one).
    pub past_horizon: Vec<ErasureHour>,
}

/// Records a request to erase `user_id` of `customer_id` (or returns the open one for that person).
pub async fn request<E: ErasureStore>(
    erasure_config: &ErasureConfig,
    erasure_store: &E,
    customer_id: &CustomerId,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<ErasureRequest, ErasureError> {
    let salt = erasure_config.erasure_salt()?;
    let user_hash = UserHash::of(&salt, customer_id.as_str(), user_id);
    Ok(erasure_store.request_erasure(customer_id, user_hash, erasure_config.suppress_until(now)).await?)
}

/// Runs a leased request to its end: plans it if pending, then erases and recomputes each planned hour
/// not done yet, then marks it done. `on_progress` after each step.
#[allow(clippy::too_many_arguments)]
pub async fn run_request<R: RawStore, S: RollupStore, E: ErasureStore>(
    config: &AggregatorConfig,
    salt: &ErasureSalt,
    raw_store: &R,
    rollup_store: &S,
    erasure_store: &E,
    lease: &ErasureLease,
    now_unix: i64,
    on_progress: impl FnMut(ErasureProgress),
) -> Result<Erased, ErasureError> {
    // A token never cancelled: this run is stopped only by dropping it (a crash, as far as the lease goes).
    let never = CancellationToken::new();
    run_request_until(config, salt, raw_store, rollup_store, erasure_store, lease, now_unix, &never, on_progress).await
}

/// [`run_request`], stopped at a safe point once `shutdown` is cancelled: while scanning (nothing is
/// written before the plan) or between two hours, never inside an hour's delete, recompute and swap, which
/// finishes first (so no hour lease is held at that point). A stopped run gives the request's lease back
/// ([`ErasureStore::release_erasure`]) and returns [`ErasureError::Stopped`]; the next run leases the
/// request at once and resumes on the hours not done.
#[allow(clippy::too_many_arguments)]
pub async fn run_request_until<R: RawStore, S: RollupStore, E: ErasureStore>(
    config: &AggregatorConfig,
    salt: &ErasureSalt,
    raw_store: &R,
    rollup_store: &S,
    erasure_store: &E,
    lease: &ErasureLease,
    now_unix: i64,
    shutdown: &CancellationToken,
    mut on_progress: impl FnMut(ErasureProgress),
) -> Result<Erased, ErasureError> {
    let request = &lease.request;
    let lease_lost = || ErasureError::LeaseLost(request.id.clone());
    let stop = |hours_done, hours_left| stop_run(erasure_store, lease, hours_done, hours_left);
    let matcher = UserMatcher::new(salt, request.customer_id.clone(), request.user_hash);
    let mut past_horizon = Vec::new();
    if request.state == ErasureState::Pending {
        let scan = find_hours(config, raw_store, rollup_store, &matcher, now_unix, &mut on_progress);
        // The scan only reads, so it may be dropped anywhere: the request stays pending and is scanned again.
        let scanned = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            scanned = holding_erasure_lease(config, erasure_store, lease, scan) => Some(scanned),
        };
        let Some(scanned) = scanned else {
            return Err(stop(0, 0).await);
        };
        let found = scanned.ok_or_else(lease_lost)??;
        for hour in &found.past_horizon {
            tracing::warn!(
                request_id = %request.id,
                customer_id = %request.customer_id,
                hour_start = hour.customer_hour.hour_start,
                events = hour.events,
                "an hour past its horizon holds events of an erased user: its rollup is not recomputed and its \
                 raw rows expire within the retention's margin"
            );
        }
        past_horizon = found.past_horizon;
        if !erasure_store.plan_erasure(lease, &found.hours).await? {
            return Err(lease_lost());
        }
    }
    let planned = erasure_store.erasure_hours(&request.id).await?;
    let total = planned.len();
    let (finished, left): (Vec<&ErasureHour>, Vec<&ErasureHour>) =
        planned.iter().partition(|hour| hour.revision.is_some());
    on_progress(ErasureProgress::Erasing { done: finished.len(), total });
    let owner = format!("erase-{}", config.resolved_worker_id());
    for (done, hour) in (finished.len() + 1..).zip(left) {
        if shutdown.is_cancelled() {
            return Err(stop(done - 1, total - (done - 1)).await);
        }
        let work =
            erase_hour(config, raw_store, rollup_store, &matcher, &hour.customer_hour, &owner, now_unix, shutdown);
        let erased = holding_erasure_lease(config, erasure_store, lease, work).await.ok_or_else(lease_lost)??;
        let Some(revision) = erased else {
            // Stopped while a worker held the hour: nothing of it was done.
            return Err(stop(done - 1, total - (done - 1)).await);
        };
        if !erasure_store.record_erased_hour(lease, &hour.customer_hour, revision).await? {
            return Err(lease_lost());
        }
        metrics::counter!(crate::telemetry::ERASURE_EVENTS_ERASED_TOTAL).increment(hour.events);
        on_progress(ErasureProgress::Erasing { done, total });
    }
    if !erasure_store.finish_erasure(lease).await? {
        return Err(lease_lost());
    }
    let request = erasure_store.erasure(&request.id).await?.ok_or_else(lease_lost)?;
    let hours = erasure_store.erasure_hours(&request.id).await?;
    Ok(Erased { request, hours, past_horizon })
}

/// Deletes the person's events of one hour and recomputes it under the hour's lease; returns the hour's
/// new revision. An hour that passed its horizon since it was planned is only deleted from, not
/// recomputed (a recomputation could undercount), and recorded with revision 0. `None`, with nothing
/// done, if `shutdown` came while a worker held the hour (the wait may last minutes); once the hour is
/// leased, its work runs to its end.
#[allow(clippy::too_many_arguments)]
async fn erase_hour<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    matcher: &UserMatcher,
    customer_hour: &CustomerHour,
    owner: &str,
    now_unix: i64,
    shutdown: &CancellationToken,
) -> Result<Option<u32>, ErasureError> {
    let hour_start = customer_hour.hour_start;
    if config.raw_retention.is_past_horizon(hour_start, now_unix) {
        raw_store.erase_user_events(matcher, hour_start).await?;
        return Ok(Some(0));
    }
    let Some(job) = lease_hour_waiting_until(config, rollup_store, customer_hour, owner, shutdown).await? else {
        return Ok(None);
    };
    let customer_id = customer_hour.customer_id.as_str();
    let work = async {
        raw_store.erase_user_events(matcher, hour_start).await?;
        let is_final = is_final_at(config, hour_start, now_unix);
        aggregate_hour(raw_store, customer_id, hour_start, is_final, config.bucket_concurrency).await
    };
    let hour_lease_lost =
        || ReprocessError::LeaseLost { customer_id: customer_id.to_owned(), hour_start: customer_hour.hour_start };
    let rollup = holding_lease(config, rollup_store, &job, work).await.ok_or_else(hour_lease_lost)??;
    match rollup_store.complete(&job, &rollup).await? {
        Completion::Replaced { revision } => Ok(Some(revision)),
        Completion::LeaseLost => Err(hour_lease_lost().into()),
    }
}

/// Gives back the lease of a run stopped by shutdown, logs what was stopped, and returns the error saying
/// so. A release that fails leaves the lease to expire, as a crash would: the next run resumes then.
async fn stop_run<E: ErasureStore>(
    erasure_store: &E,
    lease: &ErasureLease,
    hours_done: usize,
    hours_left: usize,
) -> ErasureError {
    let request_id = &lease.request.id;
    match erasure_store.release_erasure(lease).await {
        Ok(true) => tracing::info!(
            %request_id,
            hours_done,
            hours_left,
            "shutdown: erasure request stopped between hours and its lease given back; the next run resumes it at once"
        ),
        Ok(false) => tracing::info!(
            %request_id,
            hours_done,
            hours_left,
            "shutdown: erasure request stopped; its lease was already lost, so whoever holds it now resumes it"
        ),
        Err(error) => tracing::warn!(
            %request_id,
            hours_done,
            hours_left,
            %error,
            "shutdown: erasure request stopped but its lease could not be given back; resumed once it expires"
        ),
    }
    ErasureError::Stopped { request_id: request_id.clone(), hours_done, hours_left }
}

/// Runs `work` while renewing the request's lease every third of its length; `None` if it was lost.
async fn holding_erasure_lease<E: ErasureStore, T>(
    config: &AggregatorConfig,
    erasure_store: &E,
    lease: &ErasureLease,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut renewal = tokio::time::interval(config.lease() / 3);
    renewal.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            result = &mut work => return Some(result),
            _ = renewal.tick() => match erasure_store.renew_erasure(lease, config.lease()).await {
                Ok(true) => {}
                Ok(false) => return None,
                // Not fatal: the next renewal may work, and every write checks the lease anyway.
                Err(error) => tracing::warn!(%error, "cannot renew an erasure lease"),
            },
        }
    }
}

/// Leases the oldest request that is not done and not under a live lease (one a crashed run left, or
/// one recorded by the admin service), for `lease` as configured.
pub async fn lease_next<E: ErasureStore>(
    config: &AggregatorConfig,
    erasure_store: &E,
) -> Result<Option<ErasureLease>, ErasureError> {
    let owner = format!("erase-{}", config.resolved_worker_id());
    Ok(erasure_store.lease_next_erasure(&owner, config.lease()).await?)
}

/// Leases the request `id`, waiting while another run's lease on it is live, at most `timeout`.
pub async fn lease_request<E: ErasureStore>(
    config: &AggregatorConfig,
    erasure_store: &E,
    id: &str,
    timeout: Duration,
) -> Result<Option<ErasureLease>, ErasureError> {
    let owner = format!("erase-{}", config.resolved_worker_id());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(lease) = erasure_store.lease_erasure(id, &owner, config.lease()).await? {
            return Ok(Some(lease));
        }
        let done = erasure_store.erasure(id).await?.is_none_or(|request| request.state == ErasureState::Done);
        if done || tokio::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs erasure requests in the background, as a job like the others: leases the oldest request that is
/// not done and not under a live lease ([`lease_next`]: one recorded by the admin service, or one a
/// crashed run left once its lease expired), runs it to its end, and looks again every
/// `--aggregator-poll-interval-ms` when there was none, until `shutdown`. Progress goes to the log (each
/// planned hour as it is done) and to the metrics of [`telemetry`](crate::telemetry). On `shutdown` the run
/// stops at the next safe point (the hour under way finishes) and gives the request's lease back
/// ([`run_request_until`]), so another replica, or this one at its next start, resumes it at once. A run
/// that fails or dies (kill -9) leaves the request leased until its lease expires; the next run resumes
/// it on the hours not done.
pub async fn run_requests<R: RawStore, S: RollupStore, E: ErasureStore>(
    config: &AggregatorConfig,
    salt: &ErasureSalt,
    raw_store: &R,
    rollup_store: &S,
    erasure_store: &E,
    shutdown: &CancellationToken,
) {
    crate::telemetry::describe();
    tracing::info!("erasure requests run by this worker");
    while !shutdown.is_cancelled() {
        match erasure_store.list_erasures(None).await {
            Ok(requests) => {
                let pending = requests.iter().filter(|request| request.state != ErasureState::Done).count();
                metrics::gauge!(crate::telemetry::ERASURE_REQUESTS_PENDING).set(pending as f64);
            }
            Err(error) => tracing::warn!(%error, "cannot count the erasure requests not done"),
        }
        let leased = match lease_next(config, erasure_store).await {
            Ok(leased) => leased,
            Err(error) => {
                tracing::warn!(%error, "cannot lease an erasure request; retrying");
                None
            }
        };
        let Some(lease) = leased else {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(config.poll_interval_ms)) => {}
            }
            continue;
        };
        // Not raced against `shutdown`: dropping the run inside an hour would keep the hour's lease and the
        // request's until they expire. The run watches `shutdown` itself and stops between hours.
        run_logged(config, salt, raw_store, rollup_store, erasure_store, &lease, shutdown).await;
    }
}

/// [`run_request`] with its progress and end in the log and the metrics.
async fn run_logged<R: RawStore, S: RollupStore, E: ErasureStore>(
    config: &AggregatorConfig,
    salt: &ErasureSalt,
    raw_store: &R,
    rollup_store: &S,
    erasure_store: &E,
    lease: &ErasureLease,
    shutdown: &CancellationToken,
) {
    let request = &lease.request;
    let now_unix = Utc::now().timestamp();
    tracing::info!(request_id = %request.id, customer_id = %request.customer_id, state = %request.state, "erasure request leased");
    let mut last_done = 0;
    let progress = |step: ErasureProgress| match step {
        ErasureProgress::Scanning { done, total } if done == total => {
            tracing::info!(request_id = %request.id, hours_scanned = total, "erasure request: scan done");
        }
        ErasureProgress::Scanning { .. } => {}
        ErasureProgress::Erasing { done, total } => {
            if done > last_done {
                tracing::info!(request_id = %request.id, hours_done = done, hours_planned = total, "erasure request: hour erased and recomputed");
            }
            last_done = done;
        }
    };
    let result =
        run_request_until(config, salt, raw_store, rollup_store, erasure_store, lease, now_unix, shutdown, progress)
            .await;
    match result {
        Ok(erased) => {
            let events: u64 = erased.hours.iter().map(|hour| hour.events).sum();
            metrics::counter!(crate::telemetry::ERASURE_RUNS_TOTAL, "result" => "done").increment(1);
            tracing::info!(
                request_id = %erased.request.id,
                hours = erased.hours.len(),
                events,
                past_horizon_hours = erased.past_horizon.len(),
                "erasure request done"
            );
        }
        // Logged with what it left when the lease was given back.
        Err(ErasureError::Stopped { .. }) => {
            metrics::counter!(crate::telemetry::ERASURE_RUNS_TOTAL, "result" => "stopped").increment(1);
        }
        Err(error) => {
            metrics::counter!(crate::telemetry::ERASURE_RUNS_TOTAL, "result" => "failed").increment(1);
            tracing::warn!(request_id = %request.id, %error, "erasure request run failed; resumed once its lease expires");
        }
    }
}
