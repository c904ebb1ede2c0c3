//! The aggregator against real Postgres and the real CQL server (tier b).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::customer::CustomerId;
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::{Completion, EventTypeRollup, JobKind, RollupStore};
use hourglass_cql::CqlRawStore;
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresRollupStore, migrate, testing};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

struct Stores {
    database_url: String,
    cql: hourglass_cql::CqlConfig,
    raw_store: CqlRawStore,
    job_queue: PostgresJobQueue,
    rollups: PostgresRollupStore,
}

async fn stores(test_name: &str) -> Stores {
    let (cql, raw_store) = hourglass_cql::testing::create_test_store(test_name, 4).await;
    let database_url = testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(database_url.clone()).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    Stores {
        database_url,
        cql,
        raw_store,
        job_queue: PostgresJobQueue::new(pool.clone()),
        rollups: PostgresRollupStore::new(pool),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn event(id: &str, event_type: &str, user: Option<String>, at: i64) -> Event {
    use hourglass_proto::v1::{PropertyValue, property_value};
    // Multiples of 1/4: their sums are exact in any order, so the test can compare sums exactly.
    let price = id.bytes().map(u64::from).sum::<u64>() as f64 / 4.0;
    Event {
        event_id: id.into(),
        event_type: event_type.into(),
        occurred_at: Some(Timestamp { seconds: at, nanos: 0 }),
        user_id: user,
        properties: [("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(price)) })]
            .into_iter()
            .collect(),
    }
}

/// Brute force over what was sent: count, sum, min and max of `price` per type (distinct events).
fn brute_force_prices(sent: &[Event]) -> Vec<(String, u64, f64, f64, f64)> {
    use hourglass_proto::v1::property_value::Kind;
    let mut distinct: BTreeMap<(String, String), f64> = BTreeMap::new();
    for event in sent {
        if let Some(Kind::NumberValue(price)) = event.properties.get("price").and_then(|value| value.kind.clone()) {
            distinct.insert((event.event_type.clone(), event.event_id.clone()), price);
        }
    }
    let mut by_type: BTreeMap<String, (u64, f64, f64, f64)> = BTreeMap::new();
    for ((event_type, _), price) in distinct {
        let entry = by_type.entry(event_type).or_insert((0, 0.0, f64::MAX, f64::MIN));
        *entry = (entry.0 + 1, entry.1 + price, entry.2.min(price), entry.3.max(price));
    }
    by_type.into_iter().map(|(event_type, (count, sum, min, max))| (event_type, count, sum, min, max)).collect()
}

fn record(batch_id: &str, events: Vec<Event>) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: "acme".into(),
        received_at_unix_ms: now() * 1000,
        batch_id: batch_id.into(),
        collector_id: "test".into(),
        events,
        outcomes: vec![],
        plan_checks: Vec::new(),
    }
}

fn final_before(hours_before_unix: i64) -> JobKind {
    JobKind::Final { hours_before_unix }
}

fn acme_hour(hour_start: i64) -> CustomerHour {
    CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start }
}

/// Brute force over what was sent: distinct event ids and distinct users per type.
fn brute_force(sent: &[Event]) -> Vec<EventTypeRollup> {
    let mut by_type: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for event in sent {
        let (ids, users) = by_type.entry(event.event_type.clone()).or_default();
        ids.insert(event.event_id.clone());
        users.extend(event.user_id.clone());
    }
    by_type
        .into_iter()
        .map(|(event_type, (ids, users))| {
            let mut sketch = hourglass_core::hll::HyperLogLog::new();
            users.iter().for_each(|user| sketch.insert(user.as_bytes()));
            EventTypeRollup {
                event_type,
                events: ids.len() as u64,
                distinct_users: users.len() as u64,
                users_sketch: sketch.to_bytes(),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_closed_hour_with_duplicates_rolls_up_to_exact_counts_and_a_late_event_bumps_the_revision() {
    let stores = stores("rollup_exact").await;
    // Final rollups only: the open hour's provisional ones have a test of their own.
    let config = AggregatorConfig { provisional_interval_secs: 0, ..AggregatorConfig::with_defaults() };
    let closed_hour = hour::hour_start(now()) - 3 * 3600;
    let open_hour = hour::hour_start(now());
    let types = ["view", "click", "buy", "share", "signup"];
    let events: Vec<Event> = (0..500)
        .map(|index| {
            let user = (index % 11 != 0).then(|| format!("user-{}", index % 37));
            event(&format!("e{index}"), types[index % types.len()], user, closed_hour + index as i64)
        })
        .collect();
    // A redelivered record, and a client resend overlapping another record: duplicates by event id.
    let first = record("b1", events[..300].to_vec());
    let second = record("b2", events[250..].to_vec());
    stores.raw_store.write_records(&RecordView::from_records(&[first.clone(), second, first])).await.unwrap();
    stores
        .raw_store
        .write_records(&RecordView::from_records(&[record("open", vec![event("now-1", "view", None, now())])]))
        .await
        .unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour), acme_hour(open_hour)]).await.unwrap();

    let leased =
        hourglass_aggregator::run_once(&config, "worker-a", &stores.raw_store, &stores.rollups, now()).await.unwrap();
    assert_eq!(leased, 1, "only the closed hour is due; the open hour waits for its lateness");
    let stored = stores.rollups.hour("acme", closed_hour).await.unwrap().expect("the hour was aggregated");
    assert_eq!(stored.event_types, brute_force(&events));
    let prices: Vec<(String, u64, f64, f64, f64)> = stored
        .numeric
        .iter()
        .map(|row| {
            assert_eq!(row.property, "price");
            (row.event_type.clone(), row.count, row.sum, row.min, row.max)
        })
        .collect();
    assert_eq!(prices, brute_force_prices(&events));
    assert_eq!(stored.events, 500);
    assert_eq!(stored.revision, 1);
    assert!(stored.is_final);
    assert_eq!(
        hourglass_aggregator::run_once(&config, "worker-a", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        0
    );
    assert!(stores.rollups.hour("acme", open_hour).await.unwrap().is_none());

    // A late event for the closed hour re-marks it; the next run replaces the hour with revision 2.
    let late = event("late-1", "buy", Some("late-user".into()), closed_hour + 3599);
    stores.raw_store.write_records(&RecordView::from_records(&[record("late", vec![late.clone()])])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();
    assert_eq!(
        hourglass_aggregator::run_once(&config, "worker-a", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        1
    );
    let stored = stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap();
    let mut all = events.clone();
    all.push(late);
    assert_eq!(stored.event_types, brute_force(&all));
    assert_eq!((stored.events, stored.revision), (501, 2));
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn two_workers_never_hold_the_same_job_and_a_dead_workers_job_is_retried() {
    let stores = stores("rollup_leases").await;
    let closed_hour = hour::hour_start(now()) - 2 * 3600;
    let events: Vec<Event> =
        (0..20).map(|index| event(&format!("x{index}"), "view", None, closed_hour + index)).collect();
    stores.raw_store.write_records(&RecordView::from_records(&[record("b", events)])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();
    let due = now();

    // Worker A leases the job for one second, then "dies".
    let a_jobs = stores.rollups.lease_jobs("worker-a", 10, Duration::from_secs(1), final_before(due)).await.unwrap();
    assert_eq!(a_jobs.len(), 1);
    let b_jobs = stores.rollups.lease_jobs("worker-b", 10, Duration::from_secs(60), final_before(due)).await.unwrap();
    assert!(b_jobs.is_empty(), "a leased job is skipped by other workers");

    // After A's lease expires, B gets the job and completes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let b_job = loop {
        let mut jobs =
            stores.rollups.lease_jobs("worker-b", 10, Duration::from_secs(60), final_before(due)).await.unwrap();
        if let Some(job) = jobs.pop() {
            break job;
        }
        assert!(Instant::now() < deadline, "the dead worker's job was never released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(b_job.customer_hour, acme_hour(closed_hour));
    let mut accumulator = hourglass_aggregator::rollup::HourAccumulator::default();
    for bucket in 0..stores.raw_store.bucket_count() {
        for stored in stores.raw_store.read_bucket("acme", closed_hour, bucket).await.unwrap() {
            accumulator.add(&stored);
        }
    }
    let rollup = accumulator.finish(Default::default(), true);
    // A wakes up and tries to complete: its lease is gone, nothing is written.
    assert_eq!(stores.rollups.complete(&a_jobs[0], &rollup).await.unwrap(), Completion::LeaseLost);
    assert!(stores.rollups.hour("acme", closed_hour).await.unwrap().is_none());
    // A renewed lease outlives its first term; a lease held by someone else cannot be renewed.
    assert!(stores.rollups.renew_lease(&b_job, Duration::from_secs(120)).await.unwrap());
    assert!(!stores.rollups.renew_lease(&a_jobs[0], Duration::from_secs(120)).await.unwrap());
    assert_eq!(stores.rollups.complete(&b_job, &rollup).await.unwrap(), Completion::Replaced { revision: 1 });
    assert_eq!(stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap().events, 20);
    assert!(
        stores.rollups.lease_jobs("worker-c", 10, Duration::from_secs(60), final_before(due)).await.unwrap().is_empty()
    );
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

/// Two aggregators started with the same worker id: the one whose lease expired can neither complete,
/// renew nor fail the hour, even while the other holds it again under that same id.
#[tokio::test]
async fn a_worker_under_the_same_id_cannot_overwrite_an_hour_it_lost() {
    let stores = stores("rollup_lease_twins").await;
    let config = AggregatorConfig {
        provisional_interval_secs: 0,
        worker_id: Some("twin".into()),
        ..AggregatorConfig::with_defaults()
    };
    let worker_id = config.resolved_worker_id();
    let closed_hour = hour::hour_start(now()) - 2 * 3600;
    let mut events: Vec<Event> =
        (0..12).map(|index| event(&format!("t{index}"), "view", None, closed_hour + index)).collect();
    stores.raw_store.write_records(&RecordView::from_records(&[record("twins", events.clone())])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();

    // The first twin leases the hour for one second and stalls.
    let stalled = stores.rollups.lease_jobs(&worker_id, 10, Duration::from_secs(1), final_before(now())).await.unwrap();
    assert_eq!(stalled.len(), 1);
    // The second runs the worker loop under the same id until the stalled lease expires and it gets the hour.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hourglass_aggregator::run_once(&config, &worker_id, &stores.raw_store, &stores.rollups, now()).await.unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the stalled lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let aggregated = stores.rollups.hour("acme", closed_hour).await.unwrap().expect("the second twin aggregated");
    assert_eq!((aggregated.revision, aggregated.events), (1, 12));

    // A late event; the second twin leases the hour again and is still reading it when the first wakes up
    // with its stale rollup (here: of no events). The hour is held under the first twin's id again, but
    // not by its lease.
    let late = event("t-late", "view", None, closed_hour + 3000);
    stores
        .raw_store
        .write_records(&RecordView::from_records(&[record("twins-late", vec![late.clone()])]))
        .await
        .unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();
    let current =
        stores.rollups.lease_jobs(&worker_id, 10, Duration::from_secs(60), final_before(now())).await.unwrap();
    assert_eq!(current.len(), 1);
    let stale_rollup = hourglass_aggregator::rollup::HourAccumulator::default().finish(Default::default(), true);
    assert_eq!(stores.rollups.complete(&stalled[0], &stale_rollup).await.unwrap(), Completion::LeaseLost);
    assert_eq!(stores.rollups.hour("acme", closed_hour).await.unwrap(), Some(aggregated), "the rollup stands");
    let ledger = stores.rollups.ledger(Some("acme"), closed_hour, closed_hour + 3600).await.unwrap();
    assert_eq!((ledger[0].stored, ledger[0].counted), (12, 12), "the ledger stands");
    assert!(!stores.rollups.renew_lease(&stalled[0], Duration::from_secs(60)).await.unwrap());
    assert!(!stores.rollups.fail(&stalled[0], "stalled", Duration::from_secs(3600)).await.unwrap());

    let fresh = hourglass_aggregator::aggregate_hour(&stores.raw_store, "acme", closed_hour, true, 4).await.unwrap();
    assert_eq!(stores.rollups.complete(&current[0], &fresh).await.unwrap(), Completion::Replaced { revision: 2 });
    events.push(late);
    let stored = stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap();
    assert_eq!((stored.events, stored.event_types), (13, brute_force(&events)));
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn the_ledger_balances_after_a_clean_run_and_verify_shows_rows_deleted_behind_its_back() {
    use hourglass_proto::log::v1::{Outcome, OutcomeCount};
    use hourglass_proto::v1::RejectionReason;
    let stores = stores("ledger").await;
    let config = AggregatorConfig::with_defaults();
    let closed_hour = hour::hour_start(now()) - 4 * 3600;
    let count = |outcome: Outcome, reason: RejectionReason, count: u32| OutcomeCount {
        hour_start_unix_secs: closed_hour,
        outcome: outcome.into(),
        reason: reason.into(),
        count,
    };
    let events: Vec<Event> = (0..40)
        .map(|index| event(&format!("l{index}"), "view", Some(format!("u{index}")), closed_hour + index))
        .collect();
    let mut accepted = record("ledger-1", events.clone());
    accepted.outcomes = vec![
        count(Outcome::Accepted, RejectionReason::Unspecified, 40),
        count(Outcome::Rejected, RejectionReason::EventTypeEmpty, 3),
        count(Outcome::Rejected, RejectionReason::OccurredAtInFuture, 2),
    ];
    let mut throttled = record("ledger-2", vec![]);
    throttled.outcomes = vec![count(Outcome::Throttled, RejectionReason::Unspecified, 25)];
    // The first record is redelivered: its outcomes must count once.
    stores.raw_store.write_records(&RecordView::from_records(&[accepted.clone(), throttled, accepted])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();
    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        1
    );

    let ledger = stores.rollups.ledger(Some("acme"), closed_hour, closed_hour + 3600).await.unwrap();
    assert_eq!(ledger.len(), 1);
    let row = &ledger[0];
    assert_eq!((row.accepted, row.rejected, row.throttled), (40, 5, 25));
    let reasons = std::collections::BTreeMap::from([
        (RejectionReason::EventTypeEmpty as i32, 3),
        (RejectionReason::OccurredAtInFuture as i32, 2),
    ]);
    assert_eq!(row.rejected_by_reason, reasons, "rejections by reason, the redelivered record once");
    assert_eq!(row.received, 70, "received = accepted + rejected + throttled");
    assert_eq!((row.stored, row.counted), (40, 40));
    assert!(row.balances() && row.is_final);

    let verified = hourglass_aggregator::verify::verify(
        &stores.raw_store,
        &stores.rollups,
        &config.raw_retention,
        None,
        closed_hour,
        closed_hour + 3600,
        now(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(verified[0].recounted && verified[0].ledger.balances(), "a clean run verifies");

    // Delete three raw events behind the ledger's back.
    hourglass_cql::testing::delete_events(&stores.cql, "acme", closed_hour, &["l1", "l2", "l3"]).await;
    let verified = hourglass_aggregator::verify::verify(
        &stores.raw_store,
        &stores.rollups,
        &config.raw_retention,
        Some("acme"),
        closed_hour,
        closed_hour + 3600,
        now(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((verified[0].ledger.stored, verified[0].ledger.counted), (37, 40));
    assert!(verified[0].is_unbalanced_final(), "the ledger shows the difference");
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn an_open_hour_gets_provisional_rollups_then_a_final_one_when_it_closes() {
    let stores = stores("rollup_provisional").await;
    let mut config = AggregatorConfig::with_defaults();
    config.provisional_interval_secs = 3600;
    let open_hour = hour::hour_start(now());
    let events: Vec<Event> = (0..10).map(|index| event(&format!("o{index}"), "view", None, open_hour)).collect();
    stores.raw_store.write_records(&RecordView::from_records(&[record("open", events)])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(open_hour)]).await.unwrap();

    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        1
    );
    let provisional = stores.rollups.hour("acme", open_hour).await.unwrap().unwrap();
    assert_eq!((provisional.events, provisional.revision, provisional.is_final), (10, 1, false));
    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        0,
        "no new data, and the provisional interval has not passed"
    );

    // Later, once the hour has closed and its lateness passed, the same hour gets its final rollup even
    // though no new data arrived since the provisional one.
    let after_lateness = open_hour + 3600 + config.allowed_lateness_secs as i64;
    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, after_lateness).await.unwrap(),
        1
    );
    let fin = stores.rollups.hour("acme", open_hour).await.unwrap().unwrap();
    assert_eq!((fin.events, fin.revision, fin.is_final), (10, 2, true));
    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, after_lateness).await.unwrap(),
        0
    );
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

#[tokio::test]
async fn reprocess_after_a_logic_change_replaces_the_rows_and_a_dry_run_writes_nothing() {
    let stores = stores("reprocess").await;
    let config = AggregatorConfig { provisional_interval_secs: 0, ..AggregatorConfig::with_defaults() };
    let closed_hour = hour::hour_start(now()) - 5 * 3600;
    let events: Vec<Event> = (0..30)
        .map(|index| {
            event(
                &format!("r{index}"),
                ["view", "buy"][index % 2],
                Some(format!("u{}", index % 4)),
                closed_hour + index as i64,
            )
        })
        .collect();
    stores.raw_store.write_records(&RecordView::from_records(&[record("r", events.clone())])).await.unwrap();
    stores.job_queue.mark_dirty(&[acme_hour(closed_hour)]).await.unwrap();
    assert_eq!(
        hourglass_aggregator::run_once(&config, "w", &stores.raw_store, &stores.rollups, now()).await.unwrap(),
        1
    );

    // Rows as an older, buggy logic version would have written them.
    sqlx_tamper(&stores.database_url, closed_hour).await;
    let tampered = stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap();
    assert_eq!((tampered.revision, tampered.logic_version), (1, 0));

    let run = |dry_run| {
        hourglass_aggregator::reprocess::reprocess(
            &config,
            &stores.raw_store,
            &stores.rollups,
            Some("acme"),
            closed_hour,
            closed_hour + 3600,
            dry_run,
            now(),
            |_, _| {},
        )
    };
    let dry = run(true).await.unwrap().diffs;
    assert_eq!(dry.len(), 1);
    assert!(dry[0].changed(), "{:?}", dry[0]);
    assert_eq!(dry[0].revision, None);
    assert_eq!(stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap(), tampered, "a dry run writes nothing");

    let real = run(false).await.unwrap().diffs;
    assert!(real[0].changed());
    assert_eq!(real[0].revision, Some(2));
    let fixed = stores.rollups.hour("acme", closed_hour).await.unwrap().unwrap();
    assert_eq!(fixed.event_types, brute_force(&events));
    assert_eq!((fixed.revision, fixed.logic_version), (2, hourglass_aggregator::rollup::LOGIC_VERSION));

    let again = run(false).await.unwrap().diffs;
    assert!(!again[0].changed(), "reprocessing is a pure recomputation: nothing changes the second time");
    assert_eq!(again[0].revision, Some(3));
    hourglass_cql::testing::drop_test_keyspace(&stores.cql).await;
}

/// Overwrites an hour's rows as a buggy logic version 0 would have: one extra event per type.
async fn sqlx_tamper(database_url: &str, hour_start: i64) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query(
        "UPDATE hourly_rollups SET events = events + 1, logic_version = 0 WHERE customer_id = 'acme' AND hour_start = to_timestamp($1)",
    )
    .bind(hour_start as f64)
    .execute(&mut connection)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE hour_revisions SET logic_version = 0 WHERE customer_id = 'acme' AND hour_start = to_timestamp($1)",
    )
    .bind(hour_start as f64)
    .execute(&mut connection)
    .await
    .unwrap();
}
