//! The [`RollupReader`] seam: what the query service reads from the rollup store.
//!
//! Kept apart from [`RollupStore`](crate::rollup_store::RollupStore) because it may be served by a
//! different database (a Postgres read replica) and needs nothing of the job machinery. Every read is
//! scoped to one customer: the query service passes the customer of the caller's API key, never one
//! taken from a request.

use std::future::Future;
use std::sync::Arc;

use crate::rollup_changes::RollupChanges;
use crate::rollup_store::{LedgerRow, RollupStoreError};

/// One event type's hourly figures, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyRollupRow {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// The event type.
    pub event_type: String,
    /// Distinct events of the type in the hour.
    pub events: u64,
    /// Distinct users, exact for this hour and type.
    pub distinct_users: u64,
    /// The users as a mergeable HyperLogLog sketch; empty unless asked for (`with_sketches`). A
    /// sketch is up to 4 KiB, so reports that need no merging leave them in the database.
    pub users_sketch: Vec<u8>,
}

/// One hour's figures over all event types, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyTotalsRow {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// Distinct events of the hour.
    pub events: u64,
    /// Distinct users of the hour over all event types, exact.
    pub distinct_users: u64,
    /// The users as a mergeable sketch; empty unless asked for (`with_sketches`).
    pub users_sketch: Vec<u8>,
}

/// One numeric property's hourly figures for one event type, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct HourlyNumericRow {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// The event type.
    pub event_type: String,
    /// The property name.
    pub property: String,
    /// Events carrying the property as a number.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// An event type seen in a range, with its totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypeSeen {
    /// The event type.
    pub event_type: String,
    /// Events of the type in the range.
    pub events: u64,
    /// The first hour of the range that has the type, seconds since the Unix epoch.
    pub first_hour: i64,
    /// The last such hour.
    pub last_hour: i64,
}

/// Where one customer-hour stands in aggregation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourStatus {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// The rollup's revision (1 for the first), `None` while the hour was never aggregated.
    pub revision: Option<u32>,
    /// The version of the aggregation logic that computed the rollup.
    pub logic_version: Option<u32>,
    /// Whether the current rollup is final.
    pub is_final: bool,
    /// When the hour's rollup became final, seconds since the Unix epoch.
    pub final_as_of: Option<i64>,
    /// When the current rollup was computed, seconds since the Unix epoch.
    pub computed_at: Option<i64>,
    /// Distinct events in the current rollup.
    pub events: u64,
    /// Data arrived after the current rollup (or there is none yet): a (re)aggregation is due. Data the
    /// aggregator refused (see `refused`) is not pending: no aggregation of it will come.
    pub pending: bool,
    /// Data arrived after the current rollup (or there is none) that will never be aggregated, and why:
    /// the aggregator refused the hour because its raw data may have expired, leaving its rollup as it
    /// was. `None` otherwise.
    pub refused: Option<String>,
}

/// One erasure request as applied to one hour (`crate::erasure`): the person's events deleted from the
/// hour's raw data and the hour recomputed, as the request's run recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedErasure {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour_start: i64,
    /// The erasure request's id.
    pub request_id: String,
    /// The person's distinct events found in the hour when the request was planned, and deleted.
    pub events: u64,
    /// The hour's rollup revision written after the deletion; `None` while the hour is still being erased.
    pub revision: Option<u32>,
    /// When the hour was erased and recomputed, seconds since the Unix epoch; `None` until then.
    pub erased_at: Option<i64>,
}

/// Read access to one customer's rollups, hour statuses and ledger.
pub trait RollupReader: Send + Sync + 'static {
    /// Hourly rows of hours starting in `[from, to)`, ordered by hour then event type; only the given
    /// event types unless `event_types` is empty; with their users' sketches only if `with_sketches`.
    fn hourly_rollups(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        event_types: &[String],
        with_sketches: bool,
    ) -> impl Future<Output = Result<Vec<HourlyRollupRow>, RollupStoreError>> + Send;

    /// Per-hour totals over all event types of hours starting in `[from, to)` that have events, oldest
    /// first; with their users' sketches only if `with_sketches`.
    fn hourly_totals(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        with_sketches: bool,
    ) -> impl Future<Output = Result<Vec<HourlyTotalsRow>, RollupStoreError>> + Send;

    /// Hourly numeric rows of hours starting in `[from, to)`, ordered by hour, event type, property;
    /// only the given event types unless `event_types` is empty.
    fn hourly_numeric(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
        event_types: &[String],
    ) -> impl Future<Output = Result<Vec<HourlyNumericRow>, RollupStoreError>> + Send;

    /// The event types with events in hours starting in `[from, to)`, by name.
    fn event_types(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<Vec<EventTypeSeen>, RollupStoreError>> + Send;

    /// The status of every hour starting in `[from, to)` that received data or has a rollup, oldest first.
    fn hour_statuses(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<Vec<HourStatus>, RollupStoreError>> + Send;

    /// Ledger rows of hours starting in `[from, to)`, of one customer or (for operators) all, oldest
    /// first, then by customer.
    fn ledger(
        &self,
        customer_id: Option<&str>,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<Vec<LedgerRow>, RollupStoreError>> + Send;

    /// The erasures applied to, or planned for, the customer's hours starting in `[from, to)`, by hour
    /// then request (oldest first): read from the erasure requests' own records
    /// ([`ErasureStore`](crate::erasure::ErasureStore)), in the same database as the rollups.
    fn applied_erasures(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<Vec<AppliedErasure>, RollupStoreError>> + Send;

    /// The sum of the revisions of the customer's hours starting in `[from, to)`. Every rollup written in
    /// the range adds one (a first rollup makes a revision 1, each replacement one more), so an unchanged
    /// sum means unchanged rows: what a cache of reports checks before answering from memory.
    fn revision_sum(
        &self,
        customer_id: &str,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<u64, RollupStoreError>> + Send;

    /// Checks the store can be read, for readiness.
    fn check_ready(&self) -> impl Future<Output = Result<(), RollupStoreError>> + Send;

    /// Tells `changes` of every customer whose rollups change, for as long as the future runs (forever:
    /// callers drop it), so a cache may skip [`revision_sum`](Self::revision_sum) between changes. A store
    /// that announces nothing returns at once and `changes` never gives a stamp, so every use of a cached
    /// report reads the revision sum.
    fn watch_changes(&self, _changes: Arc<RollupChanges>) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}
