//! Marking, leasing, completing and failing jobs.

use std::collections::BTreeSet;

use hourglass_core::rollup_store::LeaseToken;

use super::*;

/// `job` with another token: what a stale holder of the hour, or a second worker under the same worker
/// id, presents.
fn with_other_token(job: &JobLease) -> JobLease {
    JobLease { token: LeaseToken::from_stored(job.token.stored().wrapping_add(1)), ..job.clone() }
}

/// Marking, the two job kinds, completion, re-marking during a job, and provisional then final rollups.
pub async fn jobs_and_completion(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "jobs-acme";
    jobs.check_ready().await.expect("a fresh job queue reports ready");
    RollupReader::check_ready(rollups).await.expect("a fresh rollup store reports ready");
    assert_eq!(backlog(rollups).await, RollupBacklog::default(), "an empty store has no hour waiting");
    mark(jobs, &[]).await;

    // Hour 0 has closed, hour 2 is open: the boundary between them is hour 2.
    let (closed, open) = (hour(0), hour(2));
    mark(jobs, &[customer_hour(ACME, closed), customer_hour(ACME, open), customer_hour(ACME, closed)]).await;
    assert_eq!(
        backlog(rollups).await,
        RollupBacklog { oldest_unfinalized_hour: Some(closed), unfinalized_hours: 2, stale_hours: 2 },
        "the oldest marked hour waits for its final rollup; both marked hours are backlog, with data in no rollup"
    );
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
    let sum_before = rollups.revision_sum(ACME, closed, open + HOUR).await.expect("revision sum");
    assert_eq!(sum_before, 0, "no rollup yet");
    complete_expecting(rollups, &final_jobs[0], &closed_rollup, 1, "the first rollup of an hour is revision 1").await;
    let sum_after = rollups.revision_sum(ACME, closed, open + HOUR).await.expect("revision sum");
    assert_eq!(sum_after, 1, "a first rollup adds one to the range's revision sum");
    assert_eq!(rollups.revision_sum(ACME, open, open + HOUR).await.expect("revision sum"), 0, "only its own range");
    assert_eq!(
        rollups.revision_sum("jobs-globex", closed, open + HOUR).await.expect("revision sum"),
        0,
        "its customer"
    );
    assert_eq!(rows(rollups, ACME, closed, closed + HOUR, &[]).await, expected_rows(closed, &closed_rollup, true));
    let without_sketches = rollups.hourly_rollups(ACME, closed, closed + HOUR, &[], false).await.expect("hourly rows");
    assert_eq!(without_sketches, expected_rows(closed, &closed_rollup, false), "sketches only when asked for");
    let totals = rollups.hourly_totals(ACME, closed, closed + HOUR, true).await.expect("hourly totals");
    assert_eq!(totals, expected_totals(closed, &closed_rollup, true), "the hour's totals over all types");
    let totals = rollups.hourly_totals(ACME, closed, closed + HOUR, false).await.expect("hourly totals");
    assert_eq!(totals, expected_totals(closed, &closed_rollup, false), "totals' sketches only when asked for");
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
    assert_eq!(
        backlog(rollups).await,
        RollupBacklog { oldest_unfinalized_hour: Some(open), unfinalized_hours: 1, stale_hours: 1 },
        "a final rollup finalizes its hour"
    );

    let provisional_rollup = rollup(false, &[("view", 3)], &[], outcomes(3, &[], 0));
    complete_expecting(rollups, &provisional_jobs[0], &provisional_rollup, 1, "a provisional rollup is a revision")
        .await;
    let open_status = status(rollups, ACME, open).await;
    assert_eq!((open_status.revision, open_status.is_final, open_status.final_as_of), (Some(1), false, None));
    assert!(!open_status.pending, "a provisional rollup of the last mark leaves nothing pending to read");
    assert_eq!(
        backlog(rollups).await,
        RollupBacklog { oldest_unfinalized_hour: Some(open), unfinalized_hours: 1, stale_hours: 0 },
        "a provisional rollup does not finalize its hour, but counts its data"
    );
    lease_expecting(rollups, "worker-a", final_before(2), &[], "a finalized hour is no job").await;
    lease_expecting(rollups, "worker-a", provisional_from(2, Duration::ZERO), &[], "an aggregated hour is no job")
        .await;

    // New data in the open hour: a provisional job again, but at most one rollup per interval.
    mark(jobs, &[customer_hour(ACME, open)]).await;
    assert!(status(rollups, ACME, open).await.pending, "data marked after the rollup makes the hour pending");
    assert_eq!(backlog(rollups).await.stale_hours, 1, "and stale");
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
    assert_eq!(backlog(rollups).await, RollupBacklog::default(), "every hour is final");

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
    // closed is at revision 2 and open at 2 (provisional, then final): every completion counted once.
    assert_eq!(rollups.revision_sum(ACME, closed, open + HOUR).await.expect("revision sum"), 4, "replacements add up");
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

/// Leases: oldest first, exclusive while held, renewable only with their token, lost on expiry (a
/// completion by the former holder writes nothing), failed jobs hidden until their retry, `lease_hour`.
pub async fn leases(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "leases-acme";
    let all_closed = final_before(1000);
    for index in [2, 0, 1] {
        mark(jobs, &[customer_hour(ACME, hour(index))]).await;
    }
    let mut held_leases = Vec::new();
    for _ in 0..3 {
        let mut leased = lease(rollups, "worker-a", 1, LONG_LEASE, all_closed).await;
        assert_eq!(leased.len(), 1, "max bounds how many jobs one call leases");
        held_leases.push(leased.remove(0));
    }
    let oldest_first: Vec<i64> = held_leases.iter().map(|job| job.customer_hour.hour_start).collect();
    assert_eq!(oldest_first, [hour(0), hour(1), hour(2)], "jobs are leased oldest hour first");
    let tokens: BTreeSet<i64> = held_leases.iter().map(|job| job.token.stored()).collect();
    assert_eq!(tokens.len(), 3, "every lease has a token of its own");
    lease_expecting(rollups, "worker-b", all_closed, &[], "leased hours are not leased again while leased").await;
    assert!(lease(rollups, "worker-b", 0, LONG_LEASE, all_closed).await.is_empty(), "max 0 leases nothing");

    let held = held_leases[0].clone();
    assert_eq!((held.generation, held.owner.as_str()), (1, "worker-a"));
    assert!(renew(rollups, &held, LONG_LEASE).await, "the holder renews its lease");
    assert!(!renew(rollups, &with_other_token(&held), LONG_LEASE).await, "only the lease's token renews it");
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
    assert!(!renew(rollups, &slow[0], LONG_LEASE).await, "a lost lease cannot be renewed");
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
    assert!(!fail(rollups, &with_other_token(&held), "not mine", Duration::ZERO).await, "another token fails nothing");
    assert!(renew(rollups, &held, LONG_LEASE).await, "only the lease's token can fail its job");
    assert!(fail(rollups, &held, "raw store timed out", Duration::from_secs(3600)).await, "the holder fails its job");
    lease_expecting(rollups, "worker-b", all_closed, &[], "a failed job waits for its retry").await;
    let retried = rollups.lease_hour(&held.customer_hour, "operator", LONG_LEASE).await.expect("lease one hour");
    let retried = retried.expect("a failed job has no owner: lease_hour takes it before its retry");
    assert!(fail(rollups, &retried, "raw store timed out again", SHORT_LEASE).await, "the new holder fails it");
    assert!(!renew(rollups, &held, LONG_LEASE).await, "a failed job's lease is over");
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

/// Two workers started with the same worker id: the hour's lease is the token, not the name, so only the
/// one holding the current lease renews, fails or completes it, whichever of them finishes first.
pub async fn one_worker_id_two_leases(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "twins-acme";
    let (due, kind) = (hour(0), final_before(1));
    mark(jobs, &[customer_hour(ACME, due)]).await;
    let first = lease(rollups, "twin", 10, SHORT_LEASE, kind).await;
    assert_eq!(first.len(), 1, "the one due hour is leased");
    // The first twin stalls past its lease; the second, started under the same id, takes the hour.
    let second = lease_once_expired(rollups, "twin", kind).await;
    assert_eq!(second.len(), 1, "the expired hour is leased again");
    assert_eq!((second[0].owner.as_str(), second[0].generation), ("twin", 1), "under the same worker id");

    let stale_rollup = rollup(true, &[("view", 99)], &[("view", "price", 1, 1.5, 1.5, 1.5)], outcomes(99, &[], 0));
    let lost = complete(rollups, &first[0], &stale_rollup).await;
    assert_eq!(lost, Completion::LeaseLost, "a worker id does not complete a lease taken since under that id");
    assert_hour_unaggregated(rollups, ACME, due, "a completion with a lost lease").await;
    assert!(!renew(rollups, &first[0], LONG_LEASE).await, "nor renew it");
    assert!(!fail(rollups, &first[0], "stalled", Duration::from_secs(3600)).await, "nor fail it");
    assert!(renew(rollups, &second[0], LONG_LEASE).await, "the current lease stands");
    assert_ne!(first[0].token, second[0].token, "each lease of the hour has a token of its own");

    let current_rollup =
        rollup(true, &[("view", 4)], &[("view", "price", 4, 10.0, 1.0, 4.0)], outcomes(4, &[(1, 2)], 1));
    complete_expecting(rollups, &second[0], &current_rollup, 1, "the current lease completes").await;
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "the current lease's rollup").await;
    let late = complete(rollups, &first[0], &stale_rollup).await;
    assert_eq!(late, Completion::LeaseLost, "a lost lease stays lost once the hour is done");
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "a late completion writes nothing").await;

    // Two reprocessing runs under one name (`lease_hour`): the same.
    let first_run = rollups.lease_hour(&customer_hour(ACME, due), "reprocess-twin", SHORT_LEASE).await;
    let first_run = first_run.expect("lease one hour").expect("a finished hour can be leased to reprocess it");
    let second_run = lease_hour_once_expired(rollups, &customer_hour(ACME, due), "reprocess-twin").await;
    assert_eq!(complete(rollups, &first_run, &stale_rollup).await, Completion::LeaseLost, "the stalled run is out");
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "a stalled reprocessing run writes nothing").await;
    let reprocessed = simple_rollup(true, 5);
    complete_expecting(rollups, &second_run, &reprocessed, 2, "the current run completes").await;
    assert_hour_holds(rollups, ACME, due, &reprocessed, 2, "the current run's rollup").await;
}

