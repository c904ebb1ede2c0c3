//! Hourglass's collector: the gRPC front door for events.
//!
//! # The path of a batch through this crate
//! 1. [`service`] receives it on one of three calls (client stream, bidirectional stream, unary). The
//!    call's API key was checked when the call began (`hourglass_grpc::auth`: `authorization` metadata → key hash →
//!    customer, cached briefly); long streams re-check it per batch from the cache.
//! 2. [`batch`] reads each event where it lies in the request's buffer ([`event_view`]: the request
//!    types of `hourglass_proto::wire` keep events as their encoded bytes), validates it ([`validate`]),
//!    checks it against the customer's tracking plan ([`plans`]: compiled once per version, cached; a
//!    violation rejects the event in `enforce` mode, is counted in `warn` mode),
//!    copies the accepted ones' bytes into one event-log record together with the outcome counts of the
//!    whole batch, and asks the customer's token bucket ([`quota`]) for room. Over quota, nothing is published but an outcome-only record,
//!    and the batch is acked as throttled with a retry-after.
//! 3. The record is appended to the event log (Kafka, `acks=all`, idempotent producer). **The client's
//!    ack is sent only after the append resolves**: an acked event is durable. If Kafka does not confirm
//!    in time, the ack says UNAVAILABLE and the client resends; consumers are idempotent by event id.
//!
//! Streams hold at most `--max-in-flight-batches` unacknowledged batches and stop reading when full,
//! so a slow Kafka slows clients (HTTP/2 flow control) instead of growing memory.
//!
//! [`server::run`] serves it all on a [`GrpcServer`](hourglass_grpc::GrpcServer): grpc.health.v1
//! following readiness, reflection, hardened HTTP/2 limits, optional TLS, and the ordered shutdown that
//! drains streams before the event log flushes. [`server::add_ingest`] puts the same on a server shared
//! with other services (standalone's).

#![warn(missing_docs)]

pub mod batch;
pub mod cardinality;
pub mod config;
pub mod error;
pub mod event_view;
pub mod memory;
pub mod plans;
pub mod quota;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod validate;

pub use config::CollectorConfig;
pub use error::CollectorError;
pub use server::{add_ingest, ingest_service, run};
