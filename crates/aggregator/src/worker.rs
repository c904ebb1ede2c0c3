//! The worker loop: lease jobs, fold their raw rows, replace their rollups; refuse the jobs of hours
//! past their horizon, whose raw rows may have expired.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hourglass_core::raw_store::{RawStore, RawStoreError};
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::{Completion, HourRollup, JobKind, JobLease, RollupStore, RollupStoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::config::AggregatorConfig;
use crate::rollup::HourAccumulator;
use crate::telemetry;

/// Leases the jobs due at `now_unix` (up to the configured concurrency) and runs them: final rollups
/// first, then provisional ones. Returns how many were leased. Jobs that fail are given back with a retry
/// delay; jobs of hours past their horizon at `now_unix` are refused for good (see
/// `hourglass_core::retention`); this only fails if leasing does.
pub async fn run_once<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    worker_id: &str,
    raw_store: &R,
    rollup_store: &S,
    now_unix: i64,
) -> Result<usize, RollupStoreError> {
    let provisional_interval = Duration::from_secs(config.provisional_interval_secs);
    run_due(config, worker_id, raw_store, rollup_store, now_unix, provisional_interval).await
}

/// [`run_once`], with provisional rollups due once `provisional_interval` has passed since the hour's
/// last one (none at all while `--provisional-interval-secs` is 0).
async fn run_due<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    worker_id: &str,
    raw_store: &R,
    rollup_store: &S,
    now_unix: i64,
    provisional_interval: Duration,
) -> Result<usize, RollupStoreError> {
    // An hour [h, h + 1h) is final once now >= h + 1h + lateness; later hours are provisional.
    let first_open_hour = now_unix - 3600 - config.allowed_lateness_secs as i64 + 1;
    let mut kinds = vec![JobKind::Final { hours_before_unix: first_open_hour }];
    if config.provisional_interval_secs > 0 {
        kinds.push(JobKind::Provisional { hours_from_unix: first_open_hour, min_interval: provisional_interval });
    }
    let mut leased = 0;
    for kind in kinds {
        let jobs = rollup_store.lease_jobs(worker_id, config.concurrency.max(1), config.lease(), kind).await?;
        let is_final = matches!(kind, JobKind::Final { .. });
        let runs = jobs.iter().map(|job| {
            // A root span per customer-hour job. It links to no batch: the job reads raw rows, which
            // keep no trace context, and a job folds every batch of its hour (thousands), so links to
            // them would be neither available nor useful (docs/logging.md, "Traces").
            let job_span = tracing::info_span!(
                parent: None,
                "aggregator.job",
                customer_id = job.customer_hour.customer_id.as_str(),
                hour_start = job.customer_hour.hour_start,
                is_final,
            );
            run_job(config, raw_store, rollup_store, job, is_final, now_unix).instrument(job_span)
        });
        futures::future::join_all(runs).await;
        leased += jobs.len();
    }
    Ok(leased)
}

async fn run_job<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    job: &JobLease,
    is_final: bool,
    now_unix: i64,
) {
    let started = Instant::now();
    let customer_id = job.customer_hour.customer_id.as_str();
    let hour_start = job.customer_hour.hour_start;
    // Checked before reading: the margin below the raw retention covers the time the read takes.
    if config.raw_retention.is_past_horizon(hour_start, now_unix) {
        refuse_past_horizon(config, rollup_store, job).await;
        return;
    }
    let aggregation = aggregate_hour(raw_store, customer_id, hour_start, is_final, config.bucket_concurrency);
    let rollup = match holding_lease(config, rollup_store, job, aggregation).await {
        Some(Ok(rollup)) => rollup,
        Some(Err(error)) => {
            give_back(config, rollup_store, job, &error.to_string()).await;
            return;
        }
        None => {
            count_lease_lost(job, "while aggregating");
            return;
        }
    };
    match rollup_store.complete(job, &rollup).await {
        Ok(Completion::Replaced { revision }) => {
            metrics::counter!(telemetry::JOBS_TOTAL, "result" => "replaced").increment(1);
            metrics::counter!(telemetry::ROWS_WRITTEN_TOTAL).increment(rollup.event_types.len() as u64);
            metrics::histogram!(telemetry::JOB_SECONDS).record(started.elapsed().as_secs_f64());
            tracing::info!(customer_id, hour_start, revision, is_final, events = rollup.events, "hour aggregated");
        }
        Ok(Completion::LeaseLost) => count_lease_lost(job, "at completion"),
        Err(error) => give_back(config, rollup_store, job, &error.to_string()).await,
    }
}