/// A lease that expired is lost even if nobody leased the hour since: completing, renewing or failing it
/// writes nothing, and the hour is aggregated by whoever leases it next.
pub async fn expired_lease_writes_nothing(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "expiry-acme";
    let (due, probe) = (hour(0), hour(1));
    mark(jobs, &[customer_hour(ACME, due), customer_hour(ACME, probe)]).await;
    let held = lease(rollups, "worker-a", 10, SHORT_LEASE, final_before(1)).await;
    assert_eq!(held.len(), 1, "only the due hour is a job of this kind");
    // A probe leased after it for as long expires no earlier: once the probe can be leased again, the due
    // hour's lease has expired too, and nobody leased the due hour since.
    let probing = lease(rollups, "probe", 10, SHORT_LEASE, final_before(2)).await;
    assert_eq!(probing.len(), 1, "the probe hour is the other job");
    lease_hour_once_expired(rollups, &customer_hour(ACME, probe), "probe").await;

    let stale_rollup = simple_rollup(true, 99);
    let lost = complete(rollups, &held[0], &stale_rollup).await;
    assert_eq!(lost, Completion::LeaseLost, "a completion after the lease expired does not complete the job");
    assert_hour_unaggregated(rollups, ACME, due, "a completion after expiry").await;
    assert!(!renew(rollups, &held[0], LONG_LEASE).await, "an expired lease cannot be renewed");
    assert!(!fail(rollups, &held[0], "too late", Duration::from_secs(3600)).await, "nor fail its job");

    // The hour is still a job (the failure above would have hidden it for an hour), for the next worker.
    let next = lease_expecting(rollups, "worker-b", final_before(1), &[(ACME, due, 1)], "a lost job is a job").await;
    assert_eq!(complete(rollups, &held[0], &stale_rollup).await, Completion::LeaseLost, "the old lease stays lost");
    let current_rollup = simple_rollup(true, 3);
    complete_expecting(rollups, &next[0], &current_rollup, 1, "the next lease completes the job").await;
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "the next lease's rollup").await;
}

