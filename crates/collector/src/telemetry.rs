//! The collector's metric names, all in one place. Emitted per batch, never per event; labels are bounded
//! enums (no customer ids: a billion-event platform has too many customers for a label).

/// Events by outcome: `outcome` = accepted | rejected | throttled | unavailable.
pub const EVENTS_TOTAL: &str = "hourglass_collector_events_total";
/// Rejected events by `reason` (the proto's RejectionReason names).
pub const REJECTED_EVENTS_TOTAL: &str = "hourglass_collector_rejected_events_total";
/// Batches by ack `status` = accepted | throttled | invalid | unavailable.
pub const BATCHES_TOTAL: &str = "hourglass_collector_batches_total";
/// Seconds from handing a batch's records to the event log (Kafka: the produce request) to its
/// acknowledgement by every in-sync replica (`acks=all`): the produce latency.
pub const PUBLISH_SECONDS: &str = "hourglass_collector_publish_seconds";
/// Streaming calls in progress.
pub const ACTIVE_STREAMS: &str = "hourglass_collector_active_streams";
/// Outcome-only records (throttled or fully rejected batches) that could not be published: the ledger
/// undercounts those batches' received events. Non-zero means Kafka was failing.
pub const OUTCOME_RECORDS_LOST_TOTAL: &str = "hourglass_collector_outcome_records_lost_total";
/// Calls refused by authentication, by gRPC `code`.
pub const AUTH_FAILURES_TOTAL: &str = "hourglass_collector_auth_failures_total";
/// Unary calls refused because the memory budget stayed full for `--budget-wait-ms`.
pub const BUDGET_REFUSALS_TOTAL: &str = "hourglass_collector_budget_refusals_total";
/// Streams refused because their customer had `--max-streams-per-customer` open.
pub const STREAMS_REFUSED_TOTAL: &str = "hourglass_collector_streams_refused_total";
/// Bytes of the memory budget (`--max-in-flight-bytes`) not reserved by decoded batches.
pub const BUDGET_AVAILABLE_BYTES: &str = "hourglass_collector_budget_available_bytes";
/// Streams ended because their client read no ack for `--ack-write-timeout-secs`.
pub const STALLED_STREAMS_TOTAL: &str = "hourglass_collector_stalled_streams_total";
/// Events that broke a rule of their customer's tracking plan, by `rule` (the rejection reason's name
/// without its prefix) and `action` = rejected (enforce mode) | warned (accepted and counted).
pub const PLAN_VIOLATIONS_TOTAL: &str = "hourglass_collector_plan_violations_total";
/// Tracking plan versions loaded and compiled (a customer's first batch, or a new version after the
/// plan-cache TTL).
pub const PLANS_COMPILED_TOTAL: &str = "hourglass_collector_plans_compiled_total";
/// Failed reads of the tracking plan store (the cached plan stays in use; a customer without one gets
/// UNAVAILABLE).
pub const PLAN_STORE_ERRORS_TOTAL: &str = "hourglass_collector_plan_store_errors_total";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(BUDGET_REFUSALS_TOTAL, "Unary calls refused for a full memory budget");
    metrics::describe_counter!(STREAMS_REFUSED_TOTAL, "Streams refused for the per-customer stream limit");
    metrics::describe_gauge!(BUDGET_AVAILABLE_BYTES, "Bytes of the memory budget not reserved");
    metrics::describe_counter!(STALLED_STREAMS_TOTAL, "Streams ended because their client read no acks");
    metrics::describe_counter!(EVENTS_TOTAL, "Events seen by the collector, by outcome");
    metrics::describe_counter!(REJECTED_EVENTS_TOTAL, "Events rejected by validation, by reason");
    metrics::describe_counter!(BATCHES_TOTAL, "Batches acknowledged, by status");
    metrics::describe_histogram!(
        PUBLISH_SECONDS,
        metrics::Unit::Seconds,
        "Produce request to Kafka acknowledgement of a batch"
    );
    metrics::describe_gauge!(ACTIVE_STREAMS, "Streaming ingest calls in progress");
    metrics::describe_counter!(OUTCOME_RECORDS_LOST_TOTAL, "Outcome-only records that could not be published");
    metrics::describe_counter!(AUTH_FAILURES_TOTAL, "Calls refused by authentication, by gRPC code");
    metrics::describe_counter!(PLAN_VIOLATIONS_TOTAL, "Events that broke a tracking plan rule, by rule and action");
    metrics::describe_counter!(PLANS_COMPILED_TOTAL, "Tracking plan versions loaded and compiled");
    metrics::describe_counter!(PLAN_STORE_ERRORS_TOTAL, "Failed reads of the tracking plan store");
}
