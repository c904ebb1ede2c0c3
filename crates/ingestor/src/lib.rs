//! Hourglass's ingestor: Kafka → raw event store, at-least-once into an idempotent store.
//!
//! # The path of a record through this crate
//! 1. [`pipeline::run`] consumes the `events` topic as a member of a consumer group.
//! 2. Each record is decoded (`hourglass_core::record`); one that cannot be ([`dead_letter`]: garbage, an
//!    unknown schema version) goes to the dead-letter topic with the reason in headers.
//! 3. Its accepted events and outcome counts are written to the raw store
//!    ([`RawStore`](hourglass_core::raw_store::RawStore)), retried with backoff while the store is down.
//! 4. Every commit interval: the customer-hours of finished records are marked dirty in the job queue
//!    ([`JobQueue`](hourglass_core::job_queue::JobQueue)), then the offsets below every record still in
//!    flight are committed ([`offsets`]). **An offset is committed only after every record before it is
//!    durably written and its hours marked.**
//!
//! [`RecordHandler`] (decode, dead-letter or write one group of records) works on any consumed record
//! ([`LogMessage`]), so the embedded ingestion of `hourglass-embedded` shares it.
//!
//! [`health`] serves `grpc.health.v1` for probes. [`replay`] re-consumes a range of a topic through the same path, after an ingestion bug.
//!
//! A crash anywhere redelivers uncommitted records; the raw store's primary key holds the event id, so a
//! redelivery overwrites the same rows and counts stay exact.

#![warn(missing_docs)]

pub mod config;
pub mod dead_letter;
pub mod error;
pub mod health;
pub mod offsets;
pub mod pipeline;
pub mod replay;
pub mod telemetry;

pub use config::IngestorConfig;
pub use error::IngestorError;
pub use pipeline::{Handled, LogMessage, RecordHandler, run};
