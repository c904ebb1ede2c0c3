//! The [`RollupStore`] seam: hourly rollups and the jobs that produce them.
//!
//! Jobs and rollups share one store on purpose: a job's rollup is written and the job completed in a
//! single transaction, so an hour is never half-replaced and never marked done without its rows.
//! Postgres in distributed mode (`hourglass-postgres`), the embedded store in standalone mode.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::BoxError;
use crate::job_queue::CustomerHour;
use crate::raw_store::HourOutcomes;

/// Errors from a rollup store.
#[derive(Debug, thiserror::Error)]
pub enum RollupStoreError {
    /// The store could not be reached or the transaction failed; nothing was written.
    #[error("rollup store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store's schema is missing or behind this build (a table or column does not exist): an
    /// operator must migrate; retrying alone will not help.
    #[error("rollup store schema problem: {0}")]
    Schema(#[source] BoxError),
    /// The store holds a row this build cannot read (e.g. an invalid customer id).
    #[error("rollup store holds invalid data: {0}")]
    InvalidData(String),
    /// The rollup holds a number that is NaN or infinite; nothing was written. The aggregation never
    /// produces one ([`NumericRollup`] saturates), so this is a bug to report: retrying cannot mend it.
    #[error(
        "refusing to store a rollup with a non-finite {stat} ({value}) for event type {event_type:?}, property \
         {property:?}"
    )]
    NonFinite {
        /// The event type of the offending row.
        event_type: String,
        /// Its property.
        property: String,
        /// Which figure: `sum`, `min` or `max`.
        stat: &'static str,
        /// The figure.
        value: f64,
    },
}

/// Which rollups a worker asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Final rollups of hours that started before this instant (closed, plus the allowed lateness).
    Final {
        /// Seconds since the Unix epoch.
        hours_before_unix: i64,
    },
    /// Provisional rollups of hours that started at or after this instant (still open or within their
    /// lateness) and have new data, at most once per `min_interval` per hour.
    Provisional {
        /// Seconds since the Unix epoch.
        hours_from_unix: i64,
        /// The least time between two provisional rollups of one hour.
        min_interval: Duration,
    },
}

/// Identifies one lease of one customer-hour. The store issues a new random token every time it leases
/// the hour and keeps it with the lease; renewing, failing and completing need it, so neither a worker
/// whose lease expired nor a second worker started under the same worker id can act on a later lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken(i64);

impl LeaseToken {
    /// The token a store kept (stores issue tokens; only they and tests build one).
    pub fn from_stored(value: i64) -> Self {
        Self(value)
    }

    /// The token as stores keep it.
    pub fn stored(self) -> i64 {
        self.0
    }
}

/// A leased aggregation job: one customer-hour, as of one generation of its dirty mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLease {
    /// The customer-hour to aggregate.
    pub customer_hour: CustomerHour,
    /// The mark's generation when leased: completing records it, so data marked later re-queues the hour.
    pub generation: i64,
    /// The worker that took the lease, for logs: worker ids need not be unique, so the token, not the
    /// owner, says whose lease it is.
    pub owner: String,
    /// This lease's token, which every later call on the lease must present.
    pub token: LeaseToken,
}

/// One event type's figures for one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypeRollup {
    /// The event type.
    pub event_type: String,
    /// Distinct events (by event id) of this type in the hour.
    pub events: u64,
    /// Distinct users among them, exact (events without a user are not counted here).
    pub distinct_users: u64,
    /// The same users as a mergeable sketch ([`HyperLogLog::to_bytes`](crate::hll::HyperLogLog::to_bytes)).
    pub users_sketch: Vec<u8>,
}

/// One numeric property's figures for one event type and hour. Every figure is finite: stores refuse a
/// rollup holding NaN or ±infinity ([`RollupStoreError::NonFinite`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NumericRollup {
    /// The event type.
    pub event_type: String,
    /// The property name.
    pub property: String,
    /// Events carrying the property as a finite number (a NaN or infinite value, which only an old or
    /// buggy collector could have logged, is left out of every figure).
    pub count: u64,
    /// Their sum, saturated: a sum beyond the range of `f64` is `±f64::MAX`, with the sign of the exact
    /// sum ([`FiniteSum`](crate::numeric::FiniteSum)).
    pub sum: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// A customer-hour's whole rollup: it replaces the previous one entirely.
