//! The contract of the aggregation store: [`JobQueue`] (marking hours dirty), [`RollupStore`] (leasing,
//! completing, failing jobs; the ledger) and [`RollupReader`] (what the query service reads), which one
//! database serves in each mode.
//!
//! Each `pub async fn` is one part of the contract and expects an empty store of its own: the job queue
//! and the rollup store given to it must be views of the same database. Hours are fixed instants (the
//! job kinds take the boundary between closed and open hours as a parameter, as the aggregator computes
//! it from its clock), so no assertion depends on when the suite runs. Sleeps only ever wait past a short
//! lease; no assertion depends on how long anything took.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_reader::{EventTypeSeen, HourStatus, HourlyNumericRow, HourlyRollupRow, RollupReader};
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
        outcomes,
        logic_version: LOGIC_VERSION,
        is_final,
    }
}

fn simple_rollup(is_final: bool, events: u64) -> HourRollup {
    rollup(is_final, &[("view", events)], &[], outcomes(events, &[], 0))
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

/// Marking, the two job kinds, completion, re-marking during a job, and provisional then final rollups.
pub async fn jobs_and_completion(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "jobs-acme";
    jobs.check_ready().await.expect("a fresh job queue reports ready");
    RollupReader::check_ready(rollups).await.expect("a fresh rollup store reports ready");
    assert_eq!(oldest_unfinalized(rollups).await, None, "an empty store has no hour waiting");
    mark(jobs, &[]).await;

    // Hour 0 has closed, hour 2 is open: the boundary between them is hour 2.
    let (closed, open) = (hour(0), hour(2));
    mark(jobs, &[customer_hour(ACME, closed), customer_hour(ACME, open), customer_hour(ACME, closed)]).await;
    assert_eq!(oldest_unfinalized(rollups).await, Some(closed), "the oldest marked hour waits for its final rollup");
    let final_jobs = lease_expecting(
        rollups,
        "worker-a",
        final_before(2),
        &[(ACME, closed, 1)],
        "a closed dirty hour is a final job (generation 1: one bump per call, however often the call names it)",
    )
    .await;
    lease_expecting(rollups, "worker-b", final_before(2), &[], "a leased hour is not leased again while leased").await;
    let provisional_jobs = lease_expecting(
        rollups,
        "worker-b",
        provisional_from(2, Duration::ZERO),
        &[(ACME, open, 1)],
        "an open dirty hour is a provisional job",
    )
    .await;

    let closed_rollup =
        rollup(true, &[("buy", 2), ("view", 5)], &[("buy", "price", 2, 30.5, 10.25, 20.25)], outcomes(9, &[(1, 1)], 0));
    complete_expecting(rollups, &final_jobs[0], &closed_rollup, 1, "the first rollup of an hour is revision 1").await;
    assert_eq!(rows(rollups, ACME, closed, closed + HOUR, &[]).await, expected_rows(closed, &closed_rollup, true));
    let without_sketches = rollups.hourly_rollups(ACME, closed, closed + HOUR, &[], false).await.expect("hourly rows");
    assert_eq!(without_sketches, expected_rows(closed, &closed_rollup, false), "sketches only when asked for");
    assert_eq!(numeric(rollups, ACME, closed, closed + HOUR, &[]).await, expected_numeric(closed, &closed_rollup));
    let current = rollups.current_rollup(&customer_hour(ACME, closed)).await.expect("current rollup");
    assert_eq!(current, closed_rollup.event_types, "the current rollup is the one just written");
    let closed_status = status(rollups, ACME, closed).await;
    assert_eq!(closed_status.revision, Some(1));
    assert_eq!(closed_status.logic_version, Some(LOGIC_VERSION));
    assert!(closed_status.is_final && closed_status.final_as_of.is_some(), "a final rollup is final, and since when");
    assert!(closed_status.computed_at.is_some(), "an aggregated hour says when it was computed");
    assert_eq!(closed_status.events, 7);
    assert!(!closed_status.pending, "an hour aggregated as of its last mark is not pending");
    assert_eq!(oldest_unfinalized(rollups).await, Some(open), "a final rollup finalizes its hour");

    let provisional_rollup = rollup(false, &[("view", 3)], &[], outcomes(3, &[], 0));
    complete_expecting(rollups, &provisional_jobs[0], &provisional_rollup, 1, "a provisional rollup is a revision")
        .await;
    let open_status = status(rollups, ACME, open).await;
    assert_eq!((open_status.revision, open_status.is_final, open_status.final_as_of), (Some(1), false, None));
    assert!(!open_status.pending, "a provisional rollup of the last mark leaves nothing pending to read");
    assert_eq!(oldest_unfinalized(rollups).await, Some(open), "a provisional rollup does not finalize its hour");
    lease_expecting(rollups, "worker-a", final_before(2), &[], "a finalized hour is no job").await;
    lease_expecting(rollups, "worker-a", provisional_from(2, Duration::ZERO), &[], "an aggregated hour is no job")
        .await;

    // New data in the open hour: a provisional job again, but at most one rollup per interval.
    mark(jobs, &[customer_hour(ACME, open)]).await;
    assert!(status(rollups, ACME, open).await.pending, "data marked after the rollup makes the hour pending");
    let hourly = provisional_from(2, Duration::from_secs(3600));
    lease_expecting(rollups, "worker-a", hourly, &[], "a provisional rollup waits for its interval").await;

    // The open hour closes: its final rollup is due, although a provisional one already saw generation 1.
    let closing_jobs = lease_expecting(
        rollups,
        "worker-a",
        final_before(3),
        &[(ACME, open, 2)],
        "a provisionally aggregated hour gets its final rollup once closed",
    )
    .await;
    let final_rollup = rollup(true, &[("view", 4)], &[], outcomes(4, &[], 0));
    complete_expecting(rollups, &closing_jobs[0], &final_rollup, 2, "the final rollup replaces the provisional").await;
    let finalized = status(rollups, ACME, open).await;
    assert_eq!((finalized.revision, finalized.is_final, finalized.events), (Some(2), true, 4));
    assert!(finalized.final_as_of.is_some(), "the final rollup says since when the hour is final");
    assert!(!finalized.pending);
    assert_eq!(rows(rollups, ACME, open, open + HOUR, &[]).await, expected_rows(open, &final_rollup, true));
    assert_eq!(oldest_unfinalized(rollups).await, None, "every hour is final");

    // Data marked while a job runs: the completion stands, and the hour is pending again.
    mark(jobs, &[customer_hour(ACME, closed)]).await;
    assert!(status(rollups, ACME, closed).await.pending, "a re-marked final hour is pending");
    assert_eq!(oldest_unfinalized(rollups).await, Some(closed), "a re-marked hour waits for a new final rollup");
    let rerun = lease_expecting(rollups, "worker-a", final_before(3), &[(ACME, closed, 2)], "re-marked: a job").await;
    mark(jobs, &[customer_hour(ACME, closed)]).await;
    let partial_rollup = simple_rollup(true, 8);
    complete_expecting(rollups, &rerun[0], &partial_rollup, 2, "each completion bumps the revision").await;
    let after_rerun = status(rollups, ACME, closed).await;
    assert_eq!((after_rerun.revision, after_rerun.events), (Some(2), 8));
    assert!(after_rerun.pending, "data marked during the job keeps the hour pending");
    assert_eq!(rows(rollups, ACME, closed, closed + HOUR, &[]).await, expected_rows(closed, &partial_rollup, true));
    let last_run =
        lease_expecting(rollups, "worker-b", final_before(3), &[(ACME, closed, 3)], "the newer mark is a job").await;
    complete_expecting(rollups, &last_run[0], &simple_rollup(true, 9), 3, "and its completion is revision 3").await;
    assert!(!status(rollups, ACME, closed).await.pending);
    assert_eq!(oldest_unfinalized(rollups).await, None);

    // A provisional hour with new data after its interval is a job again.
    let (later_open, later_index) = (hour(5), 5);
    mark(jobs, &[customer_hour(ACME, later_open)]).await;
    let first = lease_expecting(
        rollups,
        "worker-a",
        provisional_from(later_index, Duration::ZERO),
        &[(ACME, later_open, 1)],
        "an open hour is a provisional job",
    )
    .await;
    complete_expecting(rollups, &first[0], &simple_rollup(false, 1), 1, "first provisional rollup").await;
    mark(jobs, &[customer_hour(ACME, later_open)]).await;
    let second = lease_expecting(
        rollups,
        "worker-a",
        provisional_from(later_index, Duration::ZERO),
        &[(ACME, later_open, 2)],
        "with no interval, new data makes a provisional job at once",
    )
    .await;
    complete_expecting(rollups, &second[0], &simple_rollup(false, 2), 2, "second provisional rollup").await;
}

/// Leases: oldest first, exclusive while held, renewable only by their owner, lost on expiry (a
/// completion by the former owner writes nothing), failed jobs hidden until their retry, `lease_hour`.
pub async fn leases(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "leases-acme";
    let all_closed = final_before(1000);
    for index in [2, 0, 1] {
        mark(jobs, &[customer_hour(ACME, hour(index))]).await;
    }
    let mut oldest_first = Vec::new();
    for _ in 0..3 {
        let leased = lease(rollups, "worker-a", 1, LONG_LEASE, all_closed).await;
        assert_eq!(leased.len(), 1, "max bounds how many jobs one call leases");
        oldest_first.push(leased[0].customer_hour.hour_start);
    }
    assert_eq!(oldest_first, [hour(0), hour(1), hour(2)], "jobs are leased oldest hour first");
    lease_expecting(rollups, "worker-b", all_closed, &[], "leased hours are not leased again while leased").await;
    assert!(lease(rollups, "worker-b", 0, LONG_LEASE, all_closed).await.is_empty(), "max 0 leases nothing");

    let held = JobLease { customer_hour: customer_hour(ACME, hour(0)), generation: 1, owner: "worker-a".into() };
    assert!(rollups.renew_lease(&held, LONG_LEASE).await.expect("renew"), "the owner renews its lease");
    let intruder = JobLease { owner: "worker-b".into(), ..held.clone() };
    assert!(!rollups.renew_lease(&intruder, LONG_LEASE).await.expect("renew"), "only the owner renews a lease");
    let taken = rollups.lease_hour(&held.customer_hour, "worker-b", LONG_LEASE).await.expect("lease one hour");
    assert_eq!(taken, None, "lease_hour does not take an hour a live worker holds");
    let never_marked = rollups.lease_hour(&customer_hour(ACME, hour(40)), "worker-b", LONG_LEASE).await;
    assert_eq!(never_marked.expect("lease one hour"), None, "an hour that never received data cannot be leased");

    // An expired lease passes to another worker; the former owner can neither renew nor complete.
    let expiring_hour = hour(3);
    mark(jobs, &[customer_hour(ACME, expiring_hour)]).await;
    let slow = lease(rollups, "worker-slow", 10, SHORT_LEASE, all_closed).await;
    assert_eq!(slow.len(), 1, "the one free hour is leased");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let fast =
        lease_expecting(rollups, "worker-fast", all_closed, &[(ACME, expiring_hour, 1)], "an expired lease passes on")
            .await;
    assert!(!rollups.renew_lease(&slow[0], LONG_LEASE).await.expect("renew"), "a lost lease cannot be renewed");
    let lost = complete(rollups, &slow[0], &simple_rollup(true, 99)).await;
    assert_eq!(lost, Completion::LeaseLost, "a worker that lost its lease does not complete the job");
    let untouched = status(rollups, ACME, expiring_hour).await;
    assert_eq!((untouched.revision, untouched.pending), (None, true), "a lost completion writes no revision");
    assert!(rows(rollups, ACME, expiring_hour, expiring_hour + HOUR, &[]).await.is_empty(), "nor rows");
    assert!(ledger(rollups, Some(ACME), expiring_hour, expiring_hour + HOUR).await.is_empty(), "nor a ledger row");
    let winner = simple_rollup(true, 5);
    complete_expecting(rollups, &fast[0], &winner, 1, "the new owner completes the job").await;
    assert_eq!(
        rows(rollups, ACME, expiring_hour, expiring_hour + HOUR, &[]).await,
        expected_rows(expiring_hour, &winner, true)
    );

    // Reprocessing: lease_hour takes a finished hour again, and its completion is a new revision.
    let reprocess = rollups.lease_hour(&customer_hour(ACME, expiring_hour), "operator", LONG_LEASE).await;
    let reprocess =
        reprocess.expect("lease one hour").expect("a finished, unleased hour can be leased to reprocess it");
    assert_eq!((reprocess.generation, reprocess.owner.as_str()), (1, "operator"));
    complete_expecting(rollups, &reprocess, &simple_rollup(true, 6), 2, "reprocessing bumps the revision").await;

    // A failed job is hidden until its retry.
    let stranger = JobLease { owner: "worker-b".into(), ..held.clone() };
    rollups.fail(&stranger, "not mine", Duration::ZERO).await.expect("fail");
    assert!(rollups.renew_lease(&held, LONG_LEASE).await.expect("renew"), "only the owner can fail a job");
    rollups.fail(&held, "raw store timed out", Duration::from_secs(3600)).await.expect("fail a job");
    lease_expecting(rollups, "worker-b", all_closed, &[], "a failed job waits for its retry").await;
    let retried = rollups.lease_hour(&held.customer_hour, "operator", LONG_LEASE).await.expect("lease one hour");
    let retried = retried.expect("a failed job has no owner: lease_hour takes it before its retry");
    rollups.fail(&retried, "raw store timed out again", SHORT_LEASE).await.expect("fail a job");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let due = lease_expecting(rollups, "worker-b", all_closed, &[(ACME, hour(0), 1)], "a failed job is retried").await;
    complete_expecting(rollups, &due[0], &simple_rollup(true, 1), 1, "a retried job completes").await;

    // Concurrent workers never share an hour.
    let many: Vec<CustomerHour> = (100..124).map(|index| customer_hour(ACME, hour(index))).collect();
    mark(jobs, &many).await;
    let workers = ["w1", "w2", "w3", "w4"];
    let batches =
        futures::future::join_all(workers.iter().map(|owner| lease(rollups, owner, 8, LONG_LEASE, all_closed))).await;
    let mut owners: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for job in batches.iter().flatten() {
        owners.entry(job.customer_hour.hour_start).or_default().push(job.owner.clone());
    }
    let shared: Vec<_> = owners.iter().filter(|(_, holders)| holders.len() > 1).collect();
    assert!(shared.is_empty(), "concurrent workers leased the same hours: {shared:?}");
    let leased: BTreeSet<i64> = owners.keys().copied().collect();
    let marked: BTreeSet<i64> = many.iter().map(|hour| hour.hour_start).collect();
    assert_eq!(leased, marked, "four workers taking up to 8 each lease all 24 free hours");
}

/// The reader: [from, to) bounds, ordering, event type filters, numeric rows, event type totals, hour
/// statuses (also of hours never aggregated, and of hours whose rollup has no rows), the ledger.
pub async fn reader(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "reader-acme";
    let hour_rollups = [
        (
            hour(0),
            rollup(
                true,
                &[("buy", 3), ("view", 10)],
                &[("buy", "price", 3, 30.0, 5.0, 15.0), ("view", "duration", 10, 12.5, 0.5, 4.0)],
                outcomes(13, &[], 0),
            ),
        ),
        (
            hour(1),
            rollup(
                true,
                &[("click", 4), ("view", 7)],
                &[("view", "depth", 7, 21.0, 1.0, 6.0), ("view", "duration", 7, 3.5, 0.25, 1.0)],
                outcomes(11, &[(3, 2)], 1),
            ),
        ),
        (hour(2), rollup(true, &[("buy", 1)], &[("buy", "price", 1, 9.75, 9.75, 9.75)], outcomes(1, &[], 0))),
        // Only rejected events: an hour with a revision and a ledger row but no rollup rows.
        (hour(4), rollup(true, &[], &[], outcomes(0, &[(1, 5)], 0))),
    ];
    let marked: Vec<CustomerHour> = hour_rollups.iter().map(|(start, _)| customer_hour(ACME, *start)).collect();
    mark(jobs, &marked).await;
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await;
    assert_eq!(leased.len(), hour_rollups.len(), "every marked closed hour is a job");
    for job in &leased {
        let (_, hour_rollup) = hour_rollups
            .iter()
            .find(|(start, _)| *start == job.customer_hour.hour_start)
            .unwrap_or_else(|| panic!("leased an hour never marked: {:?}", job.customer_hour));
        complete_expecting(rollups, job, hour_rollup, 1, "first rollup").await;
    }
    // Hour 3 received data but was never aggregated.
    mark(jobs, &[customer_hour(ACME, hour(3))]).await;

    let all_rows: Vec<HourlyRollupRow> =
        hour_rollups.iter().flat_map(|(start, hour_rollup)| expected_rows(*start, hour_rollup, true)).collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &[]).await, all_rows, "every row, by hour then event type");
    let only_hour_1: Vec<_> = all_rows.iter().filter(|row| row.hour_start == hour(1)).cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(1), hour(2), &[]).await, only_hour_1, "from is inclusive, to exclusive");
    assert!(rows(rollups, ACME, hour(0), hour(0), &[]).await.is_empty(), "an empty range has no rows");
    let views: Vec<_> = all_rows.iter().filter(|row| row.event_type == "view").cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &["view"]).await, views, "filtered by event type");
    let buys_and_clicks: Vec<_> = all_rows.iter().filter(|row| row.event_type != "view").cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &["click", "buy"]).await, buys_and_clicks, "by several types");
    assert!(rows(rollups, ACME, hour(0), hour(5), &["unseen"]).await.is_empty(), "a type never seen has no rows");

    let all_numeric: Vec<HourlyNumericRow> =
        hour_rollups.iter().flat_map(|(start, hour_rollup)| expected_numeric(*start, hour_rollup)).collect();
    assert_eq!(numeric(rollups, ACME, hour(0), hour(5), &[]).await, all_numeric, "by hour, event type, property");
    let numeric_views: Vec<_> = all_numeric.iter().filter(|row| row.event_type == "view").cloned().collect();
    assert_eq!(numeric(rollups, ACME, hour(0), hour(5), &["view"]).await, numeric_views, "filtered by event type");
    let numeric_from_1: Vec<_> = all_numeric.iter().filter(|row| row.hour_start >= hour(1)).cloned().collect();
    assert_eq!(numeric(rollups, ACME, hour(1), hour(5), &[]).await, numeric_from_1, "bounded by hour");

    let seen = |event_type: &str, events, first: i64, last: i64| EventTypeSeen {
        event_type: event_type.into(),
        events,
        first_hour: hour(first),
        last_hour: hour(last),
    };
    let types = rollups.event_types(ACME, hour(0), hour(5)).await.expect("event types");
    assert_eq!(types, [seen("buy", 4, 0, 2), seen("click", 4, 1, 1), seen("view", 17, 0, 1)], "totals by type");
    let later_types = rollups.event_types(ACME, hour(1), hour(2)).await.expect("event types");
    assert_eq!(later_types, [seen("click", 4, 1, 1), seen("view", 7, 1, 1)], "totals within the range");

    let all_statuses = statuses(rollups, ACME, hour(0), hour(5)).await;
    let starts: Vec<i64> = all_statuses.iter().map(|status| status.hour_start).collect();
    assert_eq!(starts, [hour(0), hour(1), hour(2), hour(3), hour(4)], "every hour with data, oldest first");
    for aggregated in [&all_statuses[0], &all_statuses[1], &all_statuses[2], &all_statuses[4]] {
        assert_eq!((aggregated.revision, aggregated.logic_version), (Some(1), Some(LOGIC_VERSION)));
        assert!(aggregated.is_final && aggregated.final_as_of.is_some() && aggregated.computed_at.is_some());
        assert!(!aggregated.pending, "{aggregated:?} is aggregated as of its last mark");
    }
    let events: Vec<u64> = all_statuses.iter().map(|status| status.events).collect();
    assert_eq!(events, [13, 11, 1, 0, 0], "each status carries its rollup's events");
    let never_aggregated = HourStatus {
        hour_start: hour(3),
        revision: None,
        logic_version: None,
        is_final: false,
        final_as_of: None,
        computed_at: None,
        events: 0,
        pending: true,
    };
    assert_eq!(all_statuses[3], never_aggregated, "an hour marked but never aggregated is pending, with no revision");
    assert_eq!(statuses(rollups, ACME, hour(1), hour(3)).await, all_statuses[1..3], "statuses are bounded [from, to)");

    let rows_of_ledger = ledger(rollups, Some(ACME), hour(0), hour(5)).await;
    let ledger_hours: Vec<i64> = rows_of_ledger.iter().map(|row| row.customer_hour.hour_start).collect();
    assert_eq!(ledger_hours, [hour(0), hour(1), hour(2), hour(4)], "a ledger row per aggregated hour, oldest first");
    let second = &rows_of_ledger[1];
    assert_eq!(
        (second.received, second.accepted, second.rejected, second.throttled, second.stored, second.counted),
        (14, 11, 2, 1, 11, 11),
        "the ledger carries the outcomes and the counted events"
    );
    let rejected_only = &rows_of_ledger[3];
    assert_eq!((rejected_only.received, rejected_only.rejected, rejected_only.counted), (5, 5, 0));
    assert!(rows_of_ledger.iter().all(|row| row.is_final && row.balances()));
}

