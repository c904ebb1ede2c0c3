//! One conformance suite per seam of `hourglass-core`, each run against both implementations: the
//! distributed one (Kafka, CQL, Postgres, from their crates' `tests/conformance.rs`) and the embedded
//! one (`hourglass-embedded`'s tests). A behaviour the stages rely on belongs here, so both sides keep it.
//!
//! The suites panic on the first broken expectation, naming it; they are called from `#[tokio::test]`s.

pub mod erasure;
pub mod event_log;
pub mod event_log_consumer;
pub mod key_store;
pub mod plan_store;
pub mod raw_store;
pub mod rollups;