/// Refuses the job of an hour past its horizon: some of its raw rows may have expired, so a rollup
/// computed now would undercount it, and would replace one computed while its rows were all there. The
/// hour is given up for good rather than retried (retrying cannot bring rows back): the store stops
/// offering it until new data is marked, and its status keeps the reason, where `GetHourStatus` shows it.
/// The rollup, if any, stays as it was. An hour with a rollup loses only the data marked since (a
/// warning); an hour without one has none of its events counted, which is data loss (an error).
async fn refuse_past_horizon<S: RollupStore>(config: &AggregatorConfig, rollup_store: &S, job: &JobLease) {
    let customer_id = job.customer_hour.customer_id.as_str();
    let hour_start = job.customer_hour.hour_start;
    let has_rollup = match rollup_store.current_rollup(&job.customer_hour).await {
        Ok(rows) => !rows.is_empty(),
        Err(error) => {
            give_back(config, rollup_store, job, &error.to_string()).await;
            return;
        }
    };
    let horizon_reason = config.raw_retention.past_horizon_reason();
    let reason = format!("late data refused: {horizon_reason}");
    match rollup_store.refuse(job, &reason).await {
        Ok(true) => {}
        Ok(false) => {
            count_lease_lost(job, "while refusing an hour past its horizon");
            return;
        }
        // The lease then expires, and whoever leases the hour next refuses it.
        Err(error) => {
            tracing::warn!(customer_id, hour_start, %error, "cannot record the refusal of an hour past its horizon");
            return;
        }
    }
    metrics::counter!(telemetry::JOBS_TOTAL, "result" => "expired").increment(1);
    if has_rollup {
        tracing::warn!(
            customer_id,
            hour_start,
            generation = job.generation,
            reason = %horizon_reason,
            "late data refused: the hour's rollup stays as it was and does not count the data marked since"
        );
    } else {
        tracing::error!(
            customer_id,
            hour_start,
            generation = job.generation,
            reason = %horizon_reason,
            "hour refused with no rollup: none of its events are counted"
        );
    }
}

/// Counts and logs a job whose lease was lost: it expired, or the hour was leased again (by another
/// worker, or by one started under the same worker id). The store wrote nothing for it, and the hour's
/// current lease holder, or the next worker to lease it, aggregates it: no data is at risk, so this is a
/// warning, not an error.
fn count_lease_lost(job: &JobLease, when: &'static str) {
    metrics::counter!(telemetry::JOBS_TOTAL, "result" => "lease_lost").increment(1);
    tracing::warn!(
        customer_id = job.customer_hour.customer_id.as_str(),
        hour_start = job.customer_hour.hour_start,
        worker_id = %job.owner,
        when,
        "lease lost (expired, or the hour was leased again); nothing written, the hour's current lease aggregates it"
    );
}

