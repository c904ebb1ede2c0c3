//! [`SqliteMetaStore`]: API keys, dirty hours (the aggregation jobs), rollups and the ledger of standalone
//! mode, in `meta.db`, with the observable behaviour of the Postgres implementations (`hourglass-postgres`)
//! and held to the same conformance suites (`hourglass-conformance`).
//!
//! - [`keys`]: the [`KeyStore`](hourglass_core::key_store::KeyStore);
//! - [`plans`]: the [`PlanStore`](hourglass_core::tracking_plan::store::PlanStore) of tracking plans;
//! - [`jobs`]: the [`JobQueue`](hourglass_core::job_queue::JobQueue) (`mark_dirty`);
//! - [`rollups`]: the [`RollupStore`](hourglass_core::rollup_store::RollupStore): leases, completion in
//!   one transaction, recounts;
//! - [`erasure`]: the [`ErasureStore`](hourglass_core::erasure::ErasureStore): erasure requests, their
//!   plans and progress;
//! - [`reader`]: the [`RollupReader`](hourglass_core::rollup_reader::RollupReader) of the query service.
//!
//! Concurrency: SQLite lets one connection write a database at a time. Every write goes through a pool
//! of one connection, so writers of this process queue fairly on the pool instead of polling SQLite's
//! busy handler, and each multi-statement write runs in a `BEGIN IMMEDIATE` transaction, which takes the
//! write lock before its first read: a lease check and the writes that depend on it can never interleave
//! with another writer (of this process or of another one, such as `hourglass keys` run beside a
//! standalone server). Reads go through a pool of several connections and, in WAL mode, run concurrently
//! with each other and with the writer.
//!
//! Time: Postgres takes `now()` from its own clock; here the Rust clock gives it, read once per
//! statement or transaction (after the write lock is held, so a wait for the lock never makes a lease
//! shorter than asked).

mod erasure;
mod jobs;
mod keys;
mod plans;
mod reader;
mod rollups;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;

use crate::disk_full::{DiskFull, WriteError};
use crate::sqlite::{self, OpenError};

/// The file of the metadata database in the data directory.
pub const META_DB_FILE: &str = "meta.db";

/// The tables and indexes, created on open if missing.
const SCHEMA: &str = include_str!("schema.sql");

/// Connections for reads: the query service and the aggregator read concurrently.
const READ_CONNECTIONS: u32 = 4;

/// Keys, jobs, rollups and the ledger of standalone mode, in one SQLite database. Cheap to clone: clones
/// share the connection pools.
#[derive(Clone, Debug)]
pub struct SqliteMetaStore {
    /// Exactly one connection: SQLite has one writer per database, so writers of this process wait
    /// here, in order, rather than in SQLite's busy handler.
    writer: SqlitePool,
    /// Several connections for reads, which WAL mode runs beside the writer.
    readers: SqlitePool,
    /// Whether the last observed write found the disk full ([`crate::disk_full`]): the writes of the
    /// ingestion and the aggregation, which retry, report to it.
    disk: Arc<DiskFull>,
}

impl SqliteMetaStore {
    /// Opens (creating if needed) `meta.db` in `data_dir` and its tables.
    pub async fn open(data_dir: &Path) -> Result<Self, OpenError> {
        let writer = sqlite::open(data_dir, META_DB_FILE, 1, SCHEMA).await?;
        upgrade(&writer).await.map_err(|source| OpenError::Database { path: data_dir.join(META_DB_FILE), source })?;
        let readers = sqlite::open(data_dir, META_DB_FILE, READ_CONNECTIONS, SCHEMA).await?;
        let disk = Arc::new(DiskFull::new(data_dir, META_DB_FILE));
        Ok(Self { writer, readers, disk })
    }

    /// For readiness: `Ok` unless a write found the disk full and a probe still finds no room.
    async fn check_space(&self) -> Result<(), WriteError> {
        self.disk.check(&self.writer).await
    }

