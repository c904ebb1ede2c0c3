//! The contract of the aggregation store: [`JobQueue`] (marking hours dirty), [`RollupStore`] (leasing,
//! completing, failing jobs; the ledger) and [`RollupReader`] (what the query service reads), which one
//! database serves in each mode.
//!
//! Each `pub async fn` is one part of the contract and expects an empty store of its own: the job queue
//! and the rollup store given to it must be views of the same database. Hours are fixed instants (the
//! job kinds take the boundary between closed and open hours as a parameter, as the aggregator computes
//! it from its clock), so no assertion depends on when the suite runs. Sleeps only ever wait past a short
//! lease; no assertion depends on how long anything took.

mod jobs;
mod numbers;
mod reads;

pub use jobs::{jobs_and_completion, leases};
pub use numbers::extreme_numbers;
pub use reads::{customer_isolation, ledger_and_recount, reader};

use std::collections::BTreeMap;
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_reader::{
    EventTypeSeen, HourStatus, HourlyNumericRow, HourlyRollupRow, HourlyTotalsRow, RollupReader,
};
use hourglass_core::rollup_store::{
    Completion, EventTypeRollup, HourRollup, JobKind, JobLease, LedgerRow, NumericRollup, RollupStore,
};

/// 2026-01-01T00:00:00Z, the first hour of every scenario.
const BASE_HOUR: i64 = 1_767_225_600;
const HOUR: i64 = 3600;
/// A lease no scenario outlives.
const LONG_LEASE: Duration = Duration::from_secs(600);
/// A lease the scenario sleeps past, to see it expire.
const SHORT_LEASE: Duration = Duration::from_millis(200);
/// Comfortably past [`SHORT_LEASE`], so an expired lease is expired whatever the clocks' granularity.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(700);
const LOGIC_VERSION: u32 = 3;

fn hour(index: i64) -> i64 {
    BASE_HOUR + index * HOUR
}

fn customer_hour(customer: &str, hour_start: i64) -> CustomerHour {
    let customer_id = CustomerId::new(customer).unwrap_or_else(|error| panic!("test customer {customer:?}: {error}"));
    CustomerHour { customer_id, hour_start }
}

/// Every hour before `hour_index` is closed (final); the rest are open (provisional).
fn final_before(hour_index: i64) -> JobKind {
    JobKind::Final { hours_before_unix: hour(hour_index) }
}

fn provisional_from(hour_index: i64, min_interval: Duration) -> JobKind {
    JobKind::Provisional { hours_from_unix: hour(hour_index), min_interval }
}

fn outcomes(accepted: u64, rejected_by_reason: &[(i32, u64)], throttled: u64) -> HourOutcomes {
    HourOutcomes { accepted, rejected_by_reason: rejected_by_reason.iter().copied().collect(), throttled }
}

/// A rollup with these event types (name, events) and numeric rows (type, property, count, sum, min, max);
/// distinct users and sketches derive from them, so two rollups differ wherever their inputs do.
fn rollup(
    is_final: bool,
    event_types: &[(&str, u64)],
    numeric: &[(&str, &str, u64, f64, f64, f64)],
    outcomes: HourOutcomes,
) -> HourRollup {
    HourRollup {
        event_types: event_types
            .iter()
            .map(|&(event_type, events)| EventTypeRollup {
                event_type: event_type.to_owned(),
                events,
                distinct_users: events.div_ceil(2),
                users_sketch: format!("sketch of {event_type} x{events}").into_bytes(),
            })
            .collect(),
        numeric: numeric
            .iter()
            .map(|&(event_type, property, count, sum, min, max)| NumericRollup {
                event_type: event_type.to_owned(),
                property: property.to_owned(),
                count,
                sum,
                min,
                max,
            })
            .collect(),
        events: event_types.iter().map(|(_, events)| events).sum(),
        // Users over all types: fewer than the per-type counts add up to, as when users do several things.
        distinct_users: event_types.iter().map(|(_, events)| events).sum::<u64>().div_ceil(3),
        users_sketch: format!("sketch of all types x{}", event_types.len()).into_bytes(),
        outcomes,
        logic_version: LOGIC_VERSION,
        is_final,
    }
}

fn simple_rollup(is_final: bool, events: u64) -> HourRollup {
    rollup(is_final, &[("view", events)], &[], outcomes(events, &[], 0))
}

/// The totals row the reader should return for `rollup` stored as `hour_start` (none for an hour without
/// events).
fn expected_totals(hour_start: i64, rollup: &HourRollup, with_sketches: bool) -> Vec<HourlyTotalsRow> {
    if rollup.events == 0 {
        return Vec::new();
    }
    vec![HourlyTotalsRow {
        hour_start,
        events: rollup.events,
        distinct_users: rollup.distinct_users,
        users_sketch: if with_sketches { rollup.users_sketch.clone() } else { Vec::new() },
    }]
}