/// Every reader method, asked for one customer, returns that customer's rows and never another's.
pub async fn customer_isolation(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "isolation-acme";
    const GLOBEX: &str = "isolation-globex";
    const NOBODY: &str = "isolation-nobody";
    let acme_rollup = |scale: u64| {
        rollup(true, &[("view", scale)], &[("view", "price", scale, 1.5, 0.5, 1.0)], outcomes(scale, &[], 0))
    };
    let globex_rollup = |scale: u64| {
        rollup(
            true,
            &[("refund", 1), ("view", 100 + scale)],
            &[("view", "price", 100 + scale, 99.0, 9.0, 90.0)],
            outcomes(101 + scale, &[(2, 1)], 3),
        )
    };
    let mut expected: BTreeMap<(&str, i64), HourRollup> = BTreeMap::new();
    expected.insert((ACME, hour(0)), acme_rollup(1));
    expected.insert((ACME, hour(1)), acme_rollup(2));
    expected.insert((GLOBEX, hour(0)), globex_rollup(1));
    expected.insert((GLOBEX, hour(1)), globex_rollup(2));
    expected.insert((GLOBEX, hour(2)), globex_rollup(3));
    let marked: Vec<CustomerHour> = expected.keys().map(|(customer, start)| customer_hour(customer, *start)).collect();
    mark(jobs, &marked).await;
    for job in lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await {
        let key = (job.customer_hour.customer_id.as_str(), job.customer_hour.hour_start);
        let hour_rollup = expected.get(&key).unwrap_or_else(|| panic!("leased an hour never marked: {key:?}"));
        complete_expecting(rollups, &job, hour_rollup, 1, "first rollup").await;
    }

    for customer in [ACME, GLOBEX] {
        let own: Vec<(i64, &HourRollup)> = expected
            .iter()
            .filter(|((owner, _), _)| *owner == customer)
            .map(|((_, start), hour_rollup)| (*start, hour_rollup))
            .collect();
        let own_rows: Vec<_> =
            own.iter().flat_map(|(start, hour_rollup)| expected_rows(*start, hour_rollup, true)).collect();
        assert_eq!(
            rows(rollups, customer, hour(0), hour(5), &[]).await,
            own_rows,
            "{customer}'s rows and no one else's"
        );
        assert_eq!(rows(rollups, customer, hour(0), hour(5), &["view"]).await.len(), own.len(), "{customer}'s views");
        let own_numeric: Vec<_> =
            own.iter().flat_map(|(start, hour_rollup)| expected_numeric(*start, hour_rollup)).collect();
        assert_eq!(numeric(rollups, customer, hour(0), hour(5), &[]).await, own_numeric, "{customer}'s numeric rows");
        let own_types: BTreeSet<&str> = own
            .iter()
            .flat_map(|(_, hour_rollup)| &hour_rollup.event_types)
            .map(|row| row.event_type.as_str())
            .collect();
        let types = rollups.event_types(customer, hour(0), hour(5)).await.expect("event types");
        let type_names: BTreeSet<&str> = types.iter().map(|seen| seen.event_type.as_str()).collect();
        assert_eq!(type_names, own_types, "{customer}'s event types only");
        let view_total: u64 = own
            .iter()
            .map(|(_, hour_rollup)| {
                hour_rollup.event_types.iter().find(|row| row.event_type == "view").map_or(0, |row| row.events)
            })
            .sum();
        let views = types.iter().find(|seen| seen.event_type == "view").expect("both customers have views");
        assert_eq!(views.events, view_total, "{customer}'s view total counts only their events");
        let own_hours: Vec<i64> = own.iter().map(|(start, _)| *start).collect();
        let status_rows = statuses(rollups, customer, hour(0), hour(5)).await;
        let status_hours: Vec<i64> = status_rows.iter().map(|status| status.hour_start).collect();
        assert_eq!(status_hours, own_hours, "{customer}'s hour statuses only");
        let status_events: Vec<u64> = status_rows.iter().map(|status| status.events).collect();
        let own_events: Vec<u64> = own.iter().map(|(_, hour_rollup)| hour_rollup.events).collect();
        assert_eq!(status_events, own_events, "{customer}'s statuses count their events");
        let ledger_rows = ledger(rollups, Some(customer), hour(0), hour(5)).await;
        assert!(
            ledger_rows.iter().all(|row| row.customer_hour.customer_id.as_str() == customer),
            "{customer}'s ledger"
        );
        let ledger_counts: Vec<u64> = ledger_rows.iter().map(|row| row.counted).collect();
        assert_eq!(ledger_counts, own_events, "{customer}'s ledger rows, one per hour");
        let with_data = rollups.hours_with_data(Some(customer), hour(0), hour(5)).await.expect("hours with data");
        let expected_with_data: Vec<CustomerHour> =
            own_hours.iter().map(|start| customer_hour(customer, *start)).collect();
        assert_eq!(with_data, expected_with_data, "{customer}'s hours with data");
        let current = rollups.current_rollup(&customer_hour(customer, hour(0))).await.expect("current rollup");
        assert_eq!(&current, &own[0].1.event_types, "{customer}'s current rollup");
    }

    assert!(rows(rollups, NOBODY, hour(0), hour(5), &[]).await.is_empty(), "a customer without data has no rows");
    assert!(numeric(rollups, NOBODY, hour(0), hour(5), &[]).await.is_empty());
    assert!(rollups.event_types(NOBODY, hour(0), hour(5)).await.expect("event types").is_empty());
    assert!(statuses(rollups, NOBODY, hour(0), hour(5)).await.is_empty());
    assert!(ledger(rollups, Some(NOBODY), hour(0), hour(5)).await.is_empty());
    assert!(rollups.current_rollup(&customer_hour(NOBODY, hour(0))).await.expect("current rollup").is_empty());
}

