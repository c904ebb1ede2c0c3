//! The event log seams: the durable, partitioned log between the collector and the ingestor.
//!
//! Distributed mode uses Apache Kafka (`hourglass-kafka`); standalone mode the SQLite log of
//! `hourglass-embedded` (`log.db`). Each implements both sides:
//! - [`EventLog`], the write side. The contract that matters: [`EventLog::append`] resolves `Ok` only
//!   once the record is durable (Kafka: acknowledged by all in-sync replicas), so the collector can ack
//!   the client.
//! - [`EventLogConsumer`], the read side: yields [`ConsumedRecord`]s in groups and commits
//!   [`CommitPosition`]s ("everything before this offset is done"). What is not committed is delivered
//!   again to the next consumer of the same group, which is what lets the ingestor commit only below
//!   what it has stored and marked (invariant 1 of docs/architecture.md).

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::BoxError;

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

/// A record read from the event log, owned: it outlives the read that produced it (the ingestor writes
/// it while the consumer reads on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key (the customer, possibly salted). Hourglass writes text keys; a key that is not UTF-8 (a
    /// foreign producer's) is read lossily, as it would be dead-lettered anyway.
    pub key: String,
    /// The encoded record; empty if it has none.
    pub payload: Vec<u8>,
    /// Its headers, in the order they were written (a header without a value reads as empty).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where it comes from, as `topic/partition/offset`: for logs and the dead-letter source header.
    pub source: String,
}

impl ConsumedRecord {
    /// The value of its first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_slice())
    }
}

/// A position to commit: every record of `partition` below `next_offset` is done, so a consumer of the
/// same group starts there after a restart or a rebalance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitPosition {
    /// The partition.
    pub partition: i32,
    /// The first offset not done.
    pub next_offset: i64,
}

/// How far a consumer is behind one partition of its topic: records written there that its group has
/// not committed yet. The ingestor exports it per partition as its consumer-lag metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// Records of the partition at or after the group's committed position.
    pub records: i64,
}

/// Errors from the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The log did not confirm the record in time, or cannot be reached. The record may or may not
    /// have been stored; appending it again is safe because consumers are idempotent by event id.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The log refused the record itself (too large, unknown topic); retrying will not help.
    #[error("event log rejected the record: {0}")]
    Rejected(#[source] BoxError),
    /// The log client is in a state it cannot leave (e.g. a fatal idempotent-producer error); the
    /// process should be restarted.
    #[error("event log client failed fatally: {0}")]
    Fatal(#[source] BoxError),
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

/// The read side of an event log: a member of a consumer group (Kafka) or a named consumer (`log.db`)
/// reading the `events` topic from its group's committed positions on.
///
/// Delivery is at least once: a record is delivered again to the next consumer of the group unless a
/// position past it was committed. Within a partition, records come in offset order.
pub trait EventLogConsumer: Send + 'static {
    /// Waits until at least one record is there, then returns it with the records already waiting
    /// behind it, at most `max_records` (at least 1) in all, in offset order within each partition. It
    /// never returns an empty group.
    ///
    /// Cancel-safe: dropping the future before it resolves loses no record (the next call returns it),
    /// so a caller may `select!` on it. Errors the implementation can retry (a broker that is down) it
    /// retries and logs itself; an error returned here means this consumer cannot go on.
    fn next_records(
        &mut self,
        max_records: usize,
    ) -> impl Future<Output = Result<Vec<ConsumedRecord>, EventLogError>> + Send;

    /// Commits `positions`: for each partition, every record below its `next_offset` is done. Resolves
    /// once the log has taken them; a commit may still complete in the background (Kafka commits
    /// asynchronously), and [`EventLogConsumer::close`] waits for it. A failed commit loses nothing: the
    /// records are delivered again. [`EventLogError::Fatal`] means committing cannot work any more
    /// (the process should be restarted); other errors may pass at the next commit.
    fn commit(&mut self, positions: &[CommitPosition]) -> impl Future<Output = Result<(), EventLogError>> + Send;

    /// The lag of each partition this consumer reads, as last known: it costs no round trip, so it may
    /// be a few seconds old (Kafka reports it with the client's statistics, every
    /// `statistics.interval.ms`) and is empty until first known. A partition whose lag is unknown (not
    /// fetched from yet) is left out rather than reported as 0.
    fn lag(&self) -> Vec<PartitionLag>;

    /// Makes the commits made so far durable, then leaves the group, so another member takes the
    /// partitions at once.
    fn close(self) -> impl Future<Output = Result<(), EventLogError>> + Send
    where
        Self: Sized;
}
