//! The aggregator's metric names, all in one place; emitted per job.

/// Jobs finished, by `result` = replaced | lease_lost | failed | expired (refused: the hour is past its
/// horizon, its raw rows may have expired; its rollup was left as it was).
pub const JOBS_TOTAL: &str = "hourglass_aggregator_jobs_total";
/// Raw events read by jobs.
pub const EVENTS_READ_TOTAL: &str = "hourglass_aggregator_events_read_total";
/// Rollup rows written.
pub const ROWS_WRITTEN_TOTAL: &str = "hourglass_aggregator_rows_written_total";
/// Seconds a job took, from lease to commit.
pub const JOB_SECONDS: &str = "hourglass_aggregator_job_seconds";

/// Seconds since the oldest hour still waiting for its final rollup closed (0 when none waits): the
/// aggregation lag to alert on.
pub const JOB_LAG_SECONDS: &str = "hourglass_aggregator_job_lag_seconds";
/// Customer-hours waiting for their final rollup, open hours with data included (the dirty-hour
/// backlog; the same for every aggregator replica, as it is read from the shared store).
pub const UNFINALIZED_HOURS: &str = "hourglass_aggregator_unfinalized_hours";
/// Of the unfinalized customer-hours, those holding data no rollup counts yet (marked since their last
/// provisional or final rollup): what the next jobs will do.
pub const STALE_HOURS: &str = "hourglass_aggregator_stale_hours";
/// Final hours whose stored and counted differed at the last verification (`hourglass verify`, or the
/// aggregator's own with `--ledger-verify-interval-secs`, over the hours it recounted): alert when above
/// zero.
pub const LEDGER_UNBALANCED_HOURS: &str = "hourglass_ledger_unbalanced_final_hours";

/// Erasure requests not done yet (pending or erasing), in the shared store; set by each worker that runs
/// erasures, at every poll.
pub const ERASURE_REQUESTS_PENDING: &str = "hourglass_erasure_requests_pending";
/// Erasure request runs that ended, by `result` = done | failed | stopped (a failed run's request is
/// resumed by the next run once its lease expires; a run stopped by shutdown gave its lease back, so at once).
pub const ERASURE_RUNS_TOTAL: &str = "hourglass_erasure_runs_total";
/// Events of erased users deleted from the raw store (as counted when each request was planned), hour
/// by hour as each is erased and recomputed.
pub const ERASURE_EVENTS_ERASED_TOTAL: &str = "hourglass_erasure_events_erased_total";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(JOBS_TOTAL, "Aggregation jobs finished, by result");
    metrics::describe_counter!(EVENTS_READ_TOTAL, "Raw events read by aggregation jobs");
    metrics::describe_counter!(ROWS_WRITTEN_TOTAL, "Hourly rollup rows written");
    metrics::describe_histogram!(JOB_SECONDS, metrics::Unit::Seconds, "Aggregation job duration");
    metrics::describe_gauge!(JOB_LAG_SECONDS, metrics::Unit::Seconds, "Age of the oldest unfinalized closed hour");
    metrics::describe_gauge!(UNFINALIZED_HOURS, "Customer-hours waiting for their final rollup");
    metrics::describe_gauge!(STALE_HOURS, "Customer-hours with data no rollup counts yet");
    metrics::describe_gauge!(ERASURE_REQUESTS_PENDING, "Erasure requests not done yet");
    metrics::describe_counter!(ERASURE_RUNS_TOTAL, "Erasure request runs that ended, by result");
    metrics::describe_counter!(ERASURE_EVENTS_ERASED_TOTAL, "Events of erased users deleted from the raw store");
    metrics::describe_gauge!(LEDGER_UNBALANCED_HOURS, "Final hours whose stored and counted differ (last verify)");
}
