//! [`CqlRawStore`]: writes batch records as unlogged single-partition batches of prepared inserts, and
//! reads a customer-hour back across its buckets, whole or a page at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::TryStreamExt;
use hourglass_core::raw_store::{EventVisitor, HourOutcomes, RawStore, RawStoreError, StoredEvent};
use hourglass_core::{hour, raw_store};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::v1::{Event, property_value};
use scylla::client::session::Session;
use scylla::deserialize::DeserializationError;
use scylla::deserialize::value::{DeserializeValue, MapIterator};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::{CqlConfig, CqlError, schema};

/// Rows fetched per request when paging a bucket through a type filter: what one
/// [`RawStore::read_bucket_page`] call holds at most besides its page, and few enough round trips to
/// skip past the other types (a row is a few hundred bytes, so about half a megabyte).
const FILTERED_PAGE_ROWS: usize = 2000;

/// The CQL implementation of [`RawStore`].
#[derive(Clone)]
pub struct CqlRawStore {
    session: Arc<Session>,
    /// `event_batches[n - 1]` is an unlogged batch of `n` event inserts, built once: a write only binds
    /// values to it.
    event_batches: Arc<[Batch]>,
    /// Likewise for outcome inserts.
    outcome_batches: Arc<[Batch]>,
    select_hour_bucket: PreparedStatement,
    /// The events of a bucket after an event id, in clustering (event id) order.
    select_bucket_after: PreparedStatement,
    select_hour_outcomes: PreparedStatement,
    select_rollup_columns: PreparedStatement,
    bucket_count: u32,
    max_batch_rows: usize,
}

/// The columns of `raw_events`, in the insert's order.
type EventRow<'a> = (
    &'a str,
    CqlTimestamp,
    i32,
    &'a str,
    &'a str,
    CqlTimestamp,
    Option<&'a str>,
    BTreeMap<&'a str, &'a str>,
    BTreeMap<&'a str, f64>,
    BTreeMap<&'a str, bool>,
    CqlTimestamp,
    &'a str,
);

