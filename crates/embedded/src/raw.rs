//! [`SqliteRawStore`]: the [`RawStore`] of standalone mode, in `raw.db`.
//!
//! One row per (customer, hour, bucket, batch id) holds the events of that batch record that fall in that
//! hour and bucket: a block of `hourglass_core::raw_block`, protobuf-encoded as an `EventBatchRecord`
//! carrying only its `events` field and LZ4-compressed behind a format byte (rows written before
//! compression have no format byte and are read as they are). A row per
//! event would cost an insert per event on the ingest path; a row per block costs one per record and
//! bucket, and reading a bucket back is a range scan of a few large rows.
//!
//! Idempotency, as the CQL store gets it from its primary key:
//! - a redelivered record rewrites its own rows (`INSERT OR REPLACE` on the batch id), so it is stored
//!   once; a batch id therefore names one record's content, which the event log never changes;
//! - an event id stored by several records (a client resending in another batch) is de-duplicated when
//!   read: rows are read newest first (a replaced row gets a new, higher rowid), and the first copy of an
//!   id seen wins, so the last write wins as in CQL.
//!
//! A page of a bucket (`read_bucket_page`) cannot be a range scan, as blocks are not in event-id order:
//! it scans the bucket's blocks oldest first, keeping only the page's events (`PageWindow` in
//! `hourglass_core::raw_block` says how, and why that is exact).
//!
//! Outcome counts are stored per (customer, hour, batch id, outcome, reason), so a redelivered record
//! counts once, and summed per hour when read; tracking-plan counts likewise, per (customer, hour, batch
//! id, plan version, event type, rule, rejected).
//!
//! The bucket count is fixed when `raw.db` is created (`settings` table): changing it would move events
//! to other buckets and break de-duplication across writes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use hourglass_core::erasure::UserMatcher;
use hourglass_core::raw_block::{
    self, BlockRewrite, DecodeError, Decompressor, EventView, PageScans, RecordBlock, SeenEventIds,
};
use hourglass_core::raw_store::{EventVisitor, HourOutcomes, PlanCheckKey, RawStore, RawStoreError, StoredEvent};
use hourglass_core::record_view::RecordView;
use hourglass_proto::log::v1::{OutcomeCount, PlanCheckCount};
use sqlx::{Row, SqlitePool};

use crate::disk_full::{DiskFull, WriteError};
use crate::sqlite::{self, OpenError};

/// The database file in the data directory.
pub const FILE_NAME: &str = "raw.db";

/// The `settings` key holding the bucket count (the name the CQL keyspace uses too).
const BUCKETS_SETTING: &str = "raw_event_buckets";

/// Connections reading at once: the aggregator reads several buckets of a job concurrently.
const READER_CONNECTIONS: u32 = 4;

/// Events folded between two yields to the runtime, so a large bucket does not hold a worker thread.
const EVENTS_PER_YIELD: usize = 4096;

/// Rows per insert statement; SQLite allows 32766 parameters, sqlx caches a statement per row count.
const ROWS_PER_INSERT: usize = 64;

