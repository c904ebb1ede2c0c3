//! Suppression after an erasure, against real Cassandra and Postgres and against standalone's stores
//! (tier b): once a user is erased, a retried send of her old events (same event ids) and her new events
//! go through the ingestor's record handler (the one the ingest loop and `hourglass replay` use) and are
//! dropped, counted as erased in the raw store's outcomes and in the ledger; the other users' events of
//! the same batch are stored; `verify` balances (stored = counted) after the erasure and after the
//! suppressed batch; the hour's applied erasure is read back with its request id and revision; without a
//! salt the suppressed users cannot be loaded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure::{self, ErasureConfig, ErasureSettings};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureState, ErasureStore};
use hourglass_core::event_log::{ConsumedRecord, EventLog};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record;
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::RollupStore;
use hourglass_ingestor::suppression::{self, SuppressionError};
use hourglass_ingestor::{Handled, RecordHandler};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use tokio_util::sync::CancellationToken;

const CUSTOMER: &str = "acme";
const ERASED_USER: &str = "jane";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn erasure_config() -> ErasureConfig {
    ErasureConfig { salt: Some("the suppression tests' salt, long enough".to_owned()), suppress_days: 30 }
}

fn aggregator_config() -> AggregatorConfig {
    AggregatorConfig { lease_secs: 5, worker_id: Some("suppression-test".into()), ..AggregatorConfig::with_defaults() }
}

fn event(id: &str, at: i64, user: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: "view".into(),
        occurred_at: Some(Timestamp { seconds: at, nanos: 0 }),
        user_id: Some(user.to_owned()),
        properties: Default::default(),
    }
}

/// A batch as the collector writes it: its events, all accepted in `hour_start`.
fn batch(batch_id: &str, hour_start: i64, events: Vec<Event>) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: CUSTOMER.into(),
        received_at_unix_ms: (hour_start + 3000) * 1000,
        batch_id: batch_id.into(),
        collector_id: "test".into(),
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: hour_start,
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count: events.len() as u32,
        }],
        events,
        plan_checks: Vec::new(),
    }
}

fn consumed(offset: i64, record: &EventBatchRecord) -> ConsumedRecord {
    let encoded = record::encode(record.customer_id.clone(), record);
    ConsumedRecord {
        partition: 0,
        offset,
        key: encoded.key,
        payload: encoded.payload,
        headers: encoded.headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
        source: format!("events/0/{offset}"),
    }
}

async fn users_stored<R: RawStore>(raw_store: &R, hour_start: i64) -> Vec<(String, String)> {
    let mut stored = Vec::new();
    for bucket in 0..raw_store.bucket_count() {
        for event in raw_store.read_bucket(CUSTOMER, hour_start, bucket).await.unwrap() {
            stored.push((event.event_id, event.user_id.unwrap_or_default()));
        }
    }
    stored.sort();
    stored
}

async fn reaggregate<R: RawStore, S: RollupStore>(config: &AggregatorConfig, raw_store: &R, rollups: &S, hour: i64) {
    hourglass_aggregator::reprocess::reprocess(
        config,
        raw_store,
        rollups,
        None,
        hour,
        hour + 3600,
        false,
        now(),
        |_, _| {},
    )
    .await
    .unwrap();
}