/// customer_id, hour_start, batch_id, outcome, reason, count.
type OutcomeRow<'a> = (&'a str, CqlTimestamp, &'a str, i32, i32, i32);

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

    /// Prepares the statements on an open session.
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
        let insert_event = prepare(format!(
            "INSERT INTO {keyspace}.raw_events (customer_id, hour_start, bucket, event_id, event_type, occurred_at, \
             user_id, string_properties, number_properties, bool_properties, received_at, batch_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?;
        let insert_outcome = prepare(format!(
            "INSERT INTO {keyspace}.batch_outcomes (customer_id, hour_start, batch_id, outcome, reason, count) \
             VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .await?;
        let select_hour_bucket = prepare(format!(
            "SELECT event_id, event_type, occurred_at, user_id, string_properties, number_properties, \
             bool_properties, batch_id FROM {keyspace}.raw_events \
             WHERE customer_id = ? AND hour_start = ? AND bucket = ?"
        ))
        .await?;
        let select_bucket_after = prepare(format!(
            "SELECT event_id, event_type, occurred_at, user_id, string_properties, number_properties, \
             bool_properties, batch_id FROM {keyspace}.raw_events \
             WHERE customer_id = ? AND hour_start = ? AND bucket = ? AND event_id > ?"
        ))
        .await?;
        let select_hour_outcomes = prepare(format!(
            "SELECT outcome, reason, count FROM {keyspace}.batch_outcomes WHERE customer_id = ? AND hour_start = ?"
        ))
        .await?;
        let select_rollup_columns = prepare(format!(
            "SELECT event_type, user_id, number_properties FROM {keyspace}.raw_events \
             WHERE customer_id = ? AND hour_start = ? AND bucket = ?"
        ))
        .await?;
        let max_batch_rows = config.max_batch_rows.max(1);
        Ok(Self {
            session,
            event_batches: batches_of(&insert_event, max_batch_rows),
            outcome_batches: batches_of(&insert_outcome, max_batch_rows),
            select_hour_bucket,
            select_bucket_after,
            select_hour_outcomes,
            select_rollup_columns,
            bucket_count,
            max_batch_rows,
        })
    }

    /// The bucket of an event id, as the `bucket` column holds it.
    pub fn bucket_of(&self, event_id: &str) -> i32 {
        // Lossless for any real configuration: a bucket is below the bucket count, a few hundred at most.
        raw_store::bucket_of(event_id, self.bucket_count) as i32
    }

    /// Every event of a customer-hour, across all buckets.
    pub async fn read_hour(&self, customer_id: &str, hour_start: i64) -> Result<Vec<StoredEvent>, RawStoreError> {
        let mut events = Vec::new();
        for bucket in 0..self.bucket_count {
            events.extend(self.read_bucket(customer_id, hour_start, bucket).await?);
        }
        Ok(events)
    }

    fn event_row<'a>(&self, record: &'a EventBatchRecord, event: &'a Event) -> (i64, i32, EventRow<'a>) {
        let occurred_at_ms =
            event.occurred_at.as_ref().map(|time| hour::epoch_millis(time.seconds, time.nanos)).unwrap_or_default();
        let hour_start = hour::hour_start(occurred_at_ms.div_euclid(1000));
        let bucket = self.bucket_of(&event.event_id);
        let mut strings = BTreeMap::new();
        let mut numbers = BTreeMap::new();
        let mut bools = BTreeMap::new();
        for (name, value) in &event.properties {
            match &value.kind {
                Some(property_value::Kind::StringValue(text)) => {
                    strings.insert(name.as_str(), text.as_str());
                }
                Some(property_value::Kind::NumberValue(number)) => {
                    numbers.insert(name.as_str(), *number);
                }
                Some(property_value::Kind::BoolValue(flag)) => {
                    bools.insert(name.as_str(), *flag);
                }
                None => {}
            }
        }
        let row = (
            record.customer_id.as_str(),
            CqlTimestamp(hour_start.saturating_mul(1000)),
            bucket,
            event.event_id.as_str(),
            event.event_type.as_str(),
            CqlTimestamp(occurred_at_ms),
            event.user_id.as_deref(),
            strings,
            numbers,
            bools,
            CqlTimestamp(record.received_at_unix_ms),
            record.batch_id.as_str(),
        );
        (hour_start, bucket, row)
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

/// A row of `select_bucket_after`, borrowed from the page: a row the type filter drops is never copied.
type BorrowedEventRow<'frame, 'metadata> = (
    &'frame str,
    &'frame str,
    CqlTimestamp,
    Option<&'frame str>,
    Option<MapIterator<'frame, 'metadata, &'frame str, &'frame str>>,
    Option<MapIterator<'frame, 'metadata, &'frame str, f64>>,
    Option<MapIterator<'frame, 'metadata, &'frame str, bool>>,
    &'frame str,
);

/// An owned copy of a borrowed `raw_events` row.
fn stored_event(row: BorrowedEventRow<'_, '_>) -> Result<StoredEvent, DeserializationError> {
    let (event_id, event_type, occurred_at, user_id, strings, numbers, bools, batch_id) = row;
    Ok(StoredEvent {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        occurred_at_ms: occurred_at.0,
        user_id: user_id.map(str::to_owned),
        string_properties: owned_map(strings, str::to_owned)?,
        number_properties: owned_map(numbers, |number| number)?,
        bool_properties: owned_map(bools, |flag| flag)?,
        batch_id: batch_id.to_owned(),
    })
}

/// The entries of a borrowed map column (absent: empty), names and values owned.
fn owned_map<'frame, 'metadata, Borrowed, Owned>(
    map: Option<MapIterator<'frame, 'metadata, &'frame str, Borrowed>>,
    to_owned: impl Fn(Borrowed) -> Owned,
) -> Result<BTreeMap<String, Owned>, DeserializationError>
where
    Borrowed: DeserializeValue<'frame, 'metadata>,
{
    map.into_iter().flatten().map(|entry| entry.map(|(name, value)| (name.to_owned(), to_owned(value)))).collect()
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> RawStoreError {
    RawStoreError::Unavailable(Box::new(error))
}

impl RawStore for CqlRawStore {
    async fn write_records(&self, records: &[EventBatchRecord]) -> Result<(), RawStoreError> {
        // Group rows by partition, across records: an unlogged batch is cheap only when all its rows
        // share one, and bigger batches mean fewer requests for both sides.
        let mut partitions: HashMap<(&str, i64, i32), Vec<EventRow<'_>>> = HashMap::new();
        let mut outcome_partitions: HashMap<(&str, i64), Vec<OutcomeRow<'_>>> = HashMap::new();
        for record in records {
            for event in &record.events {
                let (hour_start, bucket, row) = self.event_row(record, event);
                partitions.entry((record.customer_id.as_str(), hour_start, bucket)).or_default().push(row);
            }
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
        }

        let mut event_writes = Vec::new();
        for rows in partitions.values() {
            for chunk in rows.chunks(self.max_batch_rows) {
                event_writes.push(self.session.batch(&self.event_batches[chunk.len() - 1], chunk));
            }
        }
        let mut outcome_writes = Vec::new();
        for rows in outcome_partitions.values() {
            for chunk in rows.chunks(self.max_batch_rows) {
                outcome_writes.push(self.session.batch(&self.outcome_batches[chunk.len() - 1], chunk));
            }
        }
        futures::future::try_join(
            futures::future::try_join_all(event_writes),
            futures::future::try_join_all(outcome_writes),
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
        let values = (customer_id, CqlTimestamp(hour_start.saturating_mul(1000)), bucket as i32);
        let mut paging_state = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&self.select_rollup_columns, values, paging_state)
                .await
                .map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            type Row<'frame, 'metadata> =
                (&'frame str, Option<&'frame str>, Option<MapIterator<'frame, 'metadata, &'frame str, f64>>);
            for row in rows.rows::<Row<'_, '_>>().map_err(unavailable)? {
                let (event_type, user_id, numbers) = row.map_err(unavailable)?;
                let mut numbers = numbers.into_iter().flatten().filter_map(Result::ok);
                visitor.visit(event_type, user_id, &mut numbers);
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging_state = state,
                PagingStateResponse::NoMorePages => return Ok(visitor),
            }
        }
    }

    async fn read_bucket(
        &self,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
    ) -> Result<Vec<StoredEvent>, RawStoreError> {
        let pager = self
            .session
            .execute_iter(
                self.select_hour_bucket.clone(),
                (customer_id, CqlTimestamp(hour_start.saturating_mul(1000)), bucket as i32),
            )
            .await
            .map_err(unavailable)?;
        type Row = (
            String,
            String,
            CqlTimestamp,
            Option<String>,
            Option<BTreeMap<String, String>>,
            Option<BTreeMap<String, f64>>,
            Option<BTreeMap<String, bool>>,
            String,
        );
        let mut rows = pager.rows_stream::<Row>().map_err(unavailable)?;
        let mut events = Vec::new();
        while let Some((event_id, event_type, occurred_at, user_id, strings, numbers, bools, batch_id)) =
            rows.try_next().await.map_err(unavailable)?
        {
            events.push(StoredEvent {
                event_id,
                event_type,
                occurred_at_ms: occurred_at.0,
                user_id,
                string_properties: strings.unwrap_or_default(),
                number_properties: numbers.unwrap_or_default(),
                bool_properties: bools.unwrap_or_default(),
                batch_id,
            });
        }
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The partition key and `event_id >` on its clustering column: the server reads from the cursor
        // on, and a driver page at a time is in memory. Without a filter every row counts, so a page
        // of `limit` rows is the whole read; with one, the type is checked here (a server-side filter on
        // a regular column would need ALLOW FILTERING) and pages continue until `limit` rows match.
        let page_rows = match event_type {
            None => limit.min(FILTERED_PAGE_ROWS),
            Some(_) => FILTERED_PAGE_ROWS,
        };
        let mut statement = self.select_bucket_after.clone();
        statement.set_page_size(i32::try_from(page_rows).unwrap_or(i32::MAX));
        let values = (customer_id, CqlTimestamp(hour_start * 1000), bucket as i32, after_event_id);
        let mut events = Vec::with_capacity(limit.min(page_rows));
        let mut paging_state = PagingState::start();
        loop {
            let (result, next) =
                self.session.execute_single_page(&statement, values, paging_state).await.map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            for row in rows.rows::<BorrowedEventRow<'_, '_>>().map_err(unavailable)? {
                let row = row.map_err(unavailable)?;
                let (_, row_event_type, ..) = row;
                if event_type.is_some_and(|wanted| row_event_type != wanted) {
                    continue;
                }
                events.push(stored_event(row).map_err(unavailable)?);
                if events.len() == limit {
                    return Ok(events);
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging_state = state,
                PagingStateResponse::NoMorePages => return Ok(events),
            }
        }
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
        Ok(outcomes)
    }

    async fn check_ready(&self) -> Result<(), RawStoreError> {
        self.session.query_unpaged("SELECT release_version FROM system.local", ()).await.map_err(unavailable)?;
        Ok(())
    }
}
