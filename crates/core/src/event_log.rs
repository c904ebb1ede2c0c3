//! The [`EventLog`] seam: the durable, partitioned log between the collector and the ingestor.
//!
//! Distributed mode uses Apache Kafka (`hourglass-kafka`); standalone mode the SQLite log of
//! `hourglass-embedded` (`log.db`).
//! The contract that matters: [`EventLog::append`] resolves `Ok` only once the record is durable
//! (Kafka: acknowledged by all in-sync replicas), so the collector can ack the client.

use std::time::Duration;

use futures::future::BoxFuture;

/// The logical topics of the event log. Their names live in configuration, never in code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Event batches and outcome records from the collector.
    Events,
    /// Records a consumer could not process, with the reason in headers.
    DeadLetter,
}

/// One record to append.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// Records with the same key land in the same partition, in order.
    pub key: String,
    /// The encoded record.
    pub payload: Vec<u8>,
    /// Record headers: schema version, content type.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Where an appended record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

/// Errors from the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The log did not confirm the record in time, or cannot be reached. The record may or may not
    /// have been stored; appending it again is safe because consumers are idempotent by event id.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The log refused the record itself (too large, unknown topic); retrying will not help.
    #[error("event log rejected the record: {0}")]
    Rejected(String),
    /// The log client is in a state it cannot leave (e.g. a fatal idempotent-producer error); the
    /// process should be restarted.
    #[error("event log client failed fatally: {0}")]
    Fatal(String),
}

/// A durable, partitioned, append-only log.
pub trait EventLog: Send + Sync + 'static {
    /// Appends a record. The future resolves when the record is durable, or with an error once the
    /// log's delivery timeout has passed. When the client's local queue is full, `append` waits for
    /// room: that wait is the collector's backpressure.
    fn append(&self, topic: Topic, record: LogRecord) -> BoxFuture<'static, Result<Appended, EventLogError>>;

    /// Waits until every appended record is confirmed or failed, at most `timeout`.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), EventLogError>>;

    /// Checks the log is reachable and its topics exist, for readiness.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), EventLogError>>;
}
