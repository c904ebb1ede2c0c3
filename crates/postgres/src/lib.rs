//! Hourglass's Postgres backend.
//!
//! - [`config`]: the database URL and pool settings, from flags and `HOURGLASS_DATABASE_*`.
//! - [`migrate`]: the schema, as sqlx migrations embedded in the binary (`migrations/`); applying them
//!   is idempotent and safe from many replicas at once (sqlx takes an advisory lock).
//! - [`keys`]: [`PostgresKeyStore`], the [`KeyStore`](hourglass_core::key_store::KeyStore) holding API
//!   key hashes and per-customer limits.
//! - [`plans`]: [`PostgresPlanStore`], the
//!   [`PlanStore`](hourglass_core::tracking_plan::store::PlanStore) of customers' tracking plan versions.
//! - [`jobs`]: [`PostgresJobQueue`], the [`JobQueue`](hourglass_core::job_queue::JobQueue) of
//!   customer-hours awaiting aggregation (marked dirty by the ingestor).
//! - [`erasure`]: [`PostgresErasureStore`], the [`ErasureStore`](hourglass_core::erasure::ErasureStore) of
//!   per-user erasure requests, their plans and progress.
//! - [`rollups`]: [`PostgresRollupStore`], the [`RollupStore`](hourglass_core::rollup_store::RollupStore)
//!   of hourly rollups and the aggregation jobs (leased with `FOR UPDATE SKIP LOCKED`, completed in the
//!   rollup's own transaction).
//! - `reader`: the same type's [`RollupReader`](hourglass_core::rollup_reader::RollupReader), the query
//!   service's reads of the rollups, hour status and ledger (a private module: it adds an impl, no items).
//! - [`testing`]: a fresh database per test, for the real-Postgres test tier.

#![warn(missing_docs)]

pub mod config;
pub mod erasure;
mod errors;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod plans;
mod reader;
pub mod rollups;
pub mod testing;

pub use config::PostgresConfig;
pub use erasure::PostgresErasureStore;
pub use jobs::PostgresJobQueue;
pub use keys::PostgresKeyStore;
pub use plans::PostgresPlanStore;
pub use rollups::PostgresRollupStore;
