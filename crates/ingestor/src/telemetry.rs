//! The ingestor's metric names, all in one place; emitted per record, never per event.

/// Records handled, by `result` = stored | dead_lettered.
pub const RECORDS_TOTAL: &str = "hourglass_ingestor_records_total";
/// Events written to the raw store.
pub const EVENTS_STORED_TOTAL: &str = "hourglass_ingestor_events_stored_total";
/// Events dropped before the raw store because their user was erased and is under suppression.
pub const EVENTS_ERASED_TOTAL: &str = "hourglass_ingestor_events_erased_total";
/// People whose events are dropped, as of the last read of the erasure requests.
pub const SUPPRESSED_USERS: &str = "hourglass_ingestor_suppressed_users";
/// Store writes that failed and will be retried.
pub const WRITE_RETRIES_TOTAL: &str = "hourglass_ingestor_write_retries_total";
/// Offset commits, by `result` = ok | failed.
pub const COMMITS_TOTAL: &str = "hourglass_ingestor_commits_total";
/// Dirty-mark flushes that failed (the commit waits for the next one).
pub const DIRTY_MARK_FAILURES_TOTAL: &str = "hourglass_ingestor_dirty_mark_failures_total";
/// Records being written now.
pub const IN_FLIGHT_RECORDS: &str = "hourglass_ingestor_in_flight_records";
/// Seconds one attempt to write a group of records to the raw store took, by `result` = ok | failed.
pub const RAW_WRITE_SECONDS: &str = "hourglass_ingestor_raw_write_seconds";
/// Records of a partition (`partition`) the consumer group has not committed yet, as this replica last
/// knew it (Kafka's statistics, every 5 s by default); 0 for a partition it no longer reads (another
/// replica reports it), so take the `max by (partition)` over replicas.
pub const CONSUMER_LAG_RECORDS: &str = "hourglass_ingestor_consumer_lag_records";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(RECORDS_TOTAL, "Event-log records handled, by result");
    metrics::describe_counter!(EVENTS_STORED_TOTAL, "Events written to the raw store");
    metrics::describe_counter!(EVENTS_ERASED_TOTAL, "Events dropped because their user was erased (suppression)");
    metrics::describe_gauge!(SUPPRESSED_USERS, "Erased users whose events are dropped at ingestion");
    metrics::describe_counter!(WRITE_RETRIES_TOTAL, "Raw-store writes retried");
    metrics::describe_counter!(COMMITS_TOTAL, "Offset commits, by result");
    metrics::describe_counter!(DIRTY_MARK_FAILURES_TOTAL, "Failed attempts to mark dirty customer-hours");
    metrics::describe_gauge!(IN_FLIGHT_RECORDS, "Records being written");
    metrics::describe_histogram!(RAW_WRITE_SECONDS, metrics::Unit::Seconds, "Raw-store write attempts, by result");
    metrics::describe_gauge!(CONSUMER_LAG_RECORDS, "Records of a partition not committed yet, by partition");
}
