//! Hourglass's event log on Apache Kafka.
//!
//! - [`config`]: brokers, topic names (the logical [`Topic`](hourglass_core::event_log::Topic) enum maps
//!   to names here and nowhere else), producer tuning.
//! - [`producer`]: [`KafkaEventLog`], the [`EventLog`](hourglass_core::event_log::EventLog) the collector
//!   appends to. It is an idempotent producer with `acks=all`: an append resolves `Ok` only once every
//!   in-sync replica has the record, which is what lets the collector ack its client.
//! - [`consumer`]: [`KafkaEventLogConsumer`], the
//!   [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer) the ingestor reads from: a member
//!   of a consumer group that commits offsets only when told to.
//! - [`context`]: librdkafka's logs at levels that mean something to an operator.
//! - [`reader`]: reads a topic by hand-assigned partitions up to its end as of the start, committing
//!   nothing: the whole topic (`hourglass dlq`, tests) or a range of it (`hourglass replay`).
//! - [`testing`]: topics of a test's own on the test broker, and reading a topic back.
//! - [`admin`]: creates the topics when asked to, with the configured partitions and replication.

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod consumer;
pub mod context;
pub mod error;
pub mod producer;
pub mod reader;
pub mod testing;

pub use config::KafkaConfig;
pub use consumer::KafkaEventLogConsumer;
pub use error::KafkaSetupError;
pub use producer::KafkaEventLog;