/// The ledger of all customers and of one, recounts, hours with data and the oldest unfinalized hour.
pub async fn ledger_and_recount(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "ledger-acme";
    const GLOBEX: &str = "ledger-globex";
    assert_eq!(oldest_unfinalized(rollups).await, None, "an empty store has no hour waiting");
    mark(jobs, &[customer_hour(ACME, hour(1))]).await;
    mark(jobs, &[customer_hour(GLOBEX, hour(0)), customer_hour(ACME, hour(0))]).await;

    let every_hour = rollups.hours_with_data(None, hour(0), hour(2)).await.expect("hours with data");
    let expected_hours = [customer_hour(ACME, hour(0)), customer_hour(GLOBEX, hour(0)), customer_hour(ACME, hour(1))];
    assert_eq!(every_hour, expected_hours, "every customer's hours, by hour then customer");
    let acme_hours = rollups.hours_with_data(Some(ACME), hour(0), hour(2)).await.expect("hours with data");
    assert_eq!(acme_hours, [customer_hour(ACME, hour(0)), customer_hour(ACME, hour(1))], "one customer's hours");
    let first_hour = rollups.hours_with_data(None, hour(0), hour(1)).await.expect("hours with data");
    assert_eq!(first_hour, expected_hours[..2], "hours with data are bounded [from, to)");
    assert_eq!(oldest_unfinalized(rollups).await, Some(hour(0)));

    let seen = outcomes(12, &[(1, 2), (3, 1)], 4);
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(1)).await;
    assert_eq!(leased.len(), 2, "both customers' closed hours are jobs");
    for job in &leased {
        let events = if job.customer_hour.customer_id.as_str() == ACME { 10 } else { 5 };
        let hour_rollup = rollup(true, &[("view", events)], &[], seen.clone());
        complete_expecting(rollups, job, &hour_rollup, 1, "first rollup").await;
    }
    let open = lease(rollups, "worker-a", 10, LONG_LEASE, provisional_from(1, Duration::ZERO)).await;
    assert_eq!(open.len(), 1, "the open hour is a provisional job");
    complete_expecting(rollups, &open[0], &rollup(false, &[("view", 7)], &[], seen.clone()), 1, "provisional").await;
    assert_eq!(oldest_unfinalized(rollups).await, Some(hour(1)), "a provisional rollup leaves its hour unfinalized");

    let ledger_row = |customer: &str, hour_start: i64, events: u64, is_final: bool| LedgerRow {
        customer_hour: customer_hour(customer, hour_start),
        received: 19,
        accepted: 12,
        rejected: 3,
        throttled: 4,
        stored: events,
        counted: events,
        is_final,
    };
    let everyone = ledger(rollups, None, hour(0), hour(2)).await;
    let expected_ledger = [
        ledger_row(ACME, hour(0), 10, true),
        ledger_row(GLOBEX, hour(0), 5, true),
        ledger_row(ACME, hour(1), 7, false),
    ];
    assert_eq!(everyone, expected_ledger, "the operators' ledger: every customer, by hour then customer");
    assert!(everyone.iter().all(LedgerRow::balances), "a completion stores stored = counted");
    assert_eq!(ledger(rollups, Some(GLOBEX), hour(0), hour(2)).await, [expected_ledger[1].clone()], "one customer");
    assert_eq!(ledger(rollups, None, hour(1), hour(2)).await, [expected_ledger[2].clone()], "bounded [from, to)");

    let recounted = rollups.record_recount(&customer_hour(ACME, hour(0)), 9).await.expect("record a recount");
    let mismatch = LedgerRow { stored: 9, ..expected_ledger[0].clone() };
    assert_eq!(recounted, Some(mismatch.clone()), "a recount changes stored and returns the row");
    assert!(!mismatch.balances());
    assert_eq!(ledger(rollups, Some(ACME), hour(0), hour(1)).await, [mismatch], "the ledger shows the recount");
    let globex_after = ledger(rollups, Some(GLOBEX), hour(0), hour(1)).await;
    assert_eq!(globex_after, [expected_ledger[1].clone()], "a recount touches one customer-hour only");
    let never = rollups.record_recount(&customer_hour(ACME, hour(7)), 1).await.expect("record a recount");
    assert_eq!(never, None, "an hour never aggregated has no ledger row to recount");

    // A new rollup counts again: stored and counted agree once more.
    mark(jobs, &[customer_hour(ACME, hour(0))]).await;
    let again = lease(rollups, "worker-b", 10, LONG_LEASE, final_before(1)).await;
    assert_eq!(again.len(), 1);
    complete_expecting(rollups, &again[0], &rollup(true, &[("view", 11)], &[], seen), 2, "re-aggregated").await;
    let rebalanced = ledger(rollups, Some(ACME), hour(0), hour(1)).await;
    assert_eq!(rebalanced, [ledger_row(ACME, hour(0), 11, true)], "the new completion replaces the ledger row");
}
