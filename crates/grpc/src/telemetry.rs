//! The metric names of what every gRPC server shares: its connections. No labels: a process serves one
//! gRPC server (standalone serves ingest and query on one).

/// Connections closed as soon as accepted because `--max-connections` were open.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "hourglass_grpc_connections_refused_total";
/// Connections closed after `--idle-connection-timeout-secs` with no call open.
pub const CONNECTIONS_IDLE_CLOSED_TOTAL: &str = "hourglass_grpc_connections_idle_closed_total";
/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "hourglass_grpc_connections_open";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections closed as soon as accepted, at the --max-connections limit"
    );
    metrics::describe_counter!(
        CONNECTIONS_IDLE_CLOSED_TOTAL,
        "Connections closed after --idle-connection-timeout-secs with no call open"
    );
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Connections open now");
}