/// The hourly rows the reader should return for `rollup` stored as `hour_start`.
fn expected_rows(hour_start: i64, rollup: &HourRollup, with_sketches: bool) -> Vec<HourlyRollupRow> {
    rollup
        .event_types
        .iter()
        .map(|row| HourlyRollupRow {
            hour_start,
            event_type: row.event_type.clone(),
            events: row.events,
            distinct_users: row.distinct_users,
            users_sketch: if with_sketches { row.users_sketch.clone() } else { Vec::new() },
        })
        .collect()
}

fn expected_numeric(hour_start: i64, rollup: &HourRollup) -> Vec<HourlyNumericRow> {
    rollup
        .numeric
        .iter()
        .map(|row| HourlyNumericRow {
            hour_start,
            event_type: row.event_type.clone(),
            property: row.property.clone(),
            count: row.count,
            sum: row.sum,
            min: row.min,
            max: row.max,
        })
        .collect()
}

async fn mark(jobs: &impl JobQueue, hours: &[CustomerHour]) {
    jobs.mark_dirty(hours).await.unwrap_or_else(|error| panic!("mark {hours:?} dirty: {error}"));
}

async fn lease(rollups: &impl RollupStore, owner: &str, max: usize, lease: Duration, kind: JobKind) -> Vec<JobLease> {
    rollups.lease_jobs(owner, max, lease, kind).await.unwrap_or_else(|error| panic!("lease jobs ({kind:?}): {error}"))
}

/// Leases with a long lease and expects exactly these hours (as (customer, hour, generation)), oldest
/// first. The store picks the oldest hours; the order it returns them in is not part of the contract.
async fn lease_expecting(
    rollups: &impl RollupStore,
    owner: &str,
    kind: JobKind,
    expected: &[(&str, i64, i64)],
    why: &str,
) -> Vec<JobLease> {
    let leases = lease(rollups, owner, 100, LONG_LEASE, kind).await;
    let mut leased: Vec<(i64, String, i64)> = leases
        .iter()
        .map(|job| (job.customer_hour.hour_start, job.customer_hour.customer_id.as_str().to_owned(), job.generation))
        .collect();
    leased.sort();
    let expected: Vec<(i64, String, i64)> = expected
        .iter()
        .map(|&(customer, hour_start, generation)| (hour_start, customer.to_owned(), generation))
        .collect();
    assert_eq!(leased, expected, "{why}");
    assert!(leases.iter().all(|job| job.owner == owner), "a lease names the worker that took it");
    leases
}

async fn complete(rollups: &impl RollupStore, job: &JobLease, rollup: &HourRollup) -> Completion {
    rollups.complete(job, rollup).await.unwrap_or_else(|error| panic!("complete {:?}: {error}", job.customer_hour))
}

async fn complete_expecting(rollups: &impl RollupStore, job: &JobLease, rollup: &HourRollup, revision: u32, why: &str) {
    assert_eq!(complete(rollups, job, rollup).await, Completion::Replaced { revision }, "{why}");
}

async fn statuses(reader: &impl RollupReader, customer: &str, from: i64, to: i64) -> Vec<HourStatus> {
    reader.hour_statuses(customer, from, to).await.unwrap_or_else(|error| panic!("hour statuses: {error}"))
}

/// The status of one hour, which must have one.
async fn status(reader: &impl RollupReader, customer: &str, hour_start: i64) -> HourStatus {
    let mut found = statuses(reader, customer, hour_start, hour_start + HOUR).await;
    assert_eq!(found.len(), 1, "an hour that received data has exactly one status: {found:?}");
    found.remove(0)
}

async fn rows(reader: &impl RollupReader, customer: &str, from: i64, to: i64, types: &[&str]) -> Vec<HourlyRollupRow> {
    let types: Vec<String> = types.iter().map(|event_type| (*event_type).to_owned()).collect();
    reader.hourly_rollups(customer, from, to, &types, true).await.unwrap_or_else(|error| panic!("hourly rows: {error}"))
}

async fn numeric(
    reader: &impl RollupReader,
    customer: &str,
    from: i64,
    to: i64,
    types: &[&str],
) -> Vec<HourlyNumericRow> {
    let types: Vec<String> = types.iter().map(|event_type| (*event_type).to_owned()).collect();
    reader.hourly_numeric(customer, from, to, &types).await.unwrap_or_else(|error| panic!("numeric rows: {error}"))
}

async fn ledger(reader: &impl RollupReader, customer: Option<&str>, from: i64, to: i64) -> Vec<LedgerRow> {
    reader.ledger(customer, from, to).await.unwrap_or_else(|error| panic!("ledger: {error}"))
}

async fn oldest_unfinalized(rollups: &impl RollupStore) -> Option<i64> {
    rollups.oldest_unfinalized_hour().await.unwrap_or_else(|error| panic!("oldest unfinalized hour: {error}"))
}
