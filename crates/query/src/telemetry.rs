//! The query service's metric names. Labels are bounded: method names and gRPC codes, never customers.

/// Calls by `method` and gRPC `code`.
pub const REQUESTS_TOTAL: &str = "hourglass_query_requests_total";
/// Call latency by `method`, authentication included.
pub const REQUEST_SECONDS: &str = "hourglass_query_request_seconds";

/// Report requests by cache `result` = hit | miss.
pub const CACHE_LOOKUPS_TOTAL: &str = "hourglass_query_cache_lookups_total";

/// Bytes the report cache counts (encoded responses, room for their gzip forms, and their keys), at most
/// `--query-cache-max-bytes`.
pub const CACHE_BYTES: &str = "hourglass_query_cache_bytes";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "Query calls, by method and gRPC code");
    metrics::describe_counter!(CACHE_LOOKUPS_TOTAL, "Report requests answered from the cache (hit) or the database");
    metrics::describe_gauge!(
        CACHE_BYTES,
        metrics::Unit::Bytes,
        "Bytes the report cache counts (responses, room for their gzip forms, keys)"
    );
    metrics::describe_histogram!(REQUEST_SECONDS, metrics::Unit::Seconds, "Query call latency, by method");
}