/// A stale holder whose hour was re-leased and aggregated after its lease expired never overwrites the
/// rollup or the ledger: not before the new holder completes, not after, and not once the hour is leased
/// again under the stale holder's own worker id.
pub async fn stale_holder_after_reaggregation(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "stale-acme";
    let (due, kind) = (hour(0), final_before(1));
    mark(jobs, &[customer_hour(ACME, due)]).await;
    let stale = lease(rollups, "worker-a", 10, SHORT_LEASE, kind).await;
    assert_eq!(stale.len(), 1, "the one due hour is leased");
    let current = lease_once_expired(rollups, "worker-b", kind).await;
    assert_eq!(current.len(), 1, "the expired hour is leased by another worker");

    let stale_rollup =
        rollup(true, &[("buy", 7), ("view", 70)], &[("buy", "price", 7, 70.0, 1.0, 19.0)], outcomes(77, &[(2, 5)], 3));
    let early = complete(rollups, &stale[0], &stale_rollup).await;
    assert_eq!(early, Completion::LeaseLost, "the stale holder finishing first does not complete the job");
    assert_hour_unaggregated(rollups, ACME, due, "a stale completion before the current one").await;
    let current_rollup = rollup(true, &[("view", 6)], &[("view", "price", 6, 6.0, 1.0, 1.0)], outcomes(6, &[], 0));
    complete_expecting(rollups, &current[0], &current_rollup, 1, "the current holder completes the job").await;
    let after = complete(rollups, &stale[0], &stale_rollup).await;
    assert_eq!(after, Completion::LeaseLost, "the stale holder finishing last does not complete the job either");
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "a stale completion after the current one").await;

    // New data; the stale holder's worker id (the same process, or a new one under its name) leases the
    // hour again. The stale lease is still not the current one.
    mark(jobs, &[customer_hour(ACME, due)]).await;
    let again = lease_expecting(rollups, "worker-a", kind, &[(ACME, due, 2)], "re-marked: a job again").await;
    let replayed = complete(rollups, &stale[0], &stale_rollup).await;
    assert_eq!(replayed, Completion::LeaseLost, "a stale lease does not come back with its worker id");
    assert_hour_holds(rollups, ACME, due, &current_rollup, 1, "a stale completion under a re-leased id").await;
    assert!(status(rollups, ACME, due).await.pending, "the re-marked hour is still pending");
    let newest_rollup = simple_rollup(true, 8);
    complete_expecting(rollups, &again[0], &newest_rollup, 2, "the hour's current lease completes it").await;
    assert_hour_holds(rollups, ACME, due, &newest_rollup, 2, "the current lease's rollup").await;
}

