//! Hourglass's ingestor: event log → raw event store, at-least-once into an idempotent store, the same
//! loop in both modes (Kafka and the CQL store in distributed mode, `log.db` and `raw.db` in standalone).
//!
//! # The path of a record through this crate
//! 1. [`pipeline::run`] reads the `events` topic through an
//!    [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer): a member of a Kafka consumer
//!    group (`hourglass-kafka`), or standalone's consumer of `log.db` (`hourglass-embedded`).
//! 2. [`RecordHandler`] decodes each record (`hourglass_core::record`); one that cannot be
//!    ([`dead_letter`]: garbage, an unknown schema version) goes to the dead-letter topic with the reason
//!    in headers.
//! 3. The events of people erased and still under suppression are dropped and counted as erased
//!    ([`suppression`]).
//! 4. Its accepted events and outcome counts are written to the raw store
//!    ([`RawStore`](hourglass_core::raw_store::RawStore)), retried with backoff while the store is down.
//! 5. Every commit interval: the customer-hours of finished records are marked dirty in the job queue
//!    ([`JobQueue`](hourglass_core::job_queue::JobQueue)), then the positions below every record still in
//!    flight are committed ([`offsets`]). **An offset is committed only after every record before it is
//!    durably written and its hours marked.**
//!
//! [`config`] holds both modes' settings, mapped onto the loop's. [`health::run`] serves
//! `grpc.health.v1` for probes, on the server every Hourglass role shares (`hourglass_grpc::GrpcServer`).
//! [`replay`] puts a range of the log, read by the log's crate, through the same [`RecordHandler`] after
//! an ingestion bug.
//!
//! A crash anywhere redelivers uncommitted records; the raw store's primary key holds the event id, so a
//! redelivery overwrites the same rows and counts stay exact.

#![warn(missing_docs)]

pub mod config;
pub mod dead_letter;
pub mod error;
pub mod handler;
pub mod health;
pub mod offsets;
pub mod pipeline;
pub mod replay;
pub mod suppression;
pub mod telemetry;

pub use config::{EmbeddedIngestConfig, IngestLoopConfig, IngestorConfig};
pub use error::IngestorError;
pub use handler::{Handled, RecordHandler};
pub use pipeline::run;
pub use suppression::{Suppression, SuppressionConfig};