    /// Starts a write transaction that holds the database's write lock from its first statement.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Columns added to existing tables since the first release, oldest first: (table, a column whose
/// absence means the step is due, the statements that add the step's columns). Each step is the same
/// change as the Postgres migration it follows.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // 20261125000008_hour_totals.
    (
        "hour_revisions",
        "distinct_users",
        "ALTER TABLE hour_revisions ADD COLUMN distinct_users INTEGER NOT NULL DEFAULT 0; \
         ALTER TABLE hour_revisions ADD COLUMN users_sketch BLOB NOT NULL DEFAULT X'';",
    ),
    // 20261125000009_lease_tokens: leases taken before have no token, so they cannot be completed any
    // more and simply expire.
    ("dirty_hours", "lease_token", "ALTER TABLE dirty_hours ADD COLUMN lease_token INTEGER;"),
    // 20261125000010_refused_hours.
    (
        "dirty_hours",
        "refused_generation",
        "ALTER TABLE dirty_hours ADD COLUMN refused_generation INTEGER NOT NULL DEFAULT 0; \
         ALTER TABLE dirty_hours ADD COLUMN refused_reason TEXT; \
         ALTER TABLE dirty_hours ADD COLUMN refused_at_us INTEGER;",
    ),
    // 20261129000011_cardinality_limits.
    (
        "customer_limits",
        "max_event_types_per_hour",
        "ALTER TABLE customer_limits ADD COLUMN max_event_types_per_hour INTEGER \
           CHECK (max_event_types_per_hour > 0); \
         ALTER TABLE customer_limits ADD COLUMN max_property_names_per_event_type INTEGER \
           CHECK (max_property_names_per_event_type > 0);",
    ),
    // 20261129000012_tracking_plans (its table is in schema.sql, created on open).
    ("ledger", "plan_checks", "ALTER TABLE ledger ADD COLUMN plan_checks TEXT NOT NULL DEFAULT '[]';"),
    // 20261129000014_erased_outcome.
    ("ledger", "erased", "ALTER TABLE ledger ADD COLUMN erased INTEGER NOT NULL DEFAULT 0;"),
];

/// Brings a `meta.db` made by an earlier version up to the current schema (`schema.sql` creates new
/// databases whole, but `CREATE TABLE IF NOT EXISTS` leaves existing tables as they were).
async fn upgrade(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    for &(table, column, statements) in ADDED_COLUMNS {
        let present: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?) WHERE name = ?")
            .bind(table)
            .bind(column)
            .fetch_one(writer)
            .await?;
        if present == 0 {
            sqlx::raw_sql(statements).execute(writer).await?;
        }
    }
    allow_admin_keys(writer).await
}

/// 20261129000013_erasure widens `api_keys.scope` to `admin`. SQLite cannot change a CHECK in place, so a
/// table made before is copied into one of the current shape (nothing references `api_keys`).
async fn allow_admin_keys(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let definition: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'")
            .fetch_one(writer)
            .await?;
    if definition.contains("'admin'") {
        return Ok(());
    }
    sqlx::raw_sql(
        "BEGIN IMMEDIATE; \
         CREATE TABLE api_keys_with_admin ( \
             key_id TEXT PRIMARY KEY, \
             key_hash BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32), \
             customer_id TEXT NOT NULL REFERENCES customers (customer_id), \
             scope TEXT NOT NULL CHECK (scope IN ('ingest', 'query', 'admin')), \
             name TEXT NOT NULL DEFAULT '', \
             created_at_us INTEGER NOT NULL, \
             revoked_at_us INTEGER \
         ) STRICT; \
         INSERT INTO api_keys_with_admin (key_id, key_hash, customer_id, scope, name, created_at_us, revoked_at_us) \
             SELECT key_id, key_hash, customer_id, scope, name, created_at_us, revoked_at_us FROM api_keys; \
         DROP TABLE api_keys; \
         ALTER TABLE api_keys_with_admin RENAME TO api_keys; \
         CREATE INDEX IF NOT EXISTS api_keys_by_customer ON api_keys (customer_id); \
         COMMIT;",
    )
    .execute(writer)
    .await?;
    Ok(())
}

/// The current instant in microseconds since the Unix epoch: what Postgres's `now()` is to its queries.
fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A duration in microseconds, saturating (a lease of centuries is as good as forever).
fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds since the epoch to whole seconds, as the reader reports instants.
fn micros_to_seconds(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// A count as SQLite stores it (a signed 64-bit integer); no real count comes near the limit.
fn count_to_sql(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A stored count back to the seam's type; the schema never stores a negative one.
fn count_from_sql(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// `?, ?, …`: `count` placeholders for an `IN (…)` list. Only placeholders go into the SQL text, never
/// values, so the statement built with it is safe.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}
