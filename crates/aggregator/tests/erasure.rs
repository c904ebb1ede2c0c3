//! Per-user erasure against real Cassandra and Postgres and against standalone's stores (tier b): a user's
//! events spread over several hours and event types are found (a dry run changes nothing), deleted and
//! their hours recomputed; a run dropped in the middle (a crash) resumes to the same end state, and so
//! does a run stopped by shutdown, which gives its lease back so another run takes it at once; raw reads
//! no longer return the events, rollups equal a brute-force recount without the user (events and exact
//! distinct users, and the sketch of the same users), and `verify` balances.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure::{self, ErasureConfig, ErasureProgress, ErasureSettings};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureState, ErasureStore, UserHash, UserMatcher};
use hourglass_core::hll::HyperLogLog;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::RollupStore;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

const CUSTOMER: &str = "acme";
const ERASED_USER: &str = "jane";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn erasure_config() -> ErasureConfig {
    ErasureConfig { salt: Some("the erasure tests' salt, long enough".to_owned()), suppress_days: 30 }
}

fn aggregator_config() -> AggregatorConfig {
    // A short lease, so the run after the crash takes over soon.
    AggregatorConfig { lease_secs: 1, worker_id: Some("erasure-test".into()), ..AggregatorConfig::with_defaults() }
}

/// Three closed hours with events of several users and types; the erased user's events in each hour and
/// type, and one of her events resent in a second batch.
fn records(hours: &[i64]) -> Vec<EventBatchRecord> {
    let mut records = Vec::new();
    for (hour_index, hour_start) in hours.iter().enumerate() {
        let mut events = Vec::new();
        for index in 0..60 {
            let user = match index % 6 {
                0 => Some(ERASED_USER.to_owned()),
                5 => None,
                other => Some(format!("user-{}", (index + other + hour_index) % 7)),
            };
            let event_type = ["view", "click", "buy"][index % 3];
            events.push(Event {
                event_id: format!("h{hour_index}-e{index}"),
                event_type: event_type.into(),
                occurred_at: Some(Timestamp { seconds: hour_start + index as i64 * 30, nanos: 0 }),
                user_id: user,
                properties: Default::default(),
            });
        }
        let resent = vec![events[0].clone(), events[1].clone()];
        for (batch, batch_events) in [(format!("batch-{hour_index}"), events), (format!("resend-{hour_index}"), resent)]
        {
            let count = batch_events.len() as u32;
            records.push(EventBatchRecord {
                customer_id: CUSTOMER.into(),
                received_at_unix_ms: (hour_start + 3000) * 1000 + records.len() as i64,
                batch_id: batch,
                collector_id: "test".into(),
                events: batch_events,
                outcomes: vec![OutcomeCount {
                    hour_start_unix_secs: *hour_start,
                    outcome: Outcome::Accepted as i32,
                    reason: 0,
                    count,
                }],
                plan_checks: Vec::new(),
            });
        }
    }
    records
}

/// Per hour and event type: distinct events and the distinct users among them, from what was sent, leaving
/// out `without_user`'s events.
fn brute_force(
    records: &[EventBatchRecord],
    without_user: Option<&str>,
) -> BTreeMap<(i64, String), (u64, BTreeSet<String>)> {
    let mut distinct: BTreeMap<(i64, String), &Event> = BTreeMap::new();
    for record in records {
        for event in &record.events {
            let hour_start = hourglass_core::hour::hour_start(event.occurred_at.unwrap().seconds);
            distinct.insert((hour_start, event.event_id.clone()), event);
        }
    }
    let mut counts: BTreeMap<(i64, String), (u64, BTreeSet<String>)> = BTreeMap::new();
    for ((hour_start, _), event) in distinct {
        if event.user_id.is_some() && event.user_id.as_deref() == without_user {
            continue;
        }
        let entry = counts.entry((hour_start, event.event_type.clone())).or_default();
        entry.0 += 1;
        entry.1.extend(event.user_id.clone());
    }
    counts
}

async fn assert_rollups_equal<S: RollupStore>(
    rollups: &S,
    hours: &[i64],
    expected: &BTreeMap<(i64, String), (u64, BTreeSet<String>)>,
) {
    for hour_start in hours {
        let customer_hour = CustomerHour { customer_id: CustomerId::new(CUSTOMER).unwrap(), hour_start: *hour_start };
        let rows = rollups.current_rollup(&customer_hour).await.unwrap();
        let expected_rows: Vec<_> = expected.iter().filter(|((hour, _), _)| hour == hour_start).collect();
        assert_eq!(rows.len(), expected_rows.len(), "hour {hour_start}: {rows:?}");
        for ((_, event_type), (events, users)) in expected_rows {
            let row = rows.iter().find(|row| row.event_type == *event_type).expect("a row per event type");
            assert_eq!(
                (row.events, row.distinct_users),
                (*events, users.len() as u64),
                "hour {hour_start} {event_type}"
            );
            let mut sketch = HyperLogLog::new();
            for user in users {
                sketch.insert(user.as_bytes());
            }
            assert_eq!(
                row.users_sketch,
                sketch.to_bytes(),
                "hour {hour_start} {event_type}: the sketch of the same users"
            );
        }
    }
}

