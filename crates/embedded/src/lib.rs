//! Hourglass's embedded backends: the whole platform's state in SQLite files of one data directory, for
//! `hourglass standalone` (no Kafka, no CQL server, no Postgres).
//!
//! Each seam of `hourglass-core` has its embedded implementation here, held to the same conformance
//! suite as the distributed one (`hourglass-conformance`):
//! - [`log`]: the [`EventLog`](hourglass_core::event_log::EventLog) in `log.db`, with group commit so an
//!   append resolves only once its record is on disk, and its
//!   [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer), from which standalone's ingestion
//!   (the ingest loop of `hourglass-ingestor`) reads and in which it commits its offset;
//! - [`raw`]: the [`RawStore`](hourglass_core::raw_store::RawStore) in `raw.db`;
//! - [`meta`]: keys, dirty hours (jobs), rollups and the ledger in `meta.db`
//!   ([`KeyStore`](hourglass_core::key_store::KeyStore), [`JobQueue`](hourglass_core::job_queue::JobQueue),
//!   [`RollupStore`](hourglass_core::rollup_store::RollupStore),
//!   [`RollupReader`](hourglass_core::rollup_reader::RollupReader)).
//!
//! The data directory is private to its owner ([`data_dir`]: the directory 0700, its files 0600).
//!
//! A full disk under it is a temporary condition, not a failure of the data ([`disk_full`]): writes are
//! refused (and the log acknowledges nothing) until there is room, readiness fails meanwhile, and writes
//! resume by themselves.
//!
//! Three files rather than one: SQLite allows one writer per database at a time, and the three are
//! written by different stages at the same time.

#![warn(missing_docs)]

pub mod data_dir;
pub mod disk_full;
pub mod log;
pub mod meta;
pub mod raw;
pub mod sqlite;
pub mod telemetry;
