//! Hourglass's aggregator: rolls raw customer-hours up into hourly per-customer metrics.
//!
//! # The path of a job through this crate
//! 1. [`worker`] leases pending jobs (customer-hours marked dirty by the ingestor whose hour closed more
//!    than `--allowed-lateness-secs` ago) from the [`RollupStore`](hourglass_core::rollup_store::RollupStore).
//!    Leases are skip-locked, so any number of aggregator replicas share the work without a leader; a
//!    crashed worker's lease expires and the job is leased again.
//! 2. It reads the hour's raw events bucket by bucket from the
//!    [`RawStore`](hourglass_core::raw_store::RawStore) and folds them ([`rollup`]): per event type, distinct
//!    events and exact distinct users.
//! 3. It replaces the hour's rollup and completes the job in one transaction. A rollup is a pure function
//!    of the hour's raw rows, recomputed whole, so running a job twice changes nothing but the revision, and
//!    a late event (which re-marks the hour) re-aggregates it with the next revision. The same transaction
//!    writes the hour's ledger row: received, accepted, rejected, throttled (from the outcome counts the
//!    collectors sent through Kafka), stored and counted.
//!
//! Raw rows expire (`hourglass_core::retention`), so a job never recomputes an hour past its horizon
//! (started the raw retention less a 1-day margin ago or earlier): it refuses it instead
//! (`jobs_total{result="expired"}`, a warning naming the hour; an error if the hour has no rollup at all),
//! leaves its rollup as it was, and records the refusal with the hour, which is then not offered again
//! until new data arrives and shows the reason in its status. [`reprocess`] skips such hours and lists them.
//!
//! [`verify`] recounts the raw store independently and flags hours whose stored and counted differ.
//! [`reprocess`] recomputes a range of hours with the current logic and swaps each in atomically.
//! [`erasure`] deletes one person's raw events and recomputes the hours they touched through the same
//! swap, as a leased request that resumes after a crash; [`erasure::run_requests`] is the worker loop that
//! runs the requests the admin service records (the aggregator role and standalone, with a salt).

#![warn(missing_docs)]

pub mod config;
pub mod erasure;
pub mod reprocess;
pub mod rollup;
pub mod telemetry;
pub mod verify;
pub mod worker;

pub use config::AggregatorConfig;
pub use worker::{aggregate_hour, run, run_nudged, run_once};
