//! [`CqlRawStore`]: writes the events of the records of one call as compressed blocks, one
//! `raw_event_blocks` row per (customer, hour, bucket) they touch (`raw_block::grouped_blocks`: cut
//! between records past `--cql-max-block-bytes`), grouped by partition into unlogged single-partition
//! batches; reads a bucket back block by block, each id once as its last written copy.
//!
//! # Which copy is the last written
//! An event id can be in several records (a client resending a batch whose ack it lost, or an event in
//! another batch). Blocks are clustered by (`received_at`, `batch_id`), newest first: the time the
//! collector received the record, then its batch id to order two records received in the same
//! millisecond. That order is a property of the records, not of their delivery: a record redelivered or
//! replayed from the log rewrites its own row at its own place, so it never overtakes a later resend, and
//! every reader agrees on the order without any state. A block of several records takes its newest
//! record's place and holds their events oldest record first, so inside one write call the order is
//! exactly the one a block per record gave. docs/architecture.md ("The raw store's layout") has the
//! reasoning, the alternatives, and the one corner where grouping changes which copy wins.
//!
//! A keyspace created by an older build also has `raw_events`, one row per event; [`legacy`] reads it
//! beside the blocks until it is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use hourglass_core::erasure::UserMatcher;
use hourglass_core::raw_block::{self, BlockBatches, BlockRewrite, Decompressor, EventView, PageScans, SeenEventIds};
use hourglass_core::raw_store::{self, EventVisitor, HourOutcomes, PlanCheckKey, RawStore, RawStoreError, StoredEvent};
use hourglass_core::record_view::RecordView;
use scylla::client::session::Session;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, MaybeUnset};

use self::legacy::LegacyRows;
use crate::{CqlConfig, CqlError, schema};

pub mod legacy;

/// Blocks fetched per request when reading a bucket: a block holds the events of the bucket of the
/// records of one write (a few to a few hundred events, at most `--cql-max-block-bytes` uncompressed
/// unless one record alone is larger, a few KiB compressed in the benchmark), so a page is a few MiB in
/// memory and few enough round trips.
const BLOCK_PAGE_ROWS: i32 = 1000;

/// The CQL implementation of [`RawStore`].
#[derive(Clone)]
pub struct CqlRawStore {
    session: Arc<Session>,
    /// `block_batches[n - 1]` is an unlogged batch of `n` block inserts, built once: a write only binds
    /// values to it.
    block_batches: Arc<[Batch]>,
    /// Likewise for outcome inserts.
    outcome_batches: Arc<[Batch]>,
    /// Likewise for tracking-plan count inserts.
    plan_check_batches: Arc<[Batch]>,
    /// The blocks of a bucket, newest first (the table's clustering order).
    select_blocks_newest_first: PreparedStatement,
    /// The blocks of a bucket, oldest first.
    select_blocks_oldest_first: PreparedStatement,
    select_hour_outcomes: PreparedStatement,
    /// The blocks of a bucket with their clustering key and remaining TTL, to rewrite some (erasure).
    select_blocks_with_keys: PreparedStatement,
    /// Rewrites one block in place (same key) with a given TTL, so it expires when it would have.
    rewrite_block: PreparedStatement,
    /// Deletes one block.
    delete_block: PreparedStatement,
    select_hour_plan_checks: PreparedStatement,
    /// The old one-row-per-event table, while the keyspace has it.
    legacy: Option<LegacyRows>,
    bucket_count: u32,
    max_batch_rows: usize,
    max_block_bytes: usize,
}

/// The columns of `raw_event_blocks`, in the insert's order: customer_id, hour_start, bucket,
/// received_at, batch_id, events, batches (unset for a block of one record's events: a null would write a
/// tombstone, which costs the server at every write, compaction and read).
type BlockRow<'a> = (&'a str, CqlTimestamp, i32, CqlTimestamp, String, Vec<u8>, MaybeUnset<Vec<(&'a str, i32)>>);

/// A row's `batches`, as read: borrowed from the response.
type StoredBatches<'a> = Option<Vec<(&'a str, i32)>>;

