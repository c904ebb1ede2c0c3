//! Hourglass's domain types and the seams between stages and their backends.
//!
//! - [`customer`]: who an event belongs to. A customer is always derived from an API key, never from a
//!   payload (invariant 4 of docs/architecture.md).
//! - [`api_key`]: the key format (recognisable prefix + checksum, so secret scanners find leaked keys),
//!   generation, parsing and hashing. Only the hash is ever stored.
//! - [`erasure`]: the [`ErasureStore`](erasure::ErasureStore) seam: per-user erasure requests, their plans
//!   and progress, and the salted hash that names the person instead of their id.
//! - [`key_store`]: the [`KeyStore`](key_store::KeyStore) seam: keys and per-customer limits.
//! - [`event_log`]: the [`EventLog`](event_log::EventLog) seam, where the collector appends batches, and
//!   the [`EventLogConsumer`](event_log::EventLogConsumer) seam, from which the ingestor reads them and
//!   commits its positions (Kafka in distributed mode, `log.db` in standalone mode).
//! - [`json_event`]: events written as JSON lines, the input of `hourglass send --file`.
//! - [`record`]: how a batch becomes an event-log record: schema version, headers, partition keys.
//! - [`record_view`]: the form a record's raw-store write takes: the header owned, each event's bytes
//!   borrowed from the record as they came.
//! - [`trace_context`]: a batch's W3C trace context in record headers, so the ingestor's span continues
//!   the collector's (OpenTelemetry API only; the binary owns the SDK and the exporter).
//! - [`raw_store`]: the [`RawStore`](raw_store::RawStore) seam: raw events, idempotent by event id.
//! - [`raw_block`]: the compressed event blocks both raw stores keep, their borrowing decoder, and the
//!   page window and de-duplication that read them back by event id.
//! - [`job_queue`]: the [`JobQueue`](job_queue::JobQueue) seam: customer-hours needing aggregation.
//! - [`rollup_store`]: the [`RollupStore`](rollup_store::RollupStore) seam: hourly rollups and the jobs
//!   that produce them, completed in one transaction.
//! - [`rollup_reader`]: the [`RollupReader`](rollup_reader::RollupReader) seam: what the query service
//!   reads (hourly rows, hour statuses, the ledger), possibly from a read replica.
//! - [`tracking_plan`]: tracking plans: the document, its compiled check of an event, and the
//!   [`PlanStore`](tracking_plan::store::PlanStore) seam that keeps their versions.
//! - [`numeric`]: sums of numeric properties that saturate at `±f64::MAX` instead of becoming infinite
//!   or NaN, so every stored number is finite.
//! - [`hll`]: the HyperLogLog sketch of distinct users stored with hourly rollups (1.6% standard error).
//! - [`hour`]: customer-hours, the unit of aggregation and reconciliation.
//! - [`retention`]: raw retention, the late-data window, and the horizon past which an hour's rollup is
//!   never recomputed (its raw rows may have expired).

#![warn(missing_docs)]

pub mod api_key;
pub mod customer;
pub mod erasure;
pub mod event_log;
pub mod hll;
pub mod hour;
pub mod job_queue;
pub mod json_event;
pub mod key_store;
pub mod numeric;
pub mod raw_block;
pub mod raw_store;
pub mod record;
pub mod record_view;
pub mod retention;
pub mod rollup_changes;
pub mod rollup_reader;
pub mod rollup_store;
pub mod trace_context;
pub mod tracking_plan;

/// The cause a seam error carries: the backend's own error, kept whole (not flattened into a string) so
/// logs and callers can walk the chain with [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use api_key::{ApiKey, KeyHash, KeyId, Scope};
pub use customer::CustomerId;
