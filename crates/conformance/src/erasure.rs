//! The [`ErasureStore`] contract: what `hourglass erase`, the erasure job and the ingestor's suppression
//! rely on.
//!
//! Run [`suite`] on an empty store. It covers: a request is recorded pending with its customer, hash and
//! suppression instant; asking again for a person whose request is open returns it, another person gets
//! their own, and a done request lets a new one be recorded; listings are oldest first, of one customer
//! or all; a request is leased by one run at a time (a live lease refuses another, the oldest open request
//! is leased next, a done one never), and only the current lease plans, records hours and finishes; a
//! plan is recorded once, with its hours oldest first; a released lease lets another run lease the request
//! at once with its plan and hours done kept, and releasing a lease no longer held changes nothing and
//! says so; suppression lists the people whose instant has not
//! passed. [`applied_erasures`] holds a [`RollupReader`] over the same database to the erasures it reads
//! per hour (what `GetHourStatus` and `GetLedger` show).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureHour, ErasureSalt, ErasureState, ErasureStore, UserHash};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::rollup_reader::{AppliedErasure, RollupReader};

const LONG_LEASE: Duration = Duration::from_secs(300);
/// The hour the plans name (2025-11-25T13:00:00Z).
const HOUR: i64 = 1_764_075_600;

fn customer(name: &str) -> CustomerId {
    CustomerId::new(name).unwrap_or_else(|error| panic!("test customer id {name:?} is valid: {error}"))
}

fn hash(customer_id: &str, user_id: &str) -> UserHash {
    let salt = ErasureSalt::new("the conformance suite's salt").expect("a long enough salt");
    UserHash::of(&salt, customer_id, user_id)
}

fn in_a_day() -> DateTime<Utc> {
    Utc::now() + TimeDelta::days(1)
}

fn planned(customer_id: &CustomerId, hour_start: i64, events: u64) -> ErasureHour {
    ErasureHour { customer_hour: CustomerHour { customer_id: customer_id.clone(), hour_start }, events, revision: None }
}

/// Runs the whole erasure store contract against `store`, which must be empty.
pub async fn suite(store: &impl ErasureStore) {
    requests_are_recorded_once_per_open_person(store).await;
    a_request_runs_under_one_lease_through_its_plan(store).await;
    a_released_lease_is_taken_at_once_and_keeps_the_progress(store).await;
    suppression_lists_people_until_their_instant(store).await;
}