/// customer_id, hour_start, batch_id, outcome, reason, count.
type OutcomeRow<'a> = (&'a str, CqlTimestamp, &'a str, i32, i32, i32);

/// customer_id, hour_start, batch_id, plan_version, event_type, rule, rejected, count.
type PlanCheckRow<'a> = (&'a str, CqlTimestamp, &'a str, i32, &'a str, i32, bool, i32);

/// The order in which [`CqlRawStore::for_each_block_copy`] visits the copies of a bucket's events.
#[derive(Clone, Copy)]
enum WriteOrder {
    /// The last written copy first (blocks newest first, each block backwards).
    NewestFirst,
    /// The first written copy first.
    OldestFirst,
}

impl CqlRawStore {
    /// Connects, creates the schema if `config.migrate` asks for it, checks it exists and prepares the
    /// statements: what a long-running role does at start (retrying while this fails).
    pub async fn open(config: &CqlConfig) -> Result<Self, CqlError> {
        let session = Arc::new(config.connect().await?);
        if config.migrate {
            schema::migrate(&session, config).await?;
        }
        Self::with_session(session, config).await
    }

    /// Connects, checks the schema exists and prepares the statements.
    pub async fn connect(config: &CqlConfig) -> Result<Self, CqlError> {
        let session = config.connect().await?;
        Self::with_session(Arc::new(session), config).await
    }