/// Erases her, then ingests a retry of her old batch and a new batch of hers and others'.
async fn suppression_end_to_end<R, S, E, J, L>(raw_store: Arc<R>, rollups: &S, erasures: Arc<E>, jobs: &J, log: Arc<L>)
where
    R: RawStore,
    S: RollupStore + RollupReader,
    E: ErasureStore,
    J: JobQueue,
    L: EventLog,
{
    let config = aggregator_config();
    let hour_start = hourglass_core::hour::hour_start(now()) - 3 * 3600;
    let customer = CustomerId::new(CUSTOMER).unwrap();
    let customer_hour = CustomerHour { customer_id: customer.clone(), hour_start };
    let first = batch(
        "first",
        hour_start,
        vec![
            event("old-1", hour_start + 10, ERASED_USER),
            event("old-2", hour_start + 20, ERASED_USER),
            event("old-3", hour_start + 30, "joe"),
            event("old-4", hour_start + 40, "ann"),
        ],
    );
    raw_store.write_records(&[RecordView::from_record(&first)]).await.unwrap();
    jobs.mark_dirty(std::slice::from_ref(&customer_hour)).await.unwrap();
    reaggregate(&config, &*raw_store, rollups, hour_start).await;

    // Nobody is suppressed yet: no salt is needed.
    assert!(suppression::load(&*erasures, None).await.unwrap().is_empty());

    let salt = erasure_config().erasure_salt().unwrap();
    let request = erasure::request(&erasure_config(), &*erasures, &customer, ERASED_USER, Utc::now()).await.unwrap();
    let lease = erasure::lease_request(&config, &*erasures, &request.id, Duration::from_secs(30)).await.unwrap();
    let erased = erasure::run_request(&config, &salt, &*raw_store, rollups, &*erasures, &lease.unwrap(), now(), |_| {})
        .await
        .unwrap();
    assert_eq!(erased.request.state, ErasureState::Done);
    let revision = erased.hours[0].revision.expect("the hour is recomputed");
    // What GetHourStatus and GetLedger show for the hour.
    let applied = rollups.applied_erasures(CUSTOMER, hour_start, hour_start + 3600).await.unwrap();
    let applied: Vec<(i64, &str, u64, Option<u32>)> = applied
        .iter()
        .map(|applied| (applied.hour_start, applied.request_id.as_str(), applied.events, applied.revision))
        .collect();
    assert_eq!(applied, [(hour_start, request.id.as_str(), 2, Some(revision))]);
    assert_eq!(
        users_stored(&*raw_store, hour_start).await,
        [("old-3".into(), "joe".into()), ("old-4".into(), "ann".into())]
    );

    // With a request under suppression, an ingestor without the salt cannot recognise her.
    let refused = suppression::load(&*erasures, None).await.unwrap_err();
    assert!(matches!(refused, SuppressionError::NoSalt { users: 1 }), "{refused}");

    // The list as the ingestor reads it at start.
    let shutdown = CancellationToken::new();
    let suppressed = suppression::start(
        &hourglass_ingestor::SuppressionConfig::with_defaults(),
        Arc::clone(&erasures),
        Some(salt.clone()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(suppressed.snapshot().len(), 1);
    let handler = RecordHandler::new(
        Arc::clone(&raw_store),
        log,
        suppressed,
        Duration::from_millis(10),
        Duration::from_millis(100),
    );
    // A client retrying her old batch (same batch and event ids), and a new batch of hers and others'.
    let retried = first.clone();
    let later = batch(
        "later",
        hour_start,
        vec![
            event("new-1", hour_start + 50, ERASED_USER),
            event("new-2", hour_start + 60, "joe"),
            event("old-3", hour_start + 30, "joe"),
            event("new-3", hour_start + 70, ERASED_USER),
        ],
    );
    let handled = handler.handle(&[consumed(1, &retried), consumed(2, &later)], &CancellationToken::new()).await;
    let mut touched = Vec::new();
    for outcome in handled {
        match outcome {
            Handled::Stored { hours, .. } => touched.extend(hours),
            other => panic!("every record is stored: {other:?}"),
        }
    }
    assert_eq!(touched, [customer_hour.clone(), customer_hour.clone()], "both records touch the hour");
    shutdown.cancel();

    assert_eq!(
        users_stored(&*raw_store, hour_start).await,
        [("new-2".into(), "joe".into()), ("old-3".into(), "joe".into()), ("old-4".into(), "ann".into())],
        "her events are dropped, the others' stored"
    );
    let outcomes = raw_store.read_outcomes(CUSTOMER, hour_start).await.unwrap();
    // 4 accepted in "first" (a redelivery counts once), 4 in "later".
    assert_eq!((outcomes.accepted, outcomes.erased), (8, 4), "{outcomes:?}");

    jobs.mark_dirty(std::slice::from_ref(&customer_hour)).await.unwrap();
    reaggregate(&config, &*raw_store, rollups, hour_start).await;
    let verified = hourglass_aggregator::verify::verify(
        &*raw_store,
        rollups,
        &config.raw_retention,
        Some(CUSTOMER),
        hour_start,
        hour_start + 3600,
        now(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(verified.len(), 1);
    let ledger = &verified[0].ledger;
    assert!(verified[0].recounted && ledger.balances(), "{verified:?}");
    assert_eq!((ledger.accepted, ledger.erased, ledger.stored, ledger.counted), (8, 4, 3, 3), "{ledger:?}");
    assert!(ledger.stored <= ledger.accepted - ledger.erased);
    let read = rollups.ledger(Some(CUSTOMER), hour_start, hour_start + 3600).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].erased, 4, "the ledger read shows the erased events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_on_cassandra_and_postgres() {
    use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresJobQueue, PostgresRollupStore, migrate};
    let (cql, raw_store) = hourglass_cql::testing::create_test_store("erasure_suppression", 4).await;
    let database_url = hourglass_postgres::testing::create_test_database("erasure_suppression").await;
    let pool = PostgresConfig::for_url(database_url).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    let rollups = PostgresRollupStore::new(pool.clone());
    let erasures = Arc::new(PostgresErasureStore::new(pool.clone()));
    let jobs = PostgresJobQueue::new(pool);
    // Nothing is dead-lettered here; the handler needs a log to send to.
    let log_dir = tempfile::tempdir().unwrap();
    let log = Arc::new(hourglass_embedded::log::SqliteEventLog::open(log_dir.path()).await.unwrap());
    suppression_end_to_end(Arc::new(raw_store), &rollups, erasures, &jobs, log).await;
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_on_standalone_stores() {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = hourglass_embedded::raw::SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let meta = Arc::new(hourglass_embedded::meta::SqliteMetaStore::open(data_dir.path()).await.unwrap());
    let log = Arc::new(hourglass_embedded::log::SqliteEventLog::open(data_dir.path()).await.unwrap());
    suppression_end_to_end(Arc::new(raw_store), &*meta, Arc::clone(&meta), &*meta, log).await;
}