async fn erased_user_events<R: RawStore>(raw_store: &R, hours: &[i64]) -> (usize, usize) {
    let (mut hers, mut all) = (0, 0);
    for hour_start in hours {
        for bucket in 0..raw_store.bucket_count() {
            let events = raw_store.read_bucket(CUSTOMER, *hour_start, bucket).await.unwrap();
            all += events.len();
            hers += events.iter().filter(|event| event.user_id.as_deref() == Some(ERASED_USER)).count();
        }
    }
    (hers, all)
}

/// The end state of a finished erasure of `ERASED_USER` over `hours` (of `sent`): raw reads no longer return
/// her events, rollups equal a brute-force recount without her, and every hour's ledger balances.
async fn assert_erased_end_state<R: RawStore, S: RollupStore + RollupReader>(
    raw_store: &R,
    rollups: &S,
    config: &AggregatorConfig,
    hours: &[i64; 3],
    sent: &[EventBatchRecord],
) {
    assert_eq!(erased_user_events(raw_store, hours).await, (0, 150));
    assert_rollups_equal(rollups, hours, &brute_force(sent, Some(ERASED_USER))).await;
    let (from, to) = (hours[0], hours[2] + 3600);
    let verified = hourglass_aggregator::verify::verify(
        raw_store,
        rollups,
        &config.raw_retention,
        None,
        from,
        to,
        now(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(verified.len(), 3);
    assert!(verified.iter().all(|hour| hour.recounted && hour.ledger.balances()), "{verified:?}");
    assert!(verified.iter().all(|hour| hour.ledger.stored == 50), "{verified:?}");
}

/// The whole erasure against one deployment's stores.
async fn erasure_end_to_end<R, S, E, J>(raw_store: &R, rollups: &S, erasures: &E, jobs: &J)
where
    R: RawStore,
    S: RollupStore + RollupReader,
    E: ErasureStore,
    J: JobQueue,
{
    let config = aggregator_config();
    let current_hour = hourglass_core::hour::hour_start(now());
    let hours = [current_hour - 5 * 3600, current_hour - 4 * 3600, current_hour - 3 * 3600];
    let sent = records(&hours);
    raw_store.write_records(&RecordView::from_records(&sent)).await.unwrap();
    let customer = CustomerId::new(CUSTOMER).unwrap();
    let marks: Vec<CustomerHour> = hours
        .iter()
        .map(|hour_start| CustomerHour { customer_id: customer.clone(), hour_start: *hour_start })
        .collect();
    jobs.mark_dirty(&marks).await.unwrap();
    let (from, to) = (hours[0], hours[2] + 3600);
    hourglass_aggregator::reprocess::reprocess(&config, raw_store, rollups, None, from, to, false, now(), |_, _| {})
        .await
        .unwrap();
    assert_rollups_equal(rollups, &hours, &brute_force(&sent, None)).await;

    // A dry run finds her events in each hour and changes nothing.
    let salt = erasure_config().erasure_salt().unwrap();
    let matcher = UserMatcher::new(&salt, customer.clone(), UserHash::of(&salt, CUSTOMER, ERASED_USER));
    let found = erasure::find_hours(&config, raw_store, rollups, &matcher, now(), |_| {}).await.unwrap();
    let found_hours: Vec<(i64, u64)> =
        found.hours.iter().map(|hour| (hour.customer_hour.hour_start, hour.events)).collect();
    assert_eq!(found_hours, hours.iter().map(|hour_start| (*hour_start, 10)).collect::<Vec<_>>());
    assert!(found.past_horizon.is_empty());
    assert_eq!(erased_user_events(raw_store, &hours).await, (30, 180), "finding erases nothing");
    assert!(erasures.list_erasures(None).await.unwrap().is_empty(), "finding records nothing");
    assert_rollups_equal(rollups, &hours, &brute_force(&sent, None)).await;

    // The request; a run crashes after its first hour.
    let request = erasure::request(&erasure_config(), erasures, &customer, ERASED_USER, Utc::now()).await.unwrap();
    assert_eq!(request.state, ErasureState::Pending);
    let lease = erasure::lease_request(&config, erasures, &request.id, Duration::from_secs(30)).await.unwrap().unwrap();
    let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
    let mut crash_tx = Some(crash_tx);
    let mut progress = Vec::new();
    let run = erasure::run_request(&config, &salt, raw_store, rollups, erasures, &lease, now(), |step| {
        progress.push(step);
        if step == (ErasureProgress::Erasing { done: 1, total: 3 }) {
            crash_tx.take().map(|crash| crash.send(()));
        }
    });
    tokio::select! {
        biased;
        _ = crash_rx => {}
        finished = run => panic!("the run finished before the crash: {finished:?}"),
    }
    assert!(progress.contains(&ErasureProgress::Scanning { done: 3, total: 3 }), "{progress:?}");
    let crashed = erasures.erasure(&request.id).await.unwrap().unwrap();
    assert_eq!(crashed.state, ErasureState::Erasing, "planned before the crash");
    let planned = erasures.erasure_hours(&request.id).await.unwrap();
    assert_eq!(planned.iter().filter(|hour| hour.revision.is_some()).count(), 1, "one hour done: {planned:?}");
    assert_eq!(erased_user_events(raw_store, &hours[..1]).await.0, 0, "the first hour is erased");
    assert_eq!(erased_user_events(raw_store, &hours[2..]).await.0, 10, "the last hour is not");

    // Asking again returns the open request; the next run resumes it once the crashed run's lease expired.
    let again = erasure::request(&erasure_config(), erasures, &customer, ERASED_USER, Utc::now()).await.unwrap();
    assert_eq!(again.id, request.id);
    let resumed = erasure::lease_request(&config, erasures, &request.id, Duration::from_secs(30)).await.unwrap();
    let resumed = resumed.expect("the crashed run's lease expires");
    let erased =
        erasure::run_request(&config, &salt, raw_store, rollups, erasures, &resumed, now(), |_| {}).await.unwrap();
    assert_eq!(erased.request.state, ErasureState::Done);
    assert_eq!(erased.hours.len(), 3);
    for hour in &erased.hours {
        assert_eq!(hour.events, 10, "{hour:?}");
        assert!(hour.revision.is_some_and(|revision| revision >= 2), "recomputed after the first rollup: {hour:?}");
    }

    // Raw reads no longer return her events; rollups equal a brute-force recount without her.
    assert_erased_end_state(raw_store, rollups, &config, &hours, &sent).await;
    assert_eq!(
        erasure::lease_request(&config, erasures, &request.id, Duration::from_secs(1)).await.unwrap(),
        None,
        "a done request is not run again"
    );
    let suppressed = erasures.suppressed_users(Utc::now()).await.unwrap();
    assert_eq!(suppressed, vec![(customer, request.user_hash)], "her events stay suppressed");
}

/// A run stopped by shutdown after its first hour gives the request back: another run leases it at once
/// (the lease is five minutes long, so only the release can free it), resumes on the hours not done and
/// ends as an uninterrupted run would.
async fn shutdown_mid_erasure<R, S, E, J>(raw_store: &R, rollups: &S, erasures: &E, jobs: &J)
where
    R: RawStore,
    S: RollupStore + RollupReader,
    E: ErasureStore,
    J: JobQueue,
{
    let config = AggregatorConfig { lease_secs: 300, ..aggregator_config() };
    let lease_duration = Duration::from_secs(config.lease_secs);
    let current_hour = hourglass_core::hour::hour_start(now());
    let hours = [current_hour - 5 * 3600, current_hour - 4 * 3600, current_hour - 3 * 3600];
    let sent = records(&hours);
    raw_store.write_records(&RecordView::from_records(&sent)).await.unwrap();
    let customer = CustomerId::new(CUSTOMER).unwrap();
    let marks: Vec<CustomerHour> = hours
        .iter()
        .map(|hour_start| CustomerHour { customer_id: customer.clone(), hour_start: *hour_start })
        .collect();
    jobs.mark_dirty(&marks).await.unwrap();
    let (from, to) = (hours[0], hours[2] + 3600);
    hourglass_aggregator::reprocess::reprocess(&config, raw_store, rollups, None, from, to, false, now(), |_, _| {})
        .await
        .unwrap();

    let salt = erasure_config().erasure_salt().unwrap();
    let request = erasure::request(&erasure_config(), erasures, &customer, ERASED_USER, Utc::now()).await.unwrap();
    let lease = erasure::lease_next(&config, erasures).await.unwrap().expect("the request is leasable");
    assert_eq!(lease.request.id, request.id);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stopped =
        erasure::run_request_until(&config, &salt, raw_store, rollups, erasures, &lease, now(), &shutdown, |step| {
            if step == (ErasureProgress::Erasing { done: 1, total: 3 }) {
                shutdown.cancel();
            }
        })
        .await;
    match stopped {
        Err(erasure::ErasureError::Stopped { request_id, hours_done, hours_left }) => {
            assert_eq!((request_id, hours_done, hours_left), (request.id.clone(), 1, 2));
        }
        other => panic!("the run stops between hours: {other:?}"),
    }
    let planned = erasures.erasure_hours(&request.id).await.unwrap();
    assert_eq!(planned.iter().filter(|hour| hour.revision.is_some()).count(), 1, "one hour done: {planned:?}");
    assert_eq!(erased_user_events(raw_store, &hours[..1]).await.0, 0, "the first hour is erased");
    assert_eq!(erased_user_events(raw_store, &hours[1..]).await.0, 20, "the others are not touched");
    assert!(!erasures.renew_erasure(&lease, lease_duration).await.unwrap(), "the stopped run's lease is given back");

    // Another run (another replica) leases it at once, not after five minutes, and finishes it; an hour
    // lease the stopped run had kept would make it fail as busy instead.
    let resumed = erasure::lease_next(&config, erasures).await.unwrap().expect("leased at once after the release");
    assert_eq!((resumed.request.id.clone(), resumed.request.state), (request.id.clone(), ErasureState::Erasing));
    let mut resumed_progress = Vec::new();
    let erased = erasure::run_request(&config, &salt, raw_store, rollups, erasures, &resumed, now(), |step| {
        resumed_progress.push(step)
    })
    .await
    .unwrap();
    assert!(
        !resumed_progress.iter().any(|step| matches!(step, ErasureProgress::Scanning { .. })),
        "a resumed request is never planned again: {resumed_progress:?}"
    );
    assert_eq!(erased.request.state, ErasureState::Done);
    assert_eq!(erased.hours.len(), 3);
    assert!(erased.hours.iter().all(|hour| hour.events == 10 && hour.revision.is_some()), "{:?}", erased.hours);

    // The end state of an uninterrupted run, as `erasure_end_to_end` has it.
    assert_erased_end_state(raw_store, rollups, &config, &hours, &sent).await;
}

/// The distributed stores on a CQL keyspace and a Postgres database of their own, named after `test`.
struct DistributedStores {
    cql: hourglass_cql::CqlConfig,
    raw: hourglass_cql::CqlRawStore,
    rollups: hourglass_postgres::PostgresRollupStore,
    erasures: hourglass_postgres::PostgresErasureStore,
    jobs: hourglass_postgres::PostgresJobQueue,
}

impl DistributedStores {
    async fn create(test: &str) -> Self {
        use hourglass_postgres::{
            PostgresConfig, PostgresErasureStore, PostgresJobQueue, PostgresRollupStore, migrate,
        };
        let (cql, raw) = hourglass_cql::testing::create_test_store(test, 4).await;
        let database_url = hourglass_postgres::testing::create_test_database(test).await;
        let pool = PostgresConfig::for_url(database_url).connect_lazy().unwrap();
        migrate::run(&pool).await.unwrap();
        let rollups = PostgresRollupStore::new(pool.clone());
        let erasures = PostgresErasureStore::new(pool.clone());
        Self { cql, raw, rollups, erasures, jobs: PostgresJobQueue::new(pool) }
    }

    async fn drop_keyspace(&self) {
        hourglass_cql::testing::drop_test_keyspace(&self.cql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_erasure_on_cassandra_and_postgres() {
    let stores = DistributedStores::create("erasure_shutdown").await;
    shutdown_mid_erasure(&stores.raw, &stores.rollups, &stores.erasures, &stores.jobs).await;
    stores.drop_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_erasure_on_standalone_stores() {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = hourglass_embedded::raw::SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let meta = hourglass_embedded::meta::SqliteMetaStore::open(data_dir.path()).await.unwrap();
    shutdown_mid_erasure(&raw_store, &meta, &meta, &meta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_on_cassandra_and_postgres() {
    let stores = DistributedStores::create("erasure_job").await;
    erasure_end_to_end(&stores.raw, &stores.rollups, &stores.erasures, &stores.jobs).await;
    stores.drop_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_on_standalone_stores() {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = hourglass_embedded::raw::SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let meta = hourglass_embedded::meta::SqliteMetaStore::open(data_dir.path()).await.unwrap();
    erasure_end_to_end(&raw_store, &meta, &meta, &meta).await;
}