/// The erasures applied to a customer's hours, as `reader` (over the database `store` writes) reads them:
/// per hour then request, planned hours without a revision until they are done, other customers' and
/// hours outside the range apart. `store` must hold no request of the customers used here.
pub async fn applied_erasures(store: &impl ErasureStore, reader: &impl RollupReader) {
    let umbrella = customer("erasure-umbrella");
    let first = store.request_erasure(&umbrella, hash("erasure-umbrella", "jane"), in_a_day()).await.expect("request");
    let lease = store.lease_erasure(&first.id, "run", LONG_LEASE).await.expect("lease").expect("leasable");
    let plan = [planned(&umbrella, HOUR, 5), planned(&umbrella, HOUR + 3600, 2)];
    assert!(store.plan_erasure(&lease, &plan).await.expect("plan"));
    assert!(store.record_erased_hour(&lease, &plan[0].customer_hour, 3).await.expect("record"));
    let read = |from, to| async move { reader.applied_erasures("erasure-umbrella", from, to).await.expect("read") };
    let applied = read(HOUR, HOUR + 7200).await;
    assert_eq!(applied.len(), 2, "{applied:?}");
    let erased_at = applied[0].erased_at.expect("a done hour has its instant");
    assert!((Utc::now().timestamp() - erased_at).abs() < 600, "erased now: {erased_at}");
    let expected = |hour_start, request_id: &str, events, revision, erased_at| AppliedErasure {
        hour_start,
        request_id: request_id.to_owned(),
        events,
        revision,
        erased_at,
    };
    assert_eq!(
        applied,
        [expected(HOUR, &first.id, 5, Some(3), Some(erased_at)), expected(HOUR + 3600, &first.id, 2, None, None)],
        "the done hour with its revision, the planned one without"
    );
    assert!(store.record_erased_hour(&lease, &plan[1].customer_hour, 4).await.expect("record"));
    assert!(store.finish_erasure(&lease).await.expect("finish"));

    let second = store.request_erasure(&umbrella, hash("erasure-umbrella", "joe"), in_a_day()).await.expect("request");
    let lease = store.lease_erasure(&second.id, "run", LONG_LEASE).await.expect("lease").expect("leasable");
    assert!(store.plan_erasure(&lease, &[planned(&umbrella, HOUR, 1)]).await.expect("plan"));
    assert!(store.record_erased_hour(&lease, &plan[0].customer_hour, 5).await.expect("record"));
    let first_hour = read(HOUR, HOUR + 3600).await;
    let requests: Vec<(&str, u64, Option<u32>)> =
        first_hour.iter().map(|applied| (applied.request_id.as_str(), applied.events, applied.revision)).collect();
    assert_eq!(
        requests,
        [(first.id.as_str(), 5, Some(3)), (second.id.as_str(), 1, Some(5))],
        "by request, oldest first"
    );
    assert_eq!(read(HOUR + 3600, HOUR + 7200).await.len(), 1, "the range is [from, to)");
    assert!(read(HOUR - 3600, HOUR).await.is_empty());
    let other = reader.applied_erasures("erasure-nobody", HOUR, HOUR + 7200).await.expect("read");
    assert!(other.is_empty(), "another customer's hours");
}

async fn requests_are_recorded_once_per_open_person(store: &impl ErasureStore) {
    let acme = customer("erasure-acme");
    let globex = customer("erasure-globex");
    let until = in_a_day();
    let jane = store.request_erasure(&acme, hash("erasure-acme", "jane"), until).await.expect("request an erasure");
    assert_eq!((jane.customer_id.clone(), jane.user_hash), (acme.clone(), hash("erasure-acme", "jane")));
    assert_eq!(jane.state, ErasureState::Pending, "a new request is pending");
    assert_eq!(jane.finished_at, None);
    assert_eq!(jane.suppress_until.timestamp_millis(), until.timestamp_millis(), "the suppression instant is kept");
    assert!(jane.requested_at <= Utc::now() + TimeDelta::seconds(5), "requested now: {:?}", jane.requested_at);

    let again = store.request_erasure(&acme, hash("erasure-acme", "jane"), in_a_day()).await.expect("ask again");
    assert_eq!(again.id, jane.id, "asking again for an open request returns it");
    let john = store.request_erasure(&acme, hash("erasure-acme", "john"), until).await.expect("another person");
    assert_ne!(john.id, jane.id, "another person gets a request of their own");
    let other = store.request_erasure(&globex, hash("erasure-globex", "jane"), until).await.expect("another customer");

    assert_eq!(store.erasure(&jane.id).await.expect("read a request"), Some(jane.clone()));
    assert_eq!(store.erasure("no-such-request").await.expect("read a request"), None);
    let acme_ids: Vec<String> =
        store.list_erasures(Some(&acme)).await.expect("list").into_iter().map(|request| request.id).collect();
    assert_eq!(acme_ids, [jane.id.clone(), john.id.clone()], "one customer's requests, oldest first");
    let all_ids: Vec<String> =
        store.list_erasures(None).await.expect("list").into_iter().map(|request| request.id).collect();
    assert_eq!(all_ids, [jane.id.clone(), john.id.clone(), other.id.clone()], "every request, oldest first");

    // Done, the person may be asked for again: what arrived since is erased by a new request.
    let lease = store.lease_erasure(&john.id, "conformance", LONG_LEASE).await.expect("lease").expect("leasable");
    assert!(store.plan_erasure(&lease, &[]).await.expect("plan"), "an empty plan");
    assert!(store.finish_erasure(&lease).await.expect("finish"));
    let john_again = store.request_erasure(&acme, hash("erasure-acme", "john"), until).await.expect("ask again");
    assert_ne!(john_again.id, john.id, "a done request does not stand for a new one");
    assert_eq!(john_again.state, ErasureState::Pending);
}