/// An hour refused for good (the aggregator's answer to an hour whose raw data may have expired): only its
/// current lease refuses it; it is then no job of either kind and waits for no final rollup; its rollup
/// and ledger stay as they were and its status says why. New data makes it a job again, and a rollup
/// written later (a job's, or a reprocessing run's) clears the reason.
pub async fn refused_hours(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "refused-acme";
    const REASON: &str = "its raw data may have partly expired";
    let (aggregated, never_aggregated, expiring, open) = (hour(0), hour(1), hour(2), hour(5));
    let all_closed = final_before(5);
    mark(jobs, &[customer_hour(ACME, aggregated)]).await;
    let first = lease_expecting(rollups, "worker-a", all_closed, &[(ACME, aggregated, 1)], "a closed hour").await;
    let original = rollup(true, &[("view", 7)], &[("view", "price", 7, 14.0, 1.0, 3.0)], outcomes(7, &[(1, 1)], 2));
    complete_expecting(rollups, &first[0], &original, 1, "the hour's final rollup").await;

    // Late data for the aggregated hour, and data for an hour never aggregated: both are refused.
    mark(jobs, &[customer_hour(ACME, aggregated), customer_hour(ACME, never_aggregated)]).await;
    let due = lease_expecting(
        rollups,
        "worker-a",
        all_closed,
        &[(ACME, aggregated, 2), (ACME, never_aggregated, 1)],
        "both hours are final jobs",
    )
    .await;
    assert!(!refuse(rollups, &with_other_token(&due[0]), REASON).await, "another token refuses nothing");
    for job in &due {
        assert!(refuse(rollups, job, REASON).await, "the holder refuses its job");
    }
    assert!(!refuse(rollups, &due[0], REASON).await, "a refused job's lease is over");
    lease_expecting(rollups, "worker-b", all_closed, &[], "a refused hour is no final job").await;
    lease_expecting(rollups, "worker-b", provisional_from(0, Duration::ZERO), &[], "nor a provisional one").await;
    assert_eq!(oldest_unfinalized(rollups).await, None, "a refused hour waits for no final rollup");
    assert_hour_holds(rollups, ACME, aggregated, &original, 1, "a refusal leaves the rollup and ledger").await;
    let refused = status(rollups, ACME, aggregated).await;
    assert_eq!(
        (refused.revision, refused.is_final, refused.pending, refused.refused.as_deref()),
        (Some(1), true, false, Some(REASON)),
        "a refused final hour stays final at its revision, nothing pending, and says why"
    );
    let never = status(rollups, ACME, never_aggregated).await;
    assert_eq!(
        (never.revision, never.pending, never.refused.as_deref()),
        (None, false, Some(REASON)),
        "an hour refused before any rollup has no revision, nothing pending, and says why"
    );
    let end = never_aggregated + HOUR;
    assert!(rows(rollups, ACME, never_aggregated, end, &[]).await.is_empty(), "a refusal writes no rows");
    assert!(ledger(rollups, Some(ACME), never_aggregated, end).await.is_empty(), "nor a ledger row");

    // A lease that expired refuses nothing; the hour's next lease still aggregates it.
    mark(jobs, &[customer_hour(ACME, expiring)]).await;
    let slow = lease(rollups, "worker-slow", 10, SHORT_LEASE, all_closed).await;
    assert_eq!(slow.len(), 1, "the one due hour is leased");
    let next = lease_once_expired(rollups, "worker-fast", all_closed).await;
    assert!(!refuse(rollups, &slow[0], REASON).await, "an expired lease refuses nothing");
    assert_eq!(status(rollups, ACME, expiring).await.refused, None, "nothing was recorded");
    complete_expecting(rollups, &next[0], &simple_rollup(true, 3), 1, "the current lease completes the job").await;

    // A provisional job refused is not leased again, neither as provisional nor once its hour closes.
    mark(jobs, &[customer_hour(ACME, open)]).await;
    let provisional = lease_expecting(
        rollups,
        "worker-a",
        provisional_from(5, Duration::ZERO),
        &[(ACME, open, 1)],
        "an open hour is a provisional job",
    )
    .await;
    assert!(refuse(rollups, &provisional[0], REASON).await, "a provisional job can be refused");
    lease_expecting(rollups, "worker-b", provisional_from(5, Duration::ZERO), &[], "then it is no job").await;
    lease_expecting(rollups, "worker-b", final_before(6), &[], "not even once its hour closes").await;

    // New data makes a refused hour a job again; the rollup written then clears the reason.
    mark(jobs, &[customer_hour(ACME, never_aggregated)]).await;
    let marked_again = status(rollups, ACME, never_aggregated).await;
    assert_eq!(
        (marked_again.pending, marked_again.refused.as_deref()),
        (true, Some(REASON)),
        "new data is pending, and the refusal still stands until a rollup is written"
    );
    let again = lease_expecting(
        rollups,
        "worker-a",
        all_closed,
        &[(ACME, never_aggregated, 2)],
        "new data after a refusal is a job again",
    )
    .await;
    complete_expecting(rollups, &again[0], &simple_rollup(true, 2), 1, "its first rollup").await;
    let cleared = status(rollups, ACME, never_aggregated).await;
    assert_eq!((cleared.revision, cleared.pending, cleared.refused), (Some(1), false, None), "a rollup clears it");

    // Reprocessing leases a refused hour like any other, and its rollup clears the reason too.
    let reprocess = rollups.lease_hour(&customer_hour(ACME, aggregated), "operator", LONG_LEASE).await;
    let reprocess = reprocess.expect("lease one hour").expect("a refused hour can be leased to reprocess it");
    assert_eq!(reprocess.generation, 2, "as of its latest mark");
    complete_expecting(rollups, &reprocess, &simple_rollup(true, 8), 2, "the reprocessed rollup").await;
    let reprocessed = status(rollups, ACME, aggregated).await;
    assert_eq!((reprocessed.revision, reprocessed.pending, reprocessed.refused), (Some(2), false, None));
}