#[derive(Clone, Debug, PartialEq)]
pub struct HourRollup {
    /// Per event type, sorted by event type.
    pub event_types: Vec<EventTypeRollup>,
    /// Per event type and numeric property, sorted.
    pub numeric: Vec<NumericRollup>,
    /// Distinct events stored in the hour, as read by this job (the ledger's "stored" and "counted").
    pub events: u64,
    /// Distinct users of the hour over all event types, exact (what the per-type counts cannot add up to).
    pub distinct_users: u64,
    /// The same users as a mergeable sketch, so a day's or month's users over all types merge one sketch
    /// per hour instead of one per hour and type.
    pub users_sketch: Vec<u8>,
    /// What the collectors saw in the hour (the ledger's received, accepted, rejected, throttled).
    pub outcomes: HourOutcomes,
    /// The version of the aggregation logic that computed it.
    pub logic_version: u32,
    /// Whether the hour had closed (plus the allowed lateness) when it was computed.
    pub is_final: bool,
}

impl HourRollup {
    /// `Ok` if every number of the rollup is finite, else the first one that is not, as the error a
    /// store returns instead of writing it.
    pub fn check_finite(&self) -> Result<(), RollupStoreError> {
        for row in &self.numeric {
            for (stat, value) in [("sum", row.sum), ("min", row.min), ("max", row.max)] {
                if !value.is_finite() {
                    return Err(RollupStoreError::NonFinite {
                        event_type: row.event_type.clone(),
                        property: row.property.clone(),
                        stat,
                        value,
                    });
                }
            }
        }
        Ok(())
    }
}

/// What became of a job's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The rollup replaced the hour's previous one; this is the hour's revision now.
    Replaced {
        /// 1 for the first rollup of the hour, then one more per replacement.
        revision: u32,
    },
    /// The lease had expired, or the hour was leased again since (the worker was too slow or presumed
    /// dead, or another one runs under the same worker id): nothing was written, and the hour is
    /// aggregated by whoever holds its current lease.
    LeaseLost,
}

/// One customer-hour of the reconciliation ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// The customer-hour.
    pub customer_hour: CustomerHour,
    /// Events the collectors saw: accepted + rejected + throttled (client retries included).
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected.
    pub rejected: u64,
    /// The same events by `hourglass.v1.RejectionReason` number, reasons without any absent; the counts
    /// sum to `rejected` (both are written from one [`HourOutcomes`]).
    pub rejected_by_reason: BTreeMap<i32, u64>,
    /// Events of throttled batches.
    pub throttled: u64,
    /// Of the accepted events, those dropped at ingestion because their user was under suppression after
    /// an erasure (never stored, never counted). The ledger's identities: `received = accepted +
    /// rejected + throttled`; `accepted = erased + the copies written to the raw store` (a client's
    /// resend of an event is accepted and written again), so `stored <= accepted - erased`; and the
    /// balance, `stored = counted`, which an erasure keeps (it deletes events and recomputes the hour).
    pub erased: u64,
    /// What the customer's tracking plan checked and found in the hour: events checked per plan
    /// version, and per (version, event type, rule) those rejected or warned (from one [`HourOutcomes`],
    /// so the rejected ones are also in `rejected_by_reason`).
    pub plan_checks: BTreeMap<crate::raw_store::PlanCheckKey, u64>,
    /// Distinct events in the raw store (as of the last count or verification).
    pub stored: u64,
    /// Events counted in the rollups.
    pub counted: u64,
    /// Whether the hour's rollup is final.
    pub is_final: bool,
}

impl LedgerRow {
    /// Whether stored and counted agree.
    pub fn balances(&self) -> bool {
        self.stored == self.counted
    }
}

