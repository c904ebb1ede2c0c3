//! Hourglass's raw event store on CQL: written for ScyllaDB, runs unchanged on Apache Cassandra (which
//! the tests use; both speak CQL v4 and the `scylla` driver supports both).
//!
//! - [`config`]: nodes, keyspace, replication, TTL, compaction, buckets.
//! - [`schema`]: the keyspace and tables (`hourglass migrate cql`), idempotent.
//! - [`raw_store`]: [`CqlRawStore`], the [`RawStore`](hourglass_core::raw_store::RawStore): one row per
//!   (record, hour, bucket) holding the record's events there as a compressed block, written in prepared,
//!   token-aware, unlogged single-partition batches, idempotent by primary key; read block by block,
//!   each event id once as its last written copy.
//! - [`testing`]: a keyspace per test.
//!
//! # Layout: why partitions stay bounded
//! `raw_event_blocks` is partitioned by `(customer_id, hour_start, bucket)` with `bucket =
//! crc32(event_id) mod N`. One customer sending the whole 41k/s peak writes ~148M events an hour; N
//! buckets cut that into N partitions. The bucket depends on the event id alone, so a resent event lands
//! in the partition of its first copy, where reading de-duplicates it; a redelivered record rewrites its
//! own row (idempotency is the primary key plus last-write-wins on read, not a code path). N is fixed when the keyspace is created
//! and stored in it (`settings`), so every reader and writer agrees on it.

#![warn(missing_docs)]

pub mod config;
pub mod raw_store;
pub mod schema;
pub mod testing;

pub use config::CqlConfig;
pub use raw_store::CqlRawStore;

/// Errors while connecting to the store or managing its schema.
#[derive(Debug, thiserror::Error)]
pub enum CqlError {
    /// No session could be opened.
    #[error("cannot connect to CQL nodes {nodes}: {message}")]
    Connect {
        /// The configured nodes.
        nodes: String,
        /// Why.
        message: String,
    },
    /// A schema statement or query failed.
    #[error("CQL {what} failed: {message}")]
    Query {
        /// What was being done.
        what: String,
        /// Why.
        message: String,
    },
    /// The keyspace holds settings this build cannot use.
    #[error("invalid schema: {0}")]
    Schema(String),
}

impl CqlError {
    pub(crate) fn query(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        CqlError::Query { what: what.into(), message: error.to_string() }
    }
}