/// Runs `work` while renewing `job`'s lease every third of its length, so a job longer than its lease
/// keeps it. `None` if the lease turned out to be lost (expired, or the hour leased again): the work is
/// then abandoned.
pub(crate) async fn holding_lease<S: RollupStore, T>(
    config: &AggregatorConfig,
    rollup_store: &S,
    job: &JobLease,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut renewal = tokio::time::interval(config.lease() / 3);
    renewal.tick().await; // the first tick is immediate: the lease was just taken
    loop {
        tokio::select! {
            result = &mut work => return Some(result),
            _ = renewal.tick() => match rollup_store.renew_lease(job, config.lease()).await {
                Ok(true) => {}
                Ok(false) => return None,
                // Not fatal: the next renewal may work, and completion checks the lease anyway.
                Err(error) => tracing::warn!(%error, "cannot renew a job lease"),
            },
        }
    }
}

/// Reads a customer-hour's raw events and outcome counts and folds them into its rollup.
///
/// Each bucket is folded in a task of its own, so the runtime's worker threads fold several buckets at
/// once (a fold is mostly CPU: decompressing, walking and de-duplicating events), at most
/// `bucket_concurrency` of them (at least one). Their accumulators are merged in bucket order, whichever
/// finishes first, so floating-point sums come out the same on every run and equal a sequential fold's.
/// Each bucket being folded holds its ids seen ([`hourglass_core::raw_block::SeenEventIds`]), so memory
/// grows with `bucket_concurrency`. Dropping the returned future (a lost lease) aborts the folds it
/// started.
pub async fn aggregate_hour<R: RawStore>(
    raw_store: &R,
    customer_id: &str,
    hour_start: i64,
    is_final: bool,
    bucket_concurrency: usize,
) -> Result<HourRollup, RawStoreError> {
    let job_span = tracing::Span::current();
    let folds = (0..raw_store.bucket_count()).map(|bucket| {
        // A store is a handle sharing its connections, so a task of its own costs one clone.
        let raw_store = raw_store.clone();
        let customer_id = customer_id.to_owned();
        let fold =
            async move { raw_store.fold_bucket(&customer_id, hour_start, bucket, HourAccumulator::default()).await };
        AbortOnDropHandle::new(tokio::spawn(fold.instrument(job_span.clone())))
    });
    let mut buckets = futures::stream::iter(folds).buffered(bucket_concurrency.max(1));
    let mut accumulator = HourAccumulator::default();
    while let Some(joined) = buckets.next().await {
        let bucket = match joined {
            Ok(folded) => folded?,
            // A fold that panicked panics the job, as it did when folds ran in the job's task.
            Err(join_error) if join_error.is_panic() => std::panic::resume_unwind(join_error.into_panic()),
            Err(join_error) => return Err(RawStoreError::Unavailable(Box::new(join_error))),
        };
        metrics::counter!(telemetry::EVENTS_READ_TOTAL).increment(bucket.events());
        accumulator.merge(bucket);
    }
    if accumulator.non_finite_values() > 0 {
        let non_finite_values = accumulator.non_finite_values();
        tracing::warn!(customer_id, hour_start, non_finite_values, "raw events hold NaN or infinite numbers; left out");
    }
    let outcomes = raw_store.read_outcomes(customer_id, hour_start).await?;
    Ok(accumulator.finish(outcomes, is_final))
}

async fn give_back<S: RollupStore>(config: &AggregatorConfig, rollup_store: &S, job: &JobLease, error: &str) {
    metrics::counter!(telemetry::JOBS_TOTAL, "result" => "failed").increment(1);
    let customer_id = job.customer_hour.customer_id.as_str();
    let hour_start = job.customer_hour.hour_start;
    tracing::warn!(customer_id, hour_start, worker_id = %job.owner, %error, "aggregation failed; will retry");
    match rollup_store.fail(job, error, Duration::from_secs(config.retry_after_secs)).await {
        Ok(true) => {}
        // Whoever holds the hour's current lease (or leases it next) retries it.
        Ok(false) => tracing::info!(customer_id, hour_start, "the failed job's lease was already lost; not recorded"),
        // The lease then simply expires and the job is retried after it.
        Err(release_error) => {
            tracing::warn!(%release_error, "could not give the job back; it is retried when its lease expires")
        }
    }
}

