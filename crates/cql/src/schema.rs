//! The raw store's schema. Every statement is idempotent (`IF NOT EXISTS`), so `migrate cql` can run
//! at every start and from many replicas.
//!
//! - `raw_event_blocks`: one row per (customer, hour, bucket) and write call: the events of that hour
//!   and bucket of the records written together, as one compressed block (`hourglass_core::raw_block`),
//!   clustered newest first (`received_at`, then `batch_id`: of its newest record; a block of several
//!   records has a group id, and `batches` names each event's batch) so that a fold reads the last
//!   written copy of an id first. Tables created before `batches` existed get it added here;
//!   time-window compaction by hour windows, default TTL = raw retention, so expiry drops whole SSTables.
//!   The server's table compression stays on although each block is LZ4-compressed already: a chunk of
//!   it spans many blocks of similar events, and measured it holds the table in a third of the bytes
//!   for a fraction of a CPU-second per million events at flush (docs/capacity.md, "CQL raw store").
//!   A keyspace created by an older build also has `raw_events` (one row per event), which this
//!   migration leaves alone and the store reads beside the blocks until it is dropped
//!   (`crate::raw_store::legacy`).
//! - `batch_plan_checks`: each batch record's tracking-plan counts (events checked per plan version, and
//!   violations per event type and rule), keyed like `batch_outcomes` so a redelivered record counts once.
//! - `batch_outcomes`: each batch record's outcome counts (accepted, rejected by reason, throttled) per
//!   customer-hour, keyed by batch id, so a redelivered record counts once. The reconciliation ledger
//!   sums them per hour.
//! - `settings`: values fixed at creation that readers and writers must agree on (the bucket count).

use scylla::client::session::Session;

use crate::{CqlConfig, CqlError};

/// The table of event blocks.
pub const BLOCKS_TABLE: &str = "raw_event_blocks";

/// The column of `raw_event_blocks` naming the batch of each event in a block of several records: runs
/// of (batch id, events) in block order; null in a block of one record's events (its `batch_id`).
pub const BATCHES_COLUMN: &str = "batches";

/// The CQL type of [`BATCHES_COLUMN`]: frozen, so the whole list is one cell.
const BATCHES_TYPE: &str = "frozen<list<tuple<text, int>>>";

/// The settings key holding the bucket count.
pub(crate) const BUCKETS_SETTING: &str = "raw_event_buckets";

/// Creates the keyspace and tables if missing; returns the keyspace's bucket count (the configured one
/// for a new keyspace, the stored one otherwise).
pub async fn migrate(session: &Session, config: &CqlConfig) -> Result<u32, CqlError> {
    let keyspace = config.checked_keyspace()?;
    if !config.replication.trim_start().starts_with('{') {
        return Err(CqlError::Schema(format!("--cql-replication must be a CQL map, got {:?}", config.replication)));
    }
    let ttl_seconds = u64::from(config.ttl_days) * 86_400;
    let statements = [
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}", config.replication),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.{BLOCKS_TABLE} (
                customer_id text,
                hour_start timestamp,
                bucket int,
                received_at timestamp,
                batch_id text,
                events blob,
                batches frozen<list<tuple<text, int>>>,
                PRIMARY KEY ((customer_id, hour_start, bucket), received_at, batch_id)
            ) WITH CLUSTERING ORDER BY (received_at DESC, batch_id DESC)
              AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': {}}}
              AND default_time_to_live = {ttl_seconds}",
            config.compaction_window_hours
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.batch_outcomes (
                customer_id text,
                hour_start timestamp,
                batch_id text,
                outcome int,
                reason int,
                count int,
                PRIMARY KEY ((customer_id, hour_start), batch_id, outcome, reason)
            ) WITH default_time_to_live = {ttl_seconds}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.batch_plan_checks (
                customer_id text,
                hour_start timestamp,
                batch_id text,
                plan_version int,
                event_type text,
                rule int,
                rejected boolean,
                count int,
                PRIMARY KEY ((customer_id, hour_start), batch_id, plan_version, event_type, rule, rejected)
            ) WITH default_time_to_live = {ttl_seconds}"
        ),
        format!("CREATE TABLE IF NOT EXISTS {keyspace}.settings (name text PRIMARY KEY, value text)"),
    ];
    for statement in statements {
        session.query_unpaged(statement.as_str(), ()).await.map_err(|error| CqlError::query("schema change", error))?;
    }
    // A table created before blocks held several records' events lacks the column that says which.
    if !has_column(session, keyspace, BLOCKS_TABLE, BATCHES_COLUMN).await? {
        session
            .query_unpaged(format!("ALTER TABLE {keyspace}.{BLOCKS_TABLE} ADD {BATCHES_COLUMN} {BATCHES_TYPE}"), ())
            .await
            .map_err(|error| CqlError::query("schema change", error))?;
    }
    session.await_schema_agreement().await.map_err(|error| CqlError::query("schema agreement", error))?;
    // Lightweight transaction: the first writer fixes the bucket count, later ones read it.
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.settings (name, value) VALUES (?, ?) IF NOT EXISTS"),
            (BUCKETS_SETTING, config.buckets.to_string()),
        )
        .await
        .map_err(|error| CqlError::query("bucket setting", error))?;
    bucket_count(session, keyspace).await
}

/// Whether `keyspace.table` has `column`.
pub async fn has_column(session: &Session, keyspace: &str, table: &str, column: &str) -> Result<bool, CqlError> {
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? \
             AND column_name = ?",
            (keyspace, table, column),
        )
        .await
        .map_err(|error| CqlError::query("reading the schema", error))?
        .into_rows_result()
        .map_err(|error| CqlError::query("reading the schema", error))?;
    Ok(rows.rows_num() > 0)
}

/// The bucket count stored in the keyspace; a [`CqlError::Schema`] naming the fix when the keyspace or
/// its settings are missing.
pub async fn bucket_count(session: &Session, keyspace: &str) -> Result<u32, CqlError> {
    let keyspaces = session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?", (keyspace,))
        .await
        .map_err(|error| CqlError::query("reading the schema", error))?
        .into_rows_result()
        .map_err(|error| CqlError::query("reading the schema", error))?;
    if keyspaces.rows_num() == 0 {
        return Err(CqlError::Schema(format!(
            "keyspace {keyspace} does not exist: run `hourglass migrate cql`, or start a role with --cql-migrate true"
        )));
    }
    let result = session
        .query_unpaged(format!("SELECT value FROM {keyspace}.settings WHERE name = ?"), (BUCKETS_SETTING,))
        .await
        .map_err(|error| CqlError::query("reading settings", error))?;
    let rows = result.into_rows_result().map_err(|error| CqlError::query("reading settings", error))?;
    let (value,): (String,) =
        rows.maybe_first_row().map_err(|error| CqlError::query("reading settings", error))?.ok_or_else(|| {
            CqlError::Schema(format!("keyspace {keyspace} has no bucket count: run `hourglass migrate cql`"))
        })?;
    value
        .parse::<u32>()
        .ok()
        .filter(|buckets| *buckets > 0)
        .ok_or_else(|| CqlError::Schema(format!("invalid bucket count {value:?} in {keyspace}.settings")))
}
