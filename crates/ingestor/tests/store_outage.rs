//! The ingestor while its CQL server is killed and restarted (tier b: a real Cassandra node of the
//! test's own, with commit-log sync per write so a SIGKILL loses no acknowledged write).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::event_log::{EventLog, LogRecord, Topic};
use hourglass_core::hour;
use hourglass_core::record;
use hourglass_cql::{CqlRawStore, schema};
use hourglass_ingestor::IngestorConfig;
use hourglass_kafka::{KafkaEventLog, KafkaEventLogConsumer, testing as kafka_testing};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, migrate, testing as pg_testing};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, RejectionReason};
use tokio_util::sync::CancellationToken;

const NAME: &str = "ingestor-outage";
const PORT: u16 = 19242;

/// A Cassandra node of this test's own, stopped when dropped.
struct FaultCassandra;

impl FaultCassandra {
    fn script(action: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/servers/cassandra.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .args([action, "--name", NAME, "--port", &PORT.to_string()])
            .env("HOURGLASS_CASSANDRA_COMMITLOG_SYNC", "batch")
            .env("HOURGLASS_CASSANDRA_HEAP_OPTS", "-Xms512m -Xmx512m")
            .status()
            .expect("run e2e/servers/cassandra.sh");
        assert!(status.success(), "cassandra.sh {action} --name {NAME} failed");
    }
}

impl Drop for FaultCassandra {
    fn drop(&mut self) {
        Self::script("stop");
    }
}

fn record_of(batch_id: &str, hour_start: i64, ids: &[String]) -> LogRecord {
    let events: Vec<Event> = ids
        .iter()
        .map(|id| Event {
            event_id: id.clone(),
            event_type: "view".into(),
            occurred_at: Some(Timestamp { seconds: hour_start + 10, nanos: 0 }),
            ..Default::default()
        })
        .collect();
    let outcomes = vec![OutcomeCount {
        hour_start_unix_secs: hour_start,
        outcome: Outcome::Accepted.into(),
        reason: RejectionReason::Unspecified.into(),
        count: events.len() as u32,
    }];
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let batch = EventBatchRecord {
        customer_id: "steady".into(),
        received_at_unix_ms: now_ms,
        batch_id: batch_id.into(),
        collector_id: "test".into(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    };
    record::encode("steady".into(), &batch)
}

async fn stored(store: &CqlRawStore, hour_start: i64) -> BTreeSet<String> {
    match store.read_hour("steady", hour_start).await {
        Ok(events) => events.into_iter().map(|event| event.event_id).collect(),
        Err(_) => BTreeSet::new(),
    }
}

#[tokio::test]
async fn a_store_killed_and_restarted_mid_stream_loses_nothing() {
    FaultCassandra::script("start");
    let cassandra = FaultCassandra;
    let cql = hourglass_cql::testing::test_config("outage", &format!("127.0.0.1:{PORT}"), 4);
    let session = Arc::new(cql.connect().await.unwrap());
    schema::migrate(&session, &cql).await.unwrap();
    let raw_store = Arc::new(CqlRawStore::with_session(session, &cql).await.unwrap());
    let kafka = kafka_testing::test_config("store_outage", &kafka_testing::test_brokers());
    let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "test-producer").await.unwrap());
    let pool = PostgresConfig::for_url(pg_testing::create_test_database("store_outage").await).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    let job_queue = Arc::new(PostgresJobQueue::new(pool));

    let this_hour = hour::hour_start(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64);
    let last_hour = this_hour - 3600;
    let before: Vec<String> = (0..50).map(|index| format!("before-{index}")).collect();
    let during: Vec<String> = (0..50).map(|index| format!("during-{index}")).collect();

    let mut config = IngestorConfig::with_defaults();
    config.group_id = "outage-group".into();
    config.commit_interval_ms = 100;
    config.max_retry_backoff_ms = 500;
    let shutdown = CancellationToken::new();
    let consumer = KafkaEventLogConsumer::subscribe(&kafka, Topic::Events, &config.group_id, "hourglass-ingestor")
        .expect("subscribe to the test topic");
    let ingestor = tokio::spawn(hourglass_ingestor::run(
        config.loop_config(),
        consumer,
        Arc::clone(&raw_store),
        Arc::clone(&job_queue),
        Arc::clone(&event_log),
        hourglass_ingestor::Suppression::none(),
        shutdown.clone(),
    ));

    event_log.append(Topic::Events, record_of("before", this_hour, &before)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&raw_store, this_hour).await.len() < before.len() {
        assert!(Instant::now() < deadline, "the first records were never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    FaultCassandra::script("kill");
    event_log.append(Topic::Events, record_of("during", last_hour, &during)).await.unwrap();
    // Let the ingestor fetch the record and fail to write it a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let marked: Vec<i64> = job_queue.dirty_hours().await.unwrap().iter().map(|(hour, _)| hour.hour_start).collect();
    assert_eq!(marked, vec![this_hour], "an hour is marked only once its events are stored");

    FaultCassandra::script("start");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let marked: Vec<i64> = job_queue.dirty_hours().await.unwrap().iter().map(|(hour, _)| hour.hour_start).collect();
        if marked == vec![last_hour, this_hour] {
            break;
        }
        assert!(Instant::now() < deadline, "the record written during the outage was never stored: {marked:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        stored(&raw_store, this_hour).await,
        before.iter().cloned().collect(),
        "nothing stored before the kill was lost"
    );
    assert_eq!(
        stored(&raw_store, last_hour).await,
        during.iter().cloned().collect(),
        "the record retried through the outage"
    );

    shutdown.cancel();
    ingestor.await.unwrap().unwrap();
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
    let _ = hourglass_kafka::admin::delete_topics(&kafka, &[&kafka.events_topic, &kafka.dead_letter_topic]).await;
    drop(cassandra);
}
