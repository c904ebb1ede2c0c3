//! The ingestor's metric names, all in one place; emitted per record, never per event.

/// Records handled, by `result` = stored | dead_lettered.
pub const RECORDS_TOTAL: &str = "hourglass_ingestor_records_total";
/// Events written to the raw store.
pub const EVENTS_STORED_TOTAL: &str = "hourglass_ingestor_events_stored_total";
/// Store writes that failed and will be retried.
pub const WRITE_RETRIES_TOTAL: &str = "hourglass_ingestor_write_retries_total";
/// Offset commits, by `result` = ok | failed.
pub const COMMITS_TOTAL: &str = "hourglass_ingestor_commits_total";
/// Dirty-mark flushes that failed (the commit waits for the next one).
pub const DIRTY_MARK_FAILURES_TOTAL: &str = "hourglass_ingestor_dirty_mark_failures_total";
/// Records being written now.
pub const IN_FLIGHT_RECORDS: &str = "hourglass_ingestor_in_flight_records";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(RECORDS_TOTAL, "Event-log records handled, by result");
    metrics::describe_counter!(EVENTS_STORED_TOTAL, "Events written to the raw store");
    metrics::describe_counter!(WRITE_RETRIES_TOTAL, "Raw-store writes retried");
    metrics::describe_counter!(COMMITS_TOTAL, "Offset commits, by result");
    metrics::describe_counter!(DIRTY_MARK_FAILURES_TOTAL, "Failed attempts to mark dirty customer-hours");
    metrics::describe_gauge!(IN_FLIGHT_RECORDS, "Records being written");
}