    /// Prepares the statements on an open session; reads the old `raw_events` table too if the keyspace
    /// still has it.
    pub async fn with_session(session: Arc<Session>, config: &CqlConfig) -> Result<Self, CqlError> {
        let keyspace = config.checked_keyspace()?;
        let bucket_count = schema::bucket_count(&session, keyspace).await?;
        let prepare = |statement: String| {
            let session = Arc::clone(&session);
            async move {
                let mut prepared =
                    session.prepare(statement.as_str()).await.map_err(|error| CqlError::query("prepare", error))?;
                prepared.set_is_idempotent(true);
                Ok::<_, CqlError>(prepared)
            }
        };
        let insert_block = prepare(format!(
            "INSERT INTO {keyspace}.{} (customer_id, hour_start, bucket, received_at, batch_id, events, {}) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            schema::BLOCKS_TABLE,
            schema::BATCHES_COLUMN
        ))
        .await?;
        let insert_outcome = prepare(format!(
            "INSERT INTO {keyspace}.batch_outcomes (customer_id, hour_start, batch_id, outcome, reason, count) \
             VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .await?;
        let insert_plan_check = prepare(format!(
            "INSERT INTO {keyspace}.batch_plan_checks \
             (customer_id, hour_start, batch_id, plan_version, event_type, rule, rejected, count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?;
        let select_blocks = |order: &str| {
            format!(
                "SELECT batch_id, events, {} FROM {keyspace}.{} WHERE customer_id = ? AND hour_start = ? \
                 AND bucket = ? ORDER BY received_at {order}, batch_id {order}",
                schema::BATCHES_COLUMN,
                schema::BLOCKS_TABLE
            )
        };
        let mut select_blocks_newest_first = prepare(select_blocks("DESC")).await?;
        select_blocks_newest_first.set_page_size(BLOCK_PAGE_ROWS);
        let mut select_blocks_oldest_first = prepare(select_blocks("ASC")).await?;
        select_blocks_oldest_first.set_page_size(BLOCK_PAGE_ROWS);
        let select_hour_outcomes = prepare(format!(
            "SELECT outcome, reason, count FROM {keyspace}.batch_outcomes WHERE customer_id = ? AND hour_start = ?"
        ))
        .await?;
        let mut select_blocks_with_keys = prepare(format!(
            "SELECT received_at, batch_id, events, TTL(events), {} FROM {keyspace}.{} \
             WHERE customer_id = ? AND hour_start = ? AND bucket = ?",
            schema::BATCHES_COLUMN,
            schema::BLOCKS_TABLE
        ))
        .await?;
        select_blocks_with_keys.set_page_size(BLOCK_PAGE_ROWS);
        let rewrite_block = prepare(format!(
            "INSERT INTO {keyspace}.{} (customer_id, hour_start, bucket, received_at, batch_id, events, {}) \
             VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?",
            schema::BLOCKS_TABLE,
            schema::BATCHES_COLUMN
        ))
        .await?;
        let delete_block = prepare(format!(
            "DELETE FROM {keyspace}.{} WHERE customer_id = ? AND hour_start = ? AND bucket = ? AND received_at = ? \
             AND batch_id = ?",
            schema::BLOCKS_TABLE
        ))
        .await?;
        let select_hour_plan_checks = prepare(format!(
            "SELECT plan_version, event_type, rule, rejected, count FROM {keyspace}.batch_plan_checks \
             WHERE customer_id = ? AND hour_start = ?"
        ))
        .await?;
        let legacy = LegacyRows::prepare_if_present(&session, keyspace).await?;
        let max_batch_rows = config.max_batch_rows.max(1);
        Ok(Self {
            session,
            block_batches: batches_of(&insert_block, max_batch_rows),
            outcome_batches: batches_of(&insert_outcome, max_batch_rows),
            plan_check_batches: batches_of(&insert_plan_check, max_batch_rows),
            select_blocks_newest_first,
            select_blocks_oldest_first,
            select_hour_outcomes,
            select_blocks_with_keys,
            rewrite_block,
            delete_block,
            select_hour_plan_checks,
            legacy,
            bucket_count,
            max_batch_rows,
            max_block_bytes: config.max_block_bytes,
        })
    }

    /// The bucket of an event id, as the `bucket` column holds it.
    pub fn bucket_of(&self, event_id: &str) -> i32 {
        // Lossless for any real configuration: a bucket is below the bucket count, a few hundred at most.
        raw_store::bucket_of(event_id, self.bucket_count) as i32
    }

    /// Whether this store also reads the old one-row-per-event table ([`legacy`]).
    pub fn reads_legacy_table(&self) -> bool {
        self.legacy.is_some()
    }

    /// Every event of a customer-hour, across all buckets.
    pub async fn read_hour(&self, customer_id: &str, hour_start: i64) -> Result<Vec<StoredEvent>, RawStoreError> {
        let mut events = Vec::new();
        for bucket in 0..self.bucket_count {
            events.extend(self.read_bucket(customer_id, hour_start, bucket).await?);
        }
        Ok(events)
    }

    /// Calls `on_copy` with every copy of every event in a bucket's blocks and the batch that wrote it,
    /// in `order`: one driver page of blocks in memory, and one block decompressed, at a time.
    async fn for_each_block_copy(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        order: WriteOrder,
        mut on_copy: impl FnMut(&EventView<'_>, &str) + Send,
    ) -> Result<(), RawStoreError> {
        let statement = match order {
            WriteOrder::NewestFirst => &self.select_blocks_newest_first,
            WriteOrder::OldestFirst => &self.select_blocks_oldest_first,
        };
        let values = (customer_id, CqlTimestamp(hour_start.saturating_mul(1000)), bucket as i32);
        let mut decompressor = Decompressor::new();
        let mut paging_state = PagingState::start();
        loop {
            let (result, next) =
                self.session.execute_single_page(statement, values, paging_state).await.map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            // One buffer per page for the batch of each event of a block.
            let mut batch_ids: Vec<&str> = Vec::new();
            for row in rows.rows::<(&str, &[u8], StoredBatches<'_>)>().map_err(unavailable)? {
                let (block_id, block, batches) = row.map_err(unavailable)?;
                let events = decompressor
                    .events(block)
                    .map_err(|error| undecodable(customer_id, hour_start, block_id, error))?;
                raw_block::batch_of_each_event(block_id, runs_of(batches.as_deref()), events.len(), &mut batch_ids)
                    .map_err(|covered| {
                        let message = format!("its batches cover {covered} events, the block holds {}", events.len());
                        damaged(customer_id, hour_start, block_id, &message)
                    })?;
                let copies = events.iter().zip(batch_ids.iter());
                // Within a block too, the later copy of an id is the last written.
                let copies: Box<dyn Iterator<Item = _>> = match order {
                    WriteOrder::NewestFirst => Box::new(copies.rev()),
                    WriteOrder::OldestFirst => Box::new(copies),
                };
                for (encoded_event, batch_id) in copies {
                    let event = EventView::parse(encoded_event)
                        .map_err(|error| undecodable(customer_id, hour_start, block_id, error))?;
                    on_copy(&event, batch_id);
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging_state = state,
                PagingStateResponse::NoMorePages => return Ok(()),
            }
        }
    }
}

impl CqlRawStore {
    /// The ids of a bucket with a copy of the matcher's user, in the blocks and the old table.
    async fn user_event_ids(
        &self,
        matcher: &UserMatcher,
        hour_start: i64,
        bucket: u32,
    ) -> Result<HashSet<String>, RawStoreError> {
        let customer_id = matcher.customer_id().as_str();
        let mut ids: HashSet<String> = HashSet::new();
        self.for_each_block_copy(customer_id, hour_start, bucket, WriteOrder::OldestFirst, |event, _batch_id| {
            if event.user_id.is_some_and(|user_id| matcher.matches(user_id)) && !ids.contains(event.event_id) {
                ids.insert(event.event_id.to_owned());
            }
        })
        .await?;
        if let Some(legacy) = &self.legacy {
            legacy
                .for_each_row(&self.session, customer_id, hour_start, bucket, |row| {
                    let (event_id, user_id) = (row.0, row.3);
                    if user_id.is_some_and(|user_id| matcher.matches(user_id)) && !ids.contains(event_id) {
                        ids.insert(event_id.to_owned());
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(ids)
    }

    /// Rewrites (same key, the TTL it had left) or deletes every block of a bucket holding one of `ids`,
    /// and deletes their rows of the old table.
    pub(crate) async fn erase_in_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        ids: &HashSet<String>,
    ) -> Result<(), RawStoreError> {
        let hour = CqlTimestamp(hour_start.saturating_mul(1000));
        let values = (customer_id, hour, bucket as i32);
        let mut decompressor = Decompressor::new();
        let mut removed = Vec::new();
        let mut paging_state = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&self.select_blocks_with_keys, values, paging_state)
                .await
                .map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            for row in
                rows.rows::<(CqlTimestamp, &str, &[u8], Option<i32>, StoredBatches<'_>)>().map_err(unavailable)?
            {
                let (received_at, batch_id, block, ttl_secs, batches) = row.map_err(unavailable)?;
                let key = (customer_id, hour, bucket as i32, received_at, batch_id);
                let batches = BlockBatches::new(runs_of(batches.as_deref()).collect());
                match raw_block::without_events_at(&mut decompressor, block, ids, &mut removed)
                    .map_err(|error| undecodable(customer_id, hour_start, batch_id, error))?
                {
                    BlockRewrite::Unchanged => {}
                    BlockRewrite::Emptied => {
                        self.session.execute_unpaged(&self.delete_block, key).await.map_err(unavailable)?;
                    }
                    BlockRewrite::Rewritten(rewritten) => {
                        // No TTL left means the row had none (a table without a default TTL): TTL 0
                        // keeps it so.
                        let (customer_id, hour, bucket, received_at, batch_id) = key;
                        // The runs of the events kept, so each still names its own batch (a block
                        // without runs keeps none).
                        let batches = if batches.runs().is_empty() {
                            MaybeUnset::Unset
                        } else {
                            MaybeUnset::Set(stored_runs(&batches.without(&removed)))
                        };
                        let ttl_secs = ttl_secs.unwrap_or(0);
                        let row = (customer_id, hour, bucket, received_at, batch_id, rewritten, batches, ttl_secs);
                        self.session.execute_unpaged(&self.rewrite_block, row).await.map_err(unavailable)?;
                    }
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging_state = state,
                PagingStateResponse::NoMorePages => break,
            }
        }
        if let Some(legacy) = &self.legacy {
            legacy
                .delete_events(&self.session, customer_id, hour_start, bucket, ids.iter().map(String::as_str))
                .await?;
        }
        Ok(())
    }
}

/// Unlogged batches of 1 to `max_rows` copies of `statement`.
fn batches_of(statement: &PreparedStatement, max_rows: usize) -> Arc<[Batch]> {
    (1..=max_rows)
        .map(|rows| {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..rows {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            batch
        })
        .collect()
}

/// A row's `batches` as runs; a negative count (which no build writes) as none.
fn runs_of<'a>(batches: Option<&[(&'a str, i32)]>) -> impl Iterator<Item = (&'a str, u32)> {
    batches.unwrap_or_default().iter().map(|(batch_id, events)| (*batch_id, u32::try_from(*events).unwrap_or(0)))
}

/// Runs as the `batches` column holds them.
fn stored_runs<'a>(runs: &[(&'a str, u32)]) -> Vec<(&'a str, i32)> {
    // A block's events are a record's few MiB at most: far below i32::MAX.
    runs.iter().map(|(batch_id, events)| (*batch_id, i32::try_from(*events).unwrap_or(i32::MAX))).collect()
}

fn damaged(customer_id: &str, hour_start: i64, block_id: &str, message: &str) -> RawStoreError {
    RawStoreError::Schema(
        format!("damaged event block of customer {customer_id}, hour {hour_start}, block {block_id}: {message}").into(),
    )
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RawStoreError {
    RawStoreError::Unavailable(Box::new(error))
}

fn undecodable(customer_id: &str, hour_start: i64, batch_id: &str, error: raw_block::DecodeError) -> RawStoreError {
    RawStoreError::Schema(
        format!("undecodable event block of customer {customer_id}, hour {hour_start}, batch {batch_id}: {error}")
            .into(),
    )
}

impl RawStore for CqlRawStore {
    async fn write_records(&self, records: &[RecordView<'_>]) -> Result<(), RawStoreError> {
        // One block per customer, hour and bucket for all the records (a row is the CQL server's cost;
        // `raw_block::grouped_blocks` has the order and keys that keep last-write-wins), and rows
        // grouped by partition: an unlogged batch is cheap only when all its rows share one (several
        // rows share one only when a block was cut at `--cql-max-block-bytes`).
        let mut partitions: HashMap<(&str, i64, u32), Vec<BlockRow<'_>>> = HashMap::new();
        for block in raw_block::grouped_blocks(records, self.bucket_count, self.max_block_bytes) {
            let batches = if block.batches.is_grouped() {
                MaybeUnset::Set(stored_runs(block.batches.runs()))
            } else {
                MaybeUnset::Unset
            };
            let row = (
                block.customer_id,
                CqlTimestamp(block.hour_start.saturating_mul(1000)),
                // Lossless: below the bucket count (see `bucket_of`).
                block.bucket as i32,
                CqlTimestamp(block.received_at_unix_ms),
                block.block_id,
                block.block,
                batches,
            );
            partitions.entry((block.customer_id, block.hour_start, block.bucket)).or_default().push(row);
        }
        let mut outcome_partitions: HashMap<(&str, i64), Vec<OutcomeRow<'_>>> = HashMap::new();
        let mut plan_check_partitions: HashMap<(&str, i64), Vec<PlanCheckRow<'_>>> = HashMap::new();
        for record in records {
            for count in &record.outcomes {
                let row = (
                    record.customer_id.as_str(),
                    CqlTimestamp(count.hour_start_unix_secs.saturating_mul(1000)),
                    record.batch_id.as_str(),
                    count.outcome,
                    count.reason,
                    i32::try_from(count.count).unwrap_or(i32::MAX),
                );
                outcome_partitions
                    .entry((record.customer_id.as_str(), count.hour_start_unix_secs))
                    .or_default()
                    .push(row);
            }
            for count in &record.plan_checks {
                let row = (
                    record.customer_id.as_str(),
                    CqlTimestamp(count.hour_start_unix_secs.saturating_mul(1000)),
                    record.batch_id.as_str(),
                    i32::try_from(count.plan_version).unwrap_or(i32::MAX),
                    count.event_type.as_str(),
                    count.rule,
                    count.rejected,
                    i32::try_from(count.count).unwrap_or(i32::MAX),
                );
                plan_check_partitions
                    .entry((record.customer_id.as_str(), count.hour_start_unix_secs))
                    .or_default()
                    .push(row);
            }
        }

        let mut block_writes = Vec::new();
        for rows in partitions.values() {
            for chunk in rows.chunks(self.max_batch_rows) {
                block_writes.push(self.session.batch(&self.block_batches[chunk.len() - 1], chunk));
            }
        }
        let mut outcome_writes = Vec::new();
        for rows in outcome_partitions.values() {
            for chunk in rows.chunks(self.max_batch_rows) {
                outcome_writes.push(self.session.batch(&self.outcome_batches[chunk.len() - 1], chunk));
            }
        }
        let mut plan_check_writes = Vec::new();
        for rows in plan_check_partitions.values() {
            for chunk in rows.chunks(self.max_batch_rows) {
                plan_check_writes.push(self.session.batch(&self.plan_check_batches[chunk.len() - 1], chunk));
            }
        }
        futures::future::try_join3(
            futures::future::try_join_all(block_writes),
            futures::future::try_join_all(outcome_writes),
            futures::future::try_join_all(plan_check_writes),
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    fn bucket_count(&self) -> u32 {
        self.bucket_count
    }

    async fn fold_bucket<V: EventVisitor>(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        mut visitor: V,
    ) -> Result<V, RawStoreError> {
        // Newest first, keeping the first copy of each id seen: the last write wins.
        let mut seen_ids = SeenEventIds::new();
        self.for_each_block_copy(customer_id, hour_start, bucket, WriteOrder::NewestFirst, |event, _batch_id| {
            if seen_ids.insert(event.event_id) {
                visitor.visit(event.event_type, event.user_id, &mut event.numbers());
            }
        })
        .await?;
        if let Some(legacy) = &self.legacy {
            legacy
                .for_each_row(&self.session, customer_id, hour_start, bucket, |row| {
                    let (event_id, event_type, _, user_id, _, numbers, _, _) = row;
                    if seen_ids.insert(event_id) {
                        let mut numbers = numbers.into_iter().flatten().filter_map(Result::ok);
                        visitor.visit(event_type, user_id, &mut numbers);
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(visitor)
    }

    async fn read_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
    ) -> Result<Vec<StoredEvent>, RawStoreError> {
        let mut seen_ids = SeenEventIds::new();
        let mut events = Vec::new();
        self.for_each_block_copy(customer_id, hour_start, bucket, WriteOrder::NewestFirst, |event, batch_id| {
            if seen_ids.insert(event.event_id) {
                events.push(event.to_stored(batch_id));
            }
        })
        .await?;
        if let Some(legacy) = &self.legacy {
            legacy
                .for_each_row(&self.session, customer_id, hour_start, bucket, |row| {
                    if seen_ids.insert(row.0) {
                        events.push(legacy::stored_event(row)?);
                    }
                    Ok(())
                })
                .await?;
        }
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
        // Blocks are in write order, not id order, so a page scans the bucket's blocks oldest first
        // through a window bounded by the page (why a page cannot start at a (block, index) position
        // instead: docs/architecture.md, "The raw store's layout").
        // Usually one scan; another only when a resent copy changed an id's type (see `PageWindow`).
        let mut scans = PageScans::new(after_event_id, limit);
        while let Some(mut window) = scans.next_window() {
            if let Some(legacy) = &self.legacy {
                // The old rows are older than every block: offered first.
                legacy
                    .for_each_row(&self.session, customer_id, hour_start, bucket, |row| {
                        let (event_id, row_event_type) = (row.0, row.1);
                        let passes_filter = event_type.is_none_or(|wanted| row_event_type == wanted);
                        let stored = legacy::stored_event(row)?;
                        window.offer(event_id, passes_filter, || stored);
                        Ok(())
                    })
                    .await?;
            }
            self.for_each_block_copy(customer_id, hour_start, bucket, WriteOrder::OldestFirst, |event, batch_id| {
                let passes_filter = event_type.is_none_or(|wanted| event.event_type == wanted);
                window.offer(event.event_id, passes_filter, || event.to_stored(batch_id));
            })
            .await?;
            scans.add(window);
        }
        Ok(scans.into_page())
    }

    async fn read_outcomes(&self, customer_id: &str, hour_start: i64) -> Result<HourOutcomes, RawStoreError> {
        let pager = self
            .session
            .execute_iter(
                self.select_hour_outcomes.clone(),
                (customer_id, CqlTimestamp(hour_start.saturating_mul(1000))),
            )
            .await
            .map_err(unavailable)?;
        let mut rows = pager.rows_stream::<(i32, i32, i32)>().map_err(unavailable)?;
        let mut outcomes = HourOutcomes::default();
        while let Some((outcome, reason, count)) = rows.try_next().await.map_err(unavailable)? {
            if !outcomes.add(outcome, reason, u64::try_from(count).unwrap_or(0)) {
                tracing::warn!(outcome, customer_id, hour_start, "unknown outcome in batch_outcomes; not counted");
            }
        }
        let pager = self
            .session
            .execute_iter(
                self.select_hour_plan_checks.clone(),
                (customer_id, CqlTimestamp(hour_start.saturating_mul(1000))),
            )
            .await
            .map_err(unavailable)?;
        let mut rows = pager.rows_stream::<(i32, String, i32, bool, i32)>().map_err(unavailable)?;
        while let Some((plan_version, event_type, rule, rejected, count)) =
            rows.try_next().await.map_err(unavailable)?
        {
            let plan_version = u32::try_from(plan_version).unwrap_or(0);
            let key = PlanCheckKey { plan_version, event_type, rule, rejected };
            outcomes.add_plan_check(key, u64::try_from(count).unwrap_or(0));
        }
        Ok(outcomes)
    }

    async fn check_ready(&self) -> Result<(), RawStoreError> {
        self.session.query_unpaged("SELECT release_version FROM system.local", ()).await.map_err(unavailable)?;
        Ok(())
    }

    async fn count_user_events(&self, matcher: &UserMatcher, hour_start: i64) -> Result<u64, RawStoreError> {
        let mut count = 0;
        for bucket in 0..self.bucket_count {
            count += self.user_event_ids(matcher, hour_start, bucket).await?.len() as u64;
        }
        Ok(count)
    }

    async fn erase_user_events(&self, matcher: &UserMatcher, hour_start: i64) -> Result<u64, RawStoreError> {
        let mut erased = 0;
        for bucket in 0..self.bucket_count {
            let ids = self.user_event_ids(matcher, hour_start, bucket).await?;
            if ids.is_empty() {
                continue;
            }
            self.erase_in_bucket(matcher.customer_id().as_str(), hour_start, bucket, &ids).await?;
            erased += ids.len() as u64;
        }
        Ok(erased)
    }
}