async fn a_request_runs_under_one_lease_through_its_plan(store: &impl ErasureStore) {
    let initech = customer("erasure-initech");
    let request = store.request_erasure(&initech, hash("erasure-initech", "jane"), in_a_day()).await.expect("request");
    let lease = store.lease_erasure(&request.id, "run-1", LONG_LEASE).await.expect("lease").expect("leasable");
    assert_eq!(lease.request, request, "the lease carries the request");
    assert_eq!(store.lease_erasure(&request.id, "run-2", LONG_LEASE).await.expect("lease"), None, "a live lease");
    assert!(store.renew_erasure(&lease, LONG_LEASE).await.expect("renew"), "the current lease renews");

    let plan = [planned(&initech, HOUR + 3600, 2), planned(&initech, HOUR, 5)];
    assert!(store.plan_erasure(&lease, &plan).await.expect("plan"), "the current lease plans a pending request");
    let state = store.erasure(&request.id).await.expect("read").expect("recorded").state;
    assert_eq!(state, ErasureState::Erasing, "a planned request is erasing");
    assert!(
        !store.plan_erasure(&lease, &[planned(&initech, HOUR + 7200, 1)]).await.expect("plan again"),
        "a request keeps its first plan"
    );
    let hours = store.erasure_hours(&request.id).await.expect("read the plan");
    assert_eq!(hours, vec![planned(&initech, HOUR, 5), planned(&initech, HOUR + 3600, 2)], "the plan, oldest first");

    let first_hour = hours[0].customer_hour.clone();
    assert!(store.record_erased_hour(&lease, &first_hour, 3).await.expect("record"), "the current lease records");
    let hours = store.erasure_hours(&request.id).await.expect("read the plan");
    assert_eq!((hours[0].revision, hours[1].revision), (Some(3), None), "one hour done, one to do");

    // The lease expires; a second run takes over and the first can no longer write.
    let short = store.lease_erasure(&request.id, "run-1", LONG_LEASE).await.expect("lease");
    assert_eq!(short, None, "still leased");
    assert!(store.renew_erasure(&lease, Duration::from_millis(1)).await.expect("shorten the lease"));
    let takeover = lease_once_expired(store, &request.id).await;
    assert_ne!(takeover.token, lease.token, "every lease has a token of its own");
    assert_eq!(takeover.request.state, ErasureState::Erasing, "a resumed request is erasing still");
    let second_hour = hours[1].customer_hour.clone();
    assert!(!store.record_erased_hour(&lease, &second_hour, 9).await.expect("record"), "a lost lease writes nothing");
    assert!(!store.finish_erasure(&lease).await.expect("finish"), "a lost lease does not finish");
    assert!(!store.renew_erasure(&lease, LONG_LEASE).await.expect("renew"), "a lost lease does not renew");
    assert!(store.record_erased_hour(&takeover, &second_hour, 4).await.expect("record"));
    assert!(store.finish_erasure(&takeover).await.expect("finish"), "the current lease finishes");

    let done = store.erasure(&request.id).await.expect("read").expect("recorded");
    assert_eq!(done.state, ErasureState::Done);
    assert!(done.finished_at.is_some(), "a done request has its instant");
    let hours = store.erasure_hours(&request.id).await.expect("read the plan");
    assert_eq!((hours[0].revision, hours[1].revision), (Some(3), Some(4)));
    assert_eq!(store.lease_erasure(&request.id, "run-3", LONG_LEASE).await.expect("lease"), None, "done is done");

    // The next open request is the oldest one not done and not leased.
    let hooli = customer("erasure-hooli");
    let first = store.request_erasure(&hooli, hash("erasure-hooli", "a"), in_a_day()).await.expect("request");
    let second = store.request_erasure(&hooli, hash("erasure-hooli", "b"), in_a_day()).await.expect("request");
    let mut leased = Vec::new();
    while let Some(next) = store.lease_next_erasure("worker", LONG_LEASE).await.expect("lease the next") {
        leased.push(next.request.id);
    }
    assert!(leased.contains(&first.id) && leased.contains(&second.id), "every open request is leased: {leased:?}");
    let first_position = leased.iter().position(|id| *id == first.id);
    assert!(first_position < leased.iter().position(|id| *id == second.id), "oldest first: {leased:?}");
    assert!(!leased.contains(&request.id), "a done request is never leased");
}