/// `rowid` grows with every insert, and `INSERT OR REPLACE` gives the replacing row a new one, so
/// `event_blocks_by_bucket` (whose entries end with the rowid) lists a bucket's rows in write order.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_blocks (
    customer_id TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    events BLOB NOT NULL,
    UNIQUE (customer_id, hour_start, bucket, batch_id)
);
CREATE INDEX IF NOT EXISTS event_blocks_by_bucket ON event_blocks (customer_id, hour_start, bucket);
CREATE INDEX IF NOT EXISTS event_blocks_by_hour ON event_blocks (hour_start);
CREATE TABLE IF NOT EXISTS batch_outcomes (
    customer_id TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (customer_id, hour_start, batch_id, outcome, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_plan_checks (
    customer_id TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    plan_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    rule INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (customer_id, hour_start, batch_id, plan_version, event_type, rule, rejected)
) WITHOUT ROWID;
";

/// The embedded implementation of [`RawStore`], on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteRawStore {
    /// One connection: SQLite has one writer per database, and queueing here is cheaper than on its
    /// busy timeout.
    writer: SqlitePool,
    /// Readers never wait for the writer (WAL).
    readers: SqlitePool,
    bucket_count: u32,
    /// Whether the last write found the disk full ([`crate::disk_full`]).
    disk: Arc<DiskFull>,
}

impl SqliteRawStore {
    /// Opens (creating if needed) `raw.db` in `data_dir`. A new database keeps `bucket_count` for good;
    /// an existing one keeps the count it was created with (a different `bucket_count` is logged and
    /// ignored).
    pub async fn open(data_dir: &Path, bucket_count: u32) -> Result<Self, OpenError> {
        let path = data_dir.join(FILE_NAME);
        let database_error = |source| OpenError::Database { path: path.clone(), source };
        if bucket_count == 0 {
            return Err(database_error(sqlx::Error::InvalidArgument("the raw store needs at least one bucket".into())));
        }
        let writer = sqlite::open(data_dir, FILE_NAME, 1, SCHEMA).await?;
        sqlx::query("INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)")
            .bind(BUCKETS_SETTING)
            .bind(bucket_count.to_string())
            .execute(&writer)
            .await
            .map_err(database_error)?;
        let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = ?1")
            .bind(BUCKETS_SETTING)
            .fetch_one(&writer)
            .await
            .map_err(database_error)?;
        let stored_count = stored.parse::<u32>().ok().filter(|count| *count > 0).ok_or_else(|| {
            database_error(sqlx::Error::Decode(format!("invalid bucket count {stored:?} in settings").into()))
        })?;
        if stored_count != bucket_count {
            tracing::warn!(
                configured = bucket_count,
                stored = stored_count,
                path = %path.display(),
                "the raw store keeps the bucket count it was created with"
            );
        }
        let readers = sqlite::open(data_dir, FILE_NAME, READER_CONNECTIONS, SCHEMA).await?;
        let disk = Arc::new(DiskFull::new(data_dir, FILE_NAME));
        Ok(Self { writer, readers, bucket_count: stored_count, disk })
    }

    /// Deletes the raw events and outcome counts of every hour that started before `cutoff_unix` (the
    /// embedded counterpart of the CQL store's TTL); returns the rows deleted. Rollups and the ledger
    /// are kept; `verify` of such an hour then shows stored below counted, as after a TTL.
    pub async fn delete_hours_before(&self, cutoff_unix: i64) -> Result<u64, RawStoreError> {
        let deleted = async {
            let mut transaction = self.writer.begin().await?;
            let blocks = sqlx::query("DELETE FROM event_blocks WHERE hour_start < ?1")
                .bind(cutoff_unix)
                .execute(&mut *transaction)
                .await?;
            let outcomes = sqlx::query("DELETE FROM batch_outcomes WHERE hour_start < ?1")
                .bind(cutoff_unix)
                .execute(&mut *transaction)
                .await?;
            let plan_checks = sqlx::query("DELETE FROM batch_plan_checks WHERE hour_start < ?1")
                .bind(cutoff_unix)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(blocks.rows_affected() + outcomes.rows_affected() + plan_checks.rows_affected())
        };
        self.disk.observe(deleted.await).map_err(write_failed)
    }

    /// Calls `on_event` with every distinct event of a bucket (its last written copy) and the batch
    /// that wrote it. Reads newest rows first and keeps the first copy of each id.
    async fn walk_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        mut on_event: impl FnMut(&EventView<'_>, &str) + Send,
    ) -> Result<(), RawStoreError> {
        let mut seen_ids = SeenEventIds::new();
        self.for_each_copy(customer_id, hour_start, bucket, WriteOrder::NewestFirst, |event, batch_id| {
            if seen_ids.insert(event.event_id) {
                on_event(event, batch_id);
            }
        })
        .await
    }

    /// Calls `on_copy` with every stored copy of every event of a bucket and the batch that wrote it,
    /// in `order`, one row's block in memory at a time.
    async fn for_each_copy(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        order: WriteOrder,
        mut on_copy: impl FnMut(&EventView<'_>, &str) + Send,
    ) -> Result<(), RawStoreError> {
        let select = match order {
            WriteOrder::NewestFirst => {
                "SELECT batch_id, events FROM event_blocks INDEXED BY event_blocks_by_bucket \
                 WHERE customer_id = ?1 AND hour_start = ?2 AND bucket = ?3 ORDER BY rowid DESC"
            }
            WriteOrder::OldestFirst => {
                "SELECT batch_id, events FROM event_blocks INDEXED BY event_blocks_by_bucket \
                 WHERE customer_id = ?1 AND hour_start = ?2 AND bucket = ?3 ORDER BY rowid ASC"
            }
        };
        let mut rows =
            sqlx::query(select).bind(customer_id).bind(hour_start).bind(i64::from(bucket)).fetch(&self.readers);
        let mut decompressor = Decompressor::new();
        let mut events_since_yield = 0;
        while let Some(row) = rows.try_next().await.map_err(unavailable)? {
            // A column of another type than the schema's: not something a retry mends.
            let batch_id: &str = row.try_get(0).map_err(|error| RawStoreError::Schema(Box::new(error)))?;
            let block: &[u8] = row.try_get(1).map_err(|error| RawStoreError::Schema(Box::new(error)))?;
            let mut events =
                decompressor.events(block).map_err(|error| undecodable(customer_id, hour_start, batch_id, error))?;
            // Within a block too, the later copy of an id is the last written.
            if let WriteOrder::NewestFirst = order {
                events.reverse();
            }
            for encoded_event in &events {
                let event = EventView::parse(encoded_event)
                    .map_err(|error| undecodable(customer_id, hour_start, batch_id, error))?;
                on_copy(&event, batch_id);
            }
            events_since_yield += events.len();
            if events_since_yield >= EVENTS_PER_YIELD {
                events_since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
}

impl SqliteRawStore {
    /// Erases the matcher's user's events from one bucket, in one write transaction that reads the
    /// bucket's blocks and rewrites or deletes the ones holding them by rowid (a rewritten row keeps its
    /// rowid, so its place in the write order). Returns the ids erased.
    async fn erase_in_bucket(&self, matcher: &UserMatcher, hour_start: i64, bucket: u32) -> Result<u64, RawStoreError> {
        let customer_id = matcher.customer_id().as_str();
        // IMMEDIATE: the write lock from the first read, so no record is written between the reads and
        // the rewrites.
        let mut transaction = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)?;
        let select = "SELECT rowid, batch_id, events FROM event_blocks INDEXED BY event_blocks_by_bucket \
                      WHERE customer_id = ?1 AND hour_start = ?2 AND bucket = ?3";
        let mut decompressor = Decompressor::new();
        let mut erased_ids = HashSet::new();
        {
            let mut rows =
                sqlx::query(select).bind(customer_id).bind(hour_start).bind(i64::from(bucket)).fetch(&mut *transaction);
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                let (batch_id, block) = block_columns(&row)?;
                raw_block::collect_user_event_ids(&mut decompressor, block, matcher, &mut erased_ids)
                    .map_err(|error| undecodable(customer_id, hour_start, batch_id, error))?;
            }
        }
        if erased_ids.is_empty() {
            return Ok(0);
        }
        let mut rewrites: Vec<(i64, BlockRewrite)> = Vec::new();
        {
            let mut rows =
                sqlx::query(select).bind(customer_id).bind(hour_start).bind(i64::from(bucket)).fetch(&mut *transaction);
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                let rowid: i64 = row.try_get(0).map_err(|error| RawStoreError::Schema(Box::new(error)))?;
                let (batch_id, block) = block_columns(&row)?;
                let rewrite = raw_block::without_events(&mut decompressor, block, &erased_ids)
                    .map_err(|error| undecodable(customer_id, hour_start, batch_id, error))?;
                if rewrite != BlockRewrite::Unchanged {
                    rewrites.push((rowid, rewrite));
                }
            }
        }
        for (rowid, rewrite) in rewrites {
            let statement = match &rewrite {
                BlockRewrite::Rewritten(block) => sqlx::query("UPDATE event_blocks SET events = ?1 WHERE rowid = ?2")
                    .bind(block.as_slice())
                    .bind(rowid),
                _ => sqlx::query("DELETE FROM event_blocks WHERE rowid = ?1").bind(rowid),
            };
            statement.execute(&mut *transaction).await.map_err(unavailable)?;
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(erased_ids.len() as u64)
    }
}

/// The batch id and stored block of a row whose columns 1 and 2 are those.
fn block_columns(row: &sqlx::sqlite::SqliteRow) -> Result<(&str, &[u8]), RawStoreError> {
    // A column of another type than the schema's: not something a retry mends.
    let batch_id: &str = row.try_get(1).map_err(|error| RawStoreError::Schema(Box::new(error)))?;
    let block: &[u8] = row.try_get(2).map_err(|error| RawStoreError::Schema(Box::new(error)))?;
    Ok((batch_id, block))
}

/// The order in which [`SqliteRawStore::for_each_copy`] visits the copies of a bucket's events.
#[derive(Clone, Copy)]
enum WriteOrder {
    /// The last written copy first (rows by descending rowid, each block backwards).
    NewestFirst,
    /// The first written copy first.
    OldestFirst,
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RawStoreError {
    RawStoreError::Unavailable(Box::new(error))
}

/// A write that failed, a full disk among the rest: the store is unavailable until it works again.
fn write_failed(error: WriteError) -> RawStoreError {
    RawStoreError::Unavailable(error.boxed())
}

fn undecodable(customer_id: &str, hour_start: i64, batch_id: &str, error: DecodeError) -> RawStoreError {
    RawStoreError::Schema(
        format!("undecodable event block of customer {customer_id}, hour {hour_start}, batch {batch_id}: {error}")
            .into(),
    )
}

/// Inserts the blocks of `records` (`blocks`, made from them) and their outcome counts in `transaction`.
async fn insert_blocks(
    transaction: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    blocks: &[(&RecordView<'_>, RecordBlock)],
    records: &[RecordView<'_>],
) -> Result<(), sqlx::Error> {
    // Several rows per statement: each statement is a round trip to SQLite's worker thread, which
    // costs more than inserting a row. Rows go in order, so a later copy replaces an earlier one.
    for chunk in blocks.chunks(ROWS_PER_INSERT) {
        let sql = multi_row_insert(
            "INSERT OR REPLACE INTO event_blocks (customer_id, hour_start, bucket, batch_id, events)",
            5,
            chunk.len(),
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (record, block) in chunk {
            insert = insert
                .bind(record.customer_id.as_str())
                .bind(block.hour_start)
                .bind(i64::from(block.bucket))
                .bind(record.batch_id.as_str())
                .bind(block.block.as_slice());
        }
        insert.execute(&mut **transaction).await?;
    }
    let outcomes: Vec<(&RecordView<'_>, &OutcomeCount)> =
        records.iter().flat_map(|record| record.outcomes.iter().map(move |count| (record, count))).collect();
    for chunk in outcomes.chunks(ROWS_PER_INSERT) {
        let sql = multi_row_insert(
            "INSERT OR REPLACE INTO batch_outcomes (customer_id, hour_start, batch_id, outcome, reason, count)",
            6,
            chunk.len(),
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (record, count) in chunk {
            insert = insert
                .bind(record.customer_id.as_str())
                .bind(count.hour_start_unix_secs)
                .bind(record.batch_id.as_str())
                .bind(count.outcome)
                .bind(count.reason)
                .bind(i64::from(count.count));
        }
        insert.execute(&mut **transaction).await?;
    }
    let plan_checks: Vec<(&RecordView<'_>, &PlanCheckCount)> =
        records.iter().flat_map(|record| record.plan_checks.iter().map(move |count| (record, count))).collect();
    for chunk in plan_checks.chunks(ROWS_PER_INSERT) {
        let sql = multi_row_insert(
            "INSERT OR REPLACE INTO batch_plan_checks \
             (customer_id, hour_start, batch_id, plan_version, event_type, rule, rejected, count)",
            8,
            chunk.len(),
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (record, count) in chunk {
            insert = insert
                .bind(record.customer_id.as_str())
                .bind(count.hour_start_unix_secs)
                .bind(record.batch_id.as_str())
                .bind(i64::from(count.plan_version))
                .bind(count.event_type.as_str())
                .bind(count.rule)
                .bind(count.rejected)
                .bind(i64::from(count.count));
        }
        insert.execute(&mut **transaction).await?;
    }
    Ok(())
}

/// `insert_into` followed by `rows` tuples of `columns` parameters. Anonymous parameters: sqlx looks
/// up the name of each numbered one, a linear search in SQLite.
fn multi_row_insert(insert_into: &str, columns: usize, rows: usize) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    format!("{insert_into} VALUES {}", vec![tuple.as_str(); rows].join(", "))
}

impl RawStore for SqliteRawStore {
    async fn write_records(&self, records: &[RecordView<'_>]) -> Result<(), RawStoreError> {
        // Encoded and compressed before taking the writer, so the transaction holds it only for the inserts.
        let blocks: Vec<(&RecordView<'_>, RecordBlock)> = records
            .iter()
            .flat_map(|record| {
                raw_block::record_blocks(record, self.bucket_count).into_iter().map(move |block| (record, block))
            })
            .collect();

        let written = async {
            let mut transaction = self.writer.begin().await?;
            insert_blocks(&mut transaction, &blocks, records).await?;
            transaction.commit().await
        };
        self.disk.observe(written.await).map_err(write_failed)
    }

    async fn check_ready(&self) -> Result<(), RawStoreError> {
        self.disk.check(&self.writer).await.map_err(write_failed)?;
        sqlx::query("SELECT 1").execute(&self.readers).await.map_err(unavailable)?;
        Ok(())
    }

    fn bucket_count(&self) -> u32 {
        self.bucket_count
    }

    async fn read_outcomes(&self, customer_id: &str, hour_start: i64) -> Result<HourOutcomes, RawStoreError> {
        let rows: Vec<(i32, i32, i64)> = sqlx::query_as(
            "SELECT outcome, reason, SUM(count) FROM batch_outcomes WHERE customer_id = ?1 AND hour_start = ?2 \
             GROUP BY outcome, reason",
        )
        .bind(customer_id)
        .bind(hour_start)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        let mut outcomes = HourOutcomes::default();
        for (outcome, reason, count) in rows {
            if !outcomes.add(outcome, reason, u64::try_from(count).unwrap_or(0)) {
                tracing::warn!(outcome, customer_id, hour_start, "unknown outcome in batch_outcomes; not counted");
            }
        }
        let plan_rows: Vec<(i64, String, i32, bool, i64)> = sqlx::query_as(
            "SELECT plan_version, event_type, rule, rejected, SUM(count) FROM batch_plan_checks \
             WHERE customer_id = ?1 AND hour_start = ?2 GROUP BY plan_version, event_type, rule, rejected",
        )
        .bind(customer_id)
        .bind(hour_start)
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        for (plan_version, event_type, rule, rejected, count) in plan_rows {
            let plan_version = u32::try_from(plan_version).unwrap_or(0);
            let key = PlanCheckKey { plan_version, event_type, rule, rejected };
            outcomes.add_plan_check(key, u64::try_from(count).unwrap_or(0));
        }
        Ok(outcomes)
    }

    async fn fold_bucket<V: EventVisitor>(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        mut visitor: V,
    ) -> Result<V, RawStoreError> {
        self.walk_bucket(customer_id, hour_start, bucket, |event, _batch_id| {
            visitor.visit(event.event_type, event.user_id, &mut event.numbers());
        })
        .await?;
        Ok(visitor)
    }

    async fn read_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
    ) -> Result<Vec<StoredEvent>, RawStoreError> {
        let mut events = Vec::new();
        self.walk_bucket(customer_id, hour_start, bucket, |event, batch_id| events.push(event.to_stored(batch_id)))
            .await?;
        // The order CQL returns them in (its clustering key).
        events.sort_unstable_by(|left, right| left.event_id.cmp(&right.event_id));
        Ok(events)
    }

    async fn read_bucket_page(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        after_event_id: &str,
        event_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, RawStoreError> {
        // Usually one scan; another only when a resent copy changed an id's type (see `PageWindow`).
        let mut scans = PageScans::new(after_event_id, limit);
        while let Some(mut window) = scans.next_window() {
            self.for_each_copy(customer_id, hour_start, bucket, WriteOrder::OldestFirst, |event, batch_id| {
                let passes_filter = event_type.is_none_or(|wanted| event.event_type == wanted);
                window.offer(event.event_id, passes_filter, || event.to_stored(batch_id));
            })
            .await?;
            scans.add(window);
        }
        Ok(scans.into_page())
    }

    async fn count_user_events(&self, matcher: &UserMatcher, hour_start: i64) -> Result<u64, RawStoreError> {
        let mut count = 0;
        for bucket in 0..self.bucket_count {
            let mut ids: HashSet<String> = HashSet::new();
            self.for_each_copy(
                matcher.customer_id().as_str(),
                hour_start,
                bucket,
                WriteOrder::OldestFirst,
                |event, _| {
                    if event.user_id.is_some_and(|user_id| matcher.matches(user_id)) && !ids.contains(event.event_id) {
                        ids.insert(event.event_id.to_owned());
                    }
                },
            )
            .await?;
            count += ids.len() as u64;
        }
        Ok(count)
    }

    async fn erase_user_events(&self, matcher: &UserMatcher, hour_start: i64) -> Result<u64, RawStoreError> {
        let mut erased = 0;
        for bucket in 0..self.bucket_count {
            erased += self.erase_in_bucket(matcher, hour_start, bucket).await?;
        }
        Ok(erased)
    }
}
