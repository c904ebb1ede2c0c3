//! The old layout, `raw_events` (one row per event, clustered by event id), read beside the blocks while
//! a keyspace written by an older build still holds it: the migration path of docs/architecture.md ("The
//! raw store's layout"). Nothing writes it any more; its rows expire with the table's TTL, after which
//! an operator drops it and the roles, restarted, stop reading it.
//!
//! Its rows were all written before any block of the same bucket (the new build writes only blocks), so
//! every one of them is older than every block: a reader offers them first when going oldest first, and
//! last (behind the ids the blocks already gave) when going newest first.

use std::collections::BTreeMap;

use hourglass_core::raw_store::{RawStoreError, StoredEvent};
use scylla::client::session::Session;
use scylla::deserialize::DeserializationError;
use scylla::deserialize::value::{DeserializeValue, MapIterator};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use super::unavailable;
use crate::CqlError;

/// The old table's name.
pub const LEGACY_TABLE: &str = "raw_events";

/// Rows of the old table fetched per request.
const PAGE_ROWS: i32 = 2000;

/// A row of the old table, borrowed from the driver's page.
pub(crate) type LegacyRow<'frame, 'metadata> = (
    &'frame str,
    &'frame str,
    CqlTimestamp,
    Option<&'frame str>,
    Option<MapIterator<'frame, 'metadata, &'frame str, &'frame str>>,
    Option<MapIterator<'frame, 'metadata, &'frame str, f64>>,
    Option<MapIterator<'frame, 'metadata, &'frame str, bool>>,
    &'frame str,
);

/// The statement that reads a bucket of the old table, prepared only when the keyspace has it.
#[derive(Clone)]
pub(crate) struct LegacyRows {
    select_bucket: PreparedStatement,
    /// Deletes one event's row (an erasure).
    delete_event: PreparedStatement,
}

impl LegacyRows {
    /// The old table's reader if `keyspace` still has the table, else `None`.
    pub(crate) async fn prepare_if_present(session: &Session, keyspace: &str) -> Result<Option<Self>, CqlError> {
        let tables = session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                (keyspace, LEGACY_TABLE),
            )
            .await
            .map_err(|error| CqlError::query("reading the schema", error))?
            .into_rows_result()
            .map_err(|error| CqlError::query("reading the schema", error))?;
        if tables.rows_num() == 0 {
            return Ok(None);
        }
        let mut select_bucket = session
            .prepare(format!(
                "SELECT event_id, event_type, occurred_at, user_id, string_properties, number_properties, \
                 bool_properties, batch_id FROM {keyspace}.{LEGACY_TABLE} \
                 WHERE customer_id = ? AND hour_start = ? AND bucket = ?"
            ))
            .await
            .map_err(|error| CqlError::query("prepare", error))?;
        select_bucket.set_is_idempotent(true);
        select_bucket.set_page_size(PAGE_ROWS);
        let mut delete_event = session
            .prepare(format!(
                "DELETE FROM {keyspace}.{LEGACY_TABLE} WHERE customer_id = ? AND hour_start = ? AND bucket = ? \
                 AND event_id = ?"
            ))
            .await
            .map_err(|error| CqlError::query("prepare", error))?;
        delete_event.set_is_idempotent(true);
        tracing::info!(keyspace, table = LEGACY_TABLE, "reading the old one-row-per-event table beside the blocks");
        Ok(Some(Self { select_bucket, delete_event }))
    }

    /// Calls `on_row` with every row of a bucket, in event-id order, a driver page in memory at a time.
    pub(crate) async fn for_each_row(
        &self,
        session: &Session,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        mut on_row: impl FnMut(LegacyRow<'_, '_>) -> Result<(), DeserializationError> + Send,
    ) -> Result<(), RawStoreError> {
        let values = (customer_id, CqlTimestamp(hour_start.saturating_mul(1000)), bucket as i32);
        let mut paging_state = PagingState::start();
        loop {
            let (result, next) =
                session.execute_single_page(&self.select_bucket, values, paging_state).await.map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(unavailable)?;
            for row in rows.rows::<LegacyRow<'_, '_>>().map_err(unavailable)? {
                on_row(row.map_err(unavailable)?).map_err(unavailable)?;
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging_state = state,
                PagingStateResponse::NoMorePages => return Ok(()),
            }
        }
    }
}

impl LegacyRows {
    /// Deletes the old rows of these event ids from a bucket (an erasure; the ids need not have rows).
    pub(crate) async fn delete_events(
        &self,
        session: &Session,
        customer_id: &str,
        hour_start: i64,
        bucket: u32,
        event_ids: impl IntoIterator<Item = &str>,
    ) -> Result<(), RawStoreError> {
        let hour = CqlTimestamp(hour_start.saturating_mul(1000));
        for event_id in event_ids {
            session
                .execute_unpaged(&self.delete_event, (customer_id, hour, bucket as i32, event_id))
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

/// An owned copy of a borrowed old row.
pub(crate) fn stored_event(row: LegacyRow<'_, '_>) -> Result<StoredEvent, DeserializationError> {
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
