//! The contract of the aggregation store: [`JobQueue`] (marking hours dirty), [`RollupStore`] (leasing,
//! completing, failing jobs; the ledger) and [`RollupReader`] (what the query service reads), which one
//! database serves in each mode.
//!
//! Each `pub async fn` is one part of the contract and expects an empty store of its own: the job queue
//! and the rollup store given to it must be views of the same database. Hours are fixed instants (the
//! job kinds take the boundary between closed and open hours as a parameter, as the aggregator computes
//! it from its clock), so no assertion depends on when the suite runs. A scenario that needs a short lease
//! to expire either sleeps past it or polls until another lease succeeds; no assertion depends on how
//! long anything took.

mod jobs;
mod numbers;
mod reads;

pub use jobs::{
    expired_lease_writes_nothing, jobs_and_completion, leases, one_worker_id_two_leases, refused_hours,
    stale_holder_after_reaggregation,
};
pub use numbers::extreme_numbers;
pub use reads::{customer_isolation, ledger_and_recount, reader};

use std::collections::BTreeMap;
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::{HourOutcomes, PlanCheckKey};
use hourglass_core::rollup_reader::{
    EventTypeSeen, HourStatus, HourlyNumericRow, HourlyRollupRow, HourlyTotalsRow, RollupReader,
};
use hourglass_core::rollup_store::{
    Completion, EventTypeRollup, HourRollup, JobKind, JobLease, LedgerRow, NumericRollup, RollupBacklog, RollupStore,
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
/// How long a scenario polls for a [`SHORT_LEASE`] to expire before it fails: only a lease that never
/// expires takes this long.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two polls for an expired lease.
const EXPIRY_POLL: Duration = Duration::from_millis(20);
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
    HourOutcomes {
        accepted,
        rejected_by_reason: rejected_by_reason.iter().copied().collect(),
        throttled,
        // One of the accepted events dropped at ingestion, when there is one: the ledger carries it.
        erased: accepted.min(1),
        plan_checks: BTreeMap::from([(
            PlanCheckKey { plan_version: 1, event_type: String::new(), rule: 0, rejected: false },
            accepted,
        )]),
    }
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

/// Leases `kind`'s jobs for `owner` with a long lease as soon as there are any, polling while a short lease
/// on them has yet to expire.
async fn lease_once_expired(rollups: &impl RollupStore, owner: &str, kind: JobKind) -> Vec<JobLease> {
    let deadline = std::time::Instant::now() + EXPIRY_DEADLINE;
    loop {
        let leased = lease(rollups, owner, 100, LONG_LEASE, kind).await;
        if !leased.is_empty() {
            return leased;
        }
        assert!(std::time::Instant::now() < deadline, "a short lease on a {kind:?} job never expired");
        tokio::time::sleep(EXPIRY_POLL).await;
    }
}

/// Leases one hour for `owner` with a long lease as soon as it is free, polling while a short lease on it
/// has yet to expire.
async fn lease_hour_once_expired(rollups: &impl RollupStore, customer_hour: &CustomerHour, owner: &str) -> JobLease {
    let deadline = std::time::Instant::now() + EXPIRY_DEADLINE;
    loop {
        let leased = rollups.lease_hour(customer_hour, owner, LONG_LEASE).await;
        if let Some(job) = leased.unwrap_or_else(|error| panic!("lease {customer_hour:?}: {error}")) {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "a short lease on {customer_hour:?} never expired");
        tokio::time::sleep(EXPIRY_POLL).await;
    }
}

async fn renew(rollups: &impl RollupStore, job: &JobLease, lease: Duration) -> bool {
    rollups.renew_lease(job, lease).await.unwrap_or_else(|error| panic!("renew {:?}: {error}", job.customer_hour))
}

async fn fail(rollups: &impl RollupStore, job: &JobLease, error: &str, retry_after: Duration) -> bool {
    rollups.fail(job, error, retry_after).await.unwrap_or_else(|error| panic!("fail {:?}: {error}", job.customer_hour))
}

async fn refuse(rollups: &impl RollupStore, job: &JobLease, reason: &str) -> bool {
    rollups.refuse(job, reason).await.unwrap_or_else(|error| panic!("refuse {:?}: {error}", job.customer_hour))
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

/// The ledger row a completion of `rollup` writes for the hour.
fn expected_ledger(customer: &str, hour_start: i64, rollup: &HourRollup) -> LedgerRow {
    LedgerRow {
        customer_hour: customer_hour(customer, hour_start),
        received: rollup.outcomes.received(),
        accepted: rollup.outcomes.accepted,
        rejected: rollup.outcomes.rejected(),
        rejected_by_reason: rollup.outcomes.rejected_by_reason.clone(),
        throttled: rollup.outcomes.throttled,
        erased: rollup.outcomes.erased,
        plan_checks: rollup.outcomes.plan_checks.clone(),
        stored: rollup.events,
        counted: rollup.events,
        is_final: rollup.is_final,
    }
}

/// Asserts the hour holds exactly `rollup` (rows, numeric rows, ledger) at `revision`.
async fn assert_hour_holds(
    rollups: &(impl RollupStore + RollupReader),
    customer: &str,
    hour_start: i64,
    rollup: &HourRollup,
    revision: u32,
    why: &str,
) {
    let end = hour_start + HOUR;
    assert_eq!(status(rollups, customer, hour_start).await.revision, Some(revision), "{why}: revision");
    assert_eq!(rows(rollups, customer, hour_start, end, &[]).await, expected_rows(hour_start, rollup, true), "{why}");
    assert_eq!(numeric(rollups, customer, hour_start, end, &[]).await, expected_numeric(hour_start, rollup), "{why}");
    let expected_ledger_rows = [expected_ledger(customer, hour_start, rollup)];
    assert_eq!(ledger(rollups, Some(customer), hour_start, end).await, expected_ledger_rows, "{why}: ledger");
}

/// Asserts the hour was never aggregated: no revision, no rows, no ledger row, and still pending.
async fn assert_hour_unaggregated(
    rollups: &(impl RollupStore + RollupReader),
    customer: &str,
    hour_start: i64,
    why: &str,
) {
    let end = hour_start + HOUR;
    let hour_status = status(rollups, customer, hour_start).await;
    assert_eq!((hour_status.revision, hour_status.pending), (None, true), "{why}: no revision, still pending");
    assert!(rows(rollups, customer, hour_start, end, &[]).await.is_empty(), "{why}: no rows");
    assert!(numeric(rollups, customer, hour_start, end, &[]).await.is_empty(), "{why}: no numeric rows");
    assert!(ledger(rollups, Some(customer), hour_start, end).await.is_empty(), "{why}: no ledger row");
}

async fn oldest_unfinalized(rollups: &impl RollupStore) -> Option<i64> {
    backlog(rollups).await.oldest_unfinalized_hour
}

async fn backlog(rollups: &impl RollupStore) -> RollupBacklog {
    rollups.backlog().await.unwrap_or_else(|error| panic!("backlog: {error}"))
}