/// Runs jobs until `shutdown`: whenever none are due, waits `--aggregator-poll-interval-ms`. With
/// `--ledger-verify-interval-secs`, also recounts final hours periodically (`verify::run_periodically`).
pub async fn run<R: RawStore, S: RollupStore + RollupReader>(
    config: AggregatorConfig,
    raw_store: Arc<R>,
    rollup_store: Arc<S>,
    shutdown: CancellationToken,
) {
    run_nudged(config, raw_store, rollup_store, None, shutdown).await;
}

/// [`run`], and after each change of `nudges`, the provisional rollups of every open hour with data not
/// rolled up yet run at once, without waiting for `--provisional-interval-secs` since the hour's last
/// one (in passes of up to `--aggregator-concurrency` hours); a nudge during a job is taken once the jobs
/// running have ended. Standalone nudges
/// it when its ingestion has caught up with its log and no batch has arrived for a while, so that the
/// last data sent is counted as soon as it is stored (`crates/cli/src/standalone.rs`). Without
/// provisional rollups (`--provisional-interval-secs 0`) nudges change nothing.
pub async fn run_nudged<R: RawStore, S: RollupStore + RollupReader>(
    config: AggregatorConfig,
    raw_store: Arc<R>,
    rollup_store: Arc<S>,
    nudges: Option<watch::Receiver<u64>>,
    shutdown: CancellationToken,
) {
    telemetry::describe();
    let verification = crate::verify::run_periodically(&config, &*raw_store, &*rollup_store, &shutdown);
    tokio::join!(run_jobs(&config, &*raw_store, &*rollup_store, nudges, &shutdown), verification);
    tracing::info!("aggregator stopped");
}

async fn run_jobs<R: RawStore, S: RollupStore>(
    config: &AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    mut nudges: Option<watch::Receiver<u64>>,
    shutdown: &CancellationToken,
) {
    let worker_id = config.resolved_worker_id();
    tracing::info!(%worker_id, "aggregator running");
    let mut nudged = false;
    while !shutdown.is_cancelled() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        // A nudge sent while the last pass ran (a closed channel, its sender dropped, nudges no more).
        if let Some(nudges_rx) = nudges.as_mut()
            && nudges_rx.has_changed().unwrap_or(false)
        {
            nudges_rx.borrow_and_update();
            nudged = true;
        }
        let provisional_interval =
            if nudged { Duration::ZERO } else { Duration::from_secs(config.provisional_interval_secs) };
        let leased = match run_due(config, &worker_id, raw_store, rollup_store, now, provisional_interval).await {
            Ok(leased) => leased,
            Err(error) => {
                tracing::warn!(%error, "cannot lease jobs; retrying");
                0
            }
        };
        // A full pass may have left hours behind (it leases up to the concurrency): the nudge holds until a
        // pass takes fewer.
        nudged = nudged && leased >= config.concurrency.max(1);
        match rollup_store.backlog().await {
            Ok(backlog) => {
                let lag = backlog.oldest_unfinalized_hour.map_or(0, |hour_start| (now - hour_start - 3600).max(0));
                metrics::gauge!(telemetry::JOB_LAG_SECONDS).set(lag as f64);
                metrics::gauge!(telemetry::UNFINALIZED_HOURS).set(backlog.unfinalized_hours as f64);
                metrics::gauge!(telemetry::STALE_HOURS).set(backlog.stale_hours as f64);
            }
            Err(error) => tracing::warn!(%error, "cannot measure the job lag"),
        }
        if leased == 0 {
            let nudge = async {
                let sent = match nudges.as_mut() {
                    Some(nudges_rx) => nudges_rx.changed().await.is_ok(),
                    None => false,
                };
                if !sent {
                    // No nudges, or their sender is gone: the poll alone wakes this worker.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(config.poll_interval_ms)) => {}
                // `changed` marked it seen: the next pass is the nudged one.
                () = nudge => nudged = true,
            }
        }
    }
}
