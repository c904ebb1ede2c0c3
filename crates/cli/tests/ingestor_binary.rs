//! The built `hourglass ingestor` (tier c): health for probes, a record through it, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::{hour, record};
use hourglass_kafka::{KafkaEventLog, testing as kafka_testing};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, testing as pg_testing};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

mod support;

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");

#[tokio::test]
async fn the_ingestor_reports_health_stores_a_record_and_exits_cleanly_on_sigterm() {
    let database_url = pg_testing::create_test_database("ingestor_binary").await;
    let kafka = kafka_testing::test_config("ingestor_binary", &kafka_testing::test_brokers());
    let cql = hourglass_cql::testing::test_config("ingestor_bin", &hourglass_cql::testing::test_nodes(), 4);
    let health_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let mut ingestor = Command::new(HOURGLASS)
        .args(["ingestor", "--health-listen-addr", &format!("127.0.0.1:{health_port}")])
        .env("HOURGLASS_DATABASE_URL", &database_url)
        .env("HOURGLASS_KAFKA_BROKERS", &kafka.brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", &kafka.events_topic)
        .env("HOURGLASS_KAFKA_DEAD_LETTER_TOPIC", &kafka.dead_letter_topic)
        .env("HOURGLASS_KAFKA_TOPIC_PARTITIONS", "2")
        .env("HOURGLASS_CQL_NODES", cql.nodes.join(","))
        .env("HOURGLASS_CQL_KEYSPACE", &cql.keyspace)
        .env("HOURGLASS_CQL_BUCKETS", "4")
        .env("HOURGLASS_INGESTOR_COMMIT_INTERVAL_MS", "100")
        .env("HOURGLASS_READINESS_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    support::wait_until_serving(&format!("http://127.0.0.1:{health_port}"), &mut ingestor, Duration::from_secs(90))
        .await;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let batch = EventBatchRecord {
        customer_id: "binary".into(),
        received_at_unix_ms: now * 1000,
        batch_id: "binary-1".into(),
        collector_id: "test".into(),
        events: vec![Event {
            event_id: "bin-1".into(),
            event_type: "signup".into(),
            occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
            ..Default::default()
        }],
        outcomes: vec![],
    };
    let mut producer_config = kafka.clone();
    producer_config.topic_partitions = 2;
    let event_log = KafkaEventLog::connect(producer_config, "test-producer").await.unwrap();
    event_log.append(Topic::Events, record::encode("binary".into(), &batch)).await.unwrap();

    let job_queue = PostgresJobQueue::new(PostgresConfig::for_url(&database_url).connect_lazy().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let marked = job_queue.dirty_hours().await.unwrap();
        if let Some((customer_hour, _)) = marked.first() {
            assert_eq!(customer_hour.customer_id.as_str(), "binary");
            assert_eq!(customer_hour.hour_start, hour::hour_start(now));
            break;
        }
        assert!(Instant::now() < deadline, "the record was never stored and marked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, logs) = support::sigterm_and_wait(&mut ingestor).await;
    assert!(status.success(), "ingestor exited with {status}: {logs}");
    assert!(logs.contains("ingestor stopped"), "{logs}");
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
    let _ = hourglass_kafka::admin::delete_topics(&kafka, &[&kafka.events_topic, &kafka.dead_letter_topic]).await;
}