async fn a_released_lease_is_taken_at_once_and_keeps_the_progress(store: &impl ErasureStore) {
    let wayne = customer("erasure-wayne");
    let request = store.request_erasure(&wayne, hash("erasure-wayne", "jane"), in_a_day()).await.expect("request");
    let first = store.lease_erasure(&request.id, "run-1", LONG_LEASE).await.expect("lease").expect("leasable");
    let plan = [planned(&wayne, HOUR, 5), planned(&wayne, HOUR + 3600, 2)];
    assert!(store.plan_erasure(&first, &plan).await.expect("plan"));
    assert!(store.record_erased_hour(&first, &plan[0].customer_hour, 3).await.expect("record"));

    assert!(store.release_erasure(&first).await.expect("release"), "the current lease is given back");
    let second = store.lease_erasure(&request.id, "run-2", LONG_LEASE).await.expect("lease");
    let second = second.expect("a released request is leased at once, its lease long from expiring");
    assert_eq!(second.request.state, ErasureState::Erasing, "released, the request keeps its state");
    let hours = store.erasure_hours(&request.id).await.expect("read the plan");
    assert_eq!((hours[0].revision, hours[1].revision), (Some(3), None), "and its hours done");

    assert!(!store.release_erasure(&first).await.expect("release again"), "a lease given back is not held");
    assert!(!store.record_erased_hour(&first, &plan[1].customer_hour, 9).await.expect("record"), "nor writes");
    assert_eq!(
        store.lease_erasure(&request.id, "run-3", LONG_LEASE).await.expect("lease"),
        None,
        "releasing a lease no longer held leaves the current one live"
    );
    assert!(store.record_erased_hour(&second, &plan[1].customer_hour, 4).await.expect("record"));
    assert!(store.finish_erasure(&second).await.expect("finish"));
    assert!(!store.release_erasure(&second).await.expect("release"), "a finished request holds no lease");
    let done = store.erasure(&request.id).await.expect("read").expect("recorded");
    assert_eq!(done.state, ErasureState::Done, "releasing after the end changes nothing");
}

/// Leases `id` as soon as its lease has expired.
async fn lease_once_expired(store: &impl ErasureStore, id: &str) -> hourglass_core::erasure::ErasureLease {
    for _ in 0..1000 {
        if let Some(lease) = store.lease_erasure(id, "run-2", LONG_LEASE).await.expect("lease") {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the lease of {id} never expired")
}

async fn suppression_lists_people_until_their_instant(store: &impl ErasureStore) {
    let umbrella = customer("erasure-umbrella");
    let now = Utc::now();
    store.request_erasure(&umbrella, hash("erasure-umbrella", "current"), now + TimeDelta::days(30)).await.expect("r");
    store.request_erasure(&umbrella, hash("erasure-umbrella", "lapsed"), now - TimeDelta::seconds(1)).await.expect("r");
    let suppressed = store.suppressed_users(now).await.expect("read suppressions");
    assert!(suppressed.contains(&(umbrella.clone(), hash("erasure-umbrella", "current"))), "{suppressed:?}");
    assert!(!suppressed.contains(&(umbrella.clone(), hash("erasure-umbrella", "lapsed"))), "a lapsed suppression");
    let later = store.suppressed_users(now + TimeDelta::days(31)).await.expect("read suppressions");
    assert!(!later.iter().any(|(customer_id, _)| *customer_id == umbrella), "every suppression ends: {later:?}");
}