/// What the aggregators have left to do: hours waiting for their final rollup, and among them the
/// hours holding data no rollup includes yet. A refused hour (past its horizon) waits for nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupBacklog {
    /// The start of the oldest hour still waiting for its final rollup.
    pub oldest_unfinalized_hour: Option<i64>,
    /// Hours waiting for their final rollup, open hours with data included.
    pub unfinalized_hours: u64,
    /// Of those, the hours marked since their last rollup, provisional or final: data not counted in
    /// any rollup yet.
    pub stale_hours: u64,
}

/// Hourly rollups and their jobs.
pub trait RollupStore: Send + Sync + 'static {
    /// Leases up to `max` pending jobs of `kind`, oldest hours first, for `lease`, each with a new token.
    /// Jobs under a lease that has not expired are skipped, never waited for.
    fn lease_jobs(
        &self,
        owner: &str,
        max: usize,
        lease: Duration,
        kind: JobKind,
    ) -> impl Future<Output = Result<Vec<JobLease>, RollupStoreError>> + Send;

    /// Extends `job`'s lease to `lease` from now if it is still the hour's current lease (same token) and
    /// has not expired; false if it is lost (then nothing changes).
    fn renew_lease(
        &self,
        job: &JobLease,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, RollupStoreError>> + Send;

    /// Replaces the hour's rollup and ledger row and completes the job, in one transaction, if `job` is
    /// still the hour's current lease (same token) and has not expired; otherwise writes nothing and
    /// returns [`Completion::LeaseLost`]. A final rollup records the generation as finalized; a
    /// provisional one only as aggregated, so the hour still gets its final rollup when it closes. A
    /// rollup holding a non-finite number is refused ([`HourRollup::check_finite`]) and nothing is written.
    fn complete(
        &self,
        job: &JobLease,
        rollup: &HourRollup,
    ) -> impl Future<Output = Result<Completion, RollupStoreError>> + Send;

    /// Records an independent recount of the raw store for a ledger hour; returns the updated row
    /// (`None` if the hour was never aggregated).
    fn record_recount(
        &self,
        customer_hour: &CustomerHour,
        stored: u64,
    ) -> impl Future<Output = Result<Option<LedgerRow>, RollupStoreError>> + Send;

    /// Every customer-hour that ever received data, starting in `[from, to)`, oldest first.
    fn hours_with_data(
        &self,
        customer_id: Option<&str>,
        from_unix: i64,
        to_unix: i64,
    ) -> impl Future<Output = Result<Vec<CustomerHour>, RollupStoreError>> + Send;

    /// Leases one particular customer-hour, pending or not (to reprocess it), with a new token; `None`
    /// while a lease on it has not expired (a failed job's hour, given back, can be taken at once).
    fn lease_hour(
        &self,
        customer_hour: &CustomerHour,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<JobLease>, RollupStoreError>> + Send;

    /// The hour's current rollup rows (empty if it was never aggregated).
    fn current_rollup(
        &self,
        customer_hour: &CustomerHour,
    ) -> impl Future<Output = Result<Vec<EventTypeRollup>, RollupStoreError>> + Send;

    /// What is left to roll up, for the job-lag and backlog metrics.
    fn backlog(&self) -> impl Future<Output = Result<RollupBacklog, RollupStoreError>> + Send;

    /// Gives a failed job back, to be retried after `retry_after`, recording why, if `job` is still the
    /// hour's current lease and has not expired; false if it is lost (then nothing is recorded, and the
    /// hour's current lease stands).
    fn fail(
        &self,
        job: &JobLease,
        error: &str,
        retry_after: Duration,
    ) -> impl Future<Output = Result<bool, RollupStoreError>> + Send;

    /// Refuses `job` for good, if it is still the hour's current lease and has not expired (false, and
    /// nothing recorded, if it is lost): its generation, and every earlier one, is never leased again,
    /// as a final or a provisional job, and the hour no longer counts as waiting for its final rollup.
    /// The hour's rollup and ledger stay as they are; its status reports `reason`
    /// ([`HourStatus::refused`](crate::rollup_reader::HourStatus::refused)) until a later rollup of the
    /// hour is written. Data marked afterwards makes the hour a job again. For hours whose raw data may
    /// have expired, which no job can aggregate correctly any more.
    fn refuse(&self, job: &JobLease, reason: &str) -> impl Future<Output = Result<bool, RollupStoreError>> + Send;
}
