//! The built `hourglass ingestor` (tier c): health for probes (reflection listing only health and itself,
//! NOT_SERVING once SIGTERM came), a record through it, SIGTERM; and a SIGKILL between writing and
//! committing, with the aggregated counts and the ledger checked after the redelivery.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::{hour, record};
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_kafka::{KafkaConfig, KafkaEventLog, testing as kafka_testing};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresRollupStore, testing as pg_testing};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, RejectionReason};
use tonic_health::pb::health_check_response::ServingStatus;

mod support;

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");

/// Where a role of the distributed platform finds the test's own database, topics and keyspace.
fn platform_env(command: &mut Command, database_url: &str, kafka: &KafkaConfig, cql: &CqlConfig) {
    command
        .env("HOURGLASS_DATABASE_URL", database_url)
        .env("HOURGLASS_KAFKA_BROKERS", &kafka.brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", &kafka.events_topic)
        .env("HOURGLASS_KAFKA_DEAD_LETTER_TOPIC", &kafka.dead_letter_topic)
        .env("HOURGLASS_KAFKA_TOPIC_PARTITIONS", kafka.topic_partitions.to_string())
        .env("HOURGLASS_CQL_NODES", cql.nodes.join(","))
        .env("HOURGLASS_CQL_KEYSPACE", &cql.keyspace)
        .env("HOURGLASS_CQL_BUCKETS", cql.buckets.to_string());
}

/// Starts `hourglass ingestor` in `group`, committing every `commit_interval_ms`, its health server
/// reporting NOT_SERVING for `shutdown_delay_ms` after SIGTERM; waits until that server reports SERVING.
/// Returns the process and the health server's address.
async fn start_ingestor(
    database_url: &str,
    kafka: &KafkaConfig,
    cql: &CqlConfig,
    group: &str,
    commit_interval_ms: u64,
    shutdown_delay_ms: u64,
) -> (Child, String) {
    let health_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(HOURGLASS);
    command.args(["ingestor", "--health-listen-addr", &format!("127.0.0.1:{health_port}")]);
    platform_env(&mut command, database_url, kafka, cql);
    let mut ingestor = command
        .env("HOURGLASS_INGESTOR_GROUP", group)
        // A member killed without leaving holds its partitions until its session times out: 6 s (the
        // broker's least) instead of librdkafka's 45 s, so the next member gets them sooner.
        .env("HOURGLASS_KAFKA_OPTIONS", "session.timeout.ms=6000")
        .env("HOURGLASS_INGESTOR_COMMIT_INTERVAL_MS", commit_interval_ms.to_string())
        .env("HOURGLASS_READINESS_INTERVAL_MS", "100")
        .env("HOURGLASS_SHUTDOWN_DELAY_MS", shutdown_delay_ms.to_string())
        .stdout(Stdio::null())
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let health_target = format!("http://127.0.0.1:{health_port}");
    support::wait_until_serving(&health_target, &mut ingestor, Duration::from_secs(90)).await;
    (ingestor, health_target)
}

/// Waits for a condition, polling; fails the test after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_ingestor_reports_health_stores_a_record_and_exits_cleanly_on_sigterm() {
    let database_url = pg_testing::create_test_database("ingestor_binary").await;
    let mut kafka = kafka_testing::test_config("ingestor_binary", &kafka_testing::test_brokers());
    kafka.topic_partitions = 2;
    let cql = hourglass_cql::testing::test_config("ingestor_bin", &hourglass_cql::testing::test_nodes(), 4);
    // A shutdown delay: the window in which the test sees the health server NOT_SERVING after SIGTERM.
    let (mut ingestor, health_target) =
        start_ingestor(&database_url, &kafka, &cql, "hourglass-ingestor", 100, 3_000).await;
    assert_health_server_lists_only_health_and_reflection(&health_target).await;

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
        plan_checks: vec![],
    };
    let event_log = KafkaEventLog::connect(kafka.clone(), "test-producer").await.unwrap();
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

    support::sigterm(&ingestor);
    support::wait_for_health(&health_target, &mut ingestor, ServingStatus::NotServing, Duration::from_secs(30)).await;
    let (status, logs) = support::wait_for_exit(&mut ingestor).await;
    assert!(status.success(), "ingestor exited with {status}: {logs}");
    assert!(logs.contains("ingestor stopped"), "{logs}");
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
    let _ = hourglass_kafka::admin::delete_topics(&kafka, &[&kafka.events_topic, &kafka.dead_letter_topic]).await;
}

/// The ingestor's health server serves no service of its own: reflection (v1, and v1alpha for older
/// clients) lists health and reflection alone, and health answers for `hourglass.ingestor` too.
async fn assert_health_server_lists_only_health_and_reflection(health_target: &str) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let channel = tonic::transport::Endpoint::from_shared(health_target.to_owned()).unwrap().connect().await.unwrap();
    let request = HealthCheckRequest { service: "hourglass.ingestor".into() };
    let status = HealthClient::new(channel.clone()).check(request).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let only_health_and_reflection =
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
    assert_eq!(hourglass_grpc::testing::listed_services_v1(channel.clone()).await, only_health_and_reflection);
    assert_eq!(hourglass_grpc::testing::listed_services_v1alpha(channel).await, only_health_and_reflection);
}

const EVENT_TYPES: [&str; 3] = ["view", "click", "buy"];

/// What a (customer, hour, event type) must count: its distinct events and users.
#[derive(Debug, Default)]
struct Expected {
    event_ids: BTreeSet<String>,
    users: BTreeSet<String>,
}

/// A consumer that dies by SIGKILL after writing and before committing (its commit interval is an hour,
/// so it never gets to) leaves every record to the next member of its group: the redelivered records
/// are written again over the same rows, their hours marked, and the aggregated counts and the ledger
/// show each event exactly once, over every hour and customer the records touched.
#[tokio::test]
async fn an_ingestor_killed_before_committing_loses_and_double_counts_nothing_in_any_hour() {
    let database_url = pg_testing::create_test_database("ingestor_crash").await;
    let kafka = kafka_testing::test_config("ingestor_crash", &kafka_testing::test_brokers());
    let cql = hourglass_cql::testing::test_config("ingestor_crash", &hourglass_cql::testing::test_nodes(), 4);
    let group = "crash-group";

    // The last 12 hours (within raw retention), two customers; each record mixes hours, as a client's
    // batch of late and current events does, so one redelivered record touches several hours.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let current_hour = hour::hour_start(now);
    let hours: Vec<i64> = (0..12).map(|back| current_hour - 3600 * back).collect();
    let mut expected: BTreeMap<(String, i64, String), Expected> = BTreeMap::new();
    let mut records = Vec::new();
    for customer in ["alpha", "beta"] {
        let mut events = Vec::new();
        for n in 0..45u32 {
            for (hour_index, hour_start) in hours.iter().enumerate() {
                if n >= 20 + 2 * hour_index as u32 {
                    continue; // a different number of events in every hour
                }
                let event_type = EVENT_TYPES[(n as usize + hour_index) % EVENT_TYPES.len()];
                let id = format!("{customer}-{hour_index}-{n}");
                let user = format!("user-{}", n % 7);
                let entry = expected.entry((customer.to_owned(), *hour_start, event_type.to_owned())).or_default();
                entry.event_ids.insert(id.clone());
                entry.users.insert(user.clone());
                events.push(Event {
                    event_id: id,
                    event_type: event_type.to_owned(),
                    occurred_at: Some(Timestamp { seconds: hour_start + i64::from(n), nanos: 0 }),
                    user_id: Some(user),
                    properties: BTreeMap::new(),
                });
            }
        }
        for (index, chunk) in events.chunks(25).enumerate() {
            // In time order, as a client sends them: a record's later hours are never its first one.
            let mut chunk = chunk.to_vec();
            chunk.sort_by_key(|event| event.occurred_at.unwrap().seconds);
            let mut accepted: BTreeMap<i64, u32> = BTreeMap::new();
            for event in &chunk {
                *accepted.entry(hour::hour_start(event.occurred_at.unwrap().seconds)).or_default() += 1;
            }
            let batch = EventBatchRecord {
                customer_id: customer.to_owned(),
                received_at_unix_ms: now * 1000,
                batch_id: format!("{customer}-{index}"),
                collector_id: "test".to_owned(),
                events: chunk,
                outcomes: accepted
                    .into_iter()
                    .map(|(hour_start_unix_secs, count)| OutcomeCount {
                        hour_start_unix_secs,
                        outcome: Outcome::Accepted.into(),
                        reason: RejectionReason::Unspecified.into(),
                        count,
                    })
                    .collect(),
                plan_checks: Vec::new(),
            };
            records.push(record::encode(customer.to_owned(), &batch));
        }
    }
    let event_log = KafkaEventLog::connect(kafka.clone(), "test-producer").await.unwrap();
    for log_record in records {
        event_log.append(Topic::Events, log_record).await.unwrap();
    }
    let mut per_hour: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
    for ((customer, hour_start, _), truth) in &expected {
        per_hour.entry((customer.clone(), *hour_start)).or_default().extend(truth.event_ids.iter().cloned());
    }
    let expected_hours: BTreeSet<CustomerHour> = per_hour
        .keys()
        .map(|(customer, hour_start)| CustomerHour {
            customer_id: hourglass_core::customer::CustomerId::new(customer).unwrap(),
            hour_start: *hour_start,
        })
        .collect();
    assert_eq!(expected_hours.len(), 24);

    // The first ingestor writes everything and is killed before its first commit.
    let (mut first, _) = start_ingestor(&database_url, &kafka, &cql, group, 3_600_000, 0).await;
    let raw_store = CqlRawStore::connect(&cql).await.unwrap();
    let all_stored = || async {
        for ((customer, hour_start), ids) in &per_hour {
            let stored: BTreeSet<String> = raw_store
                .read_hour(customer, *hour_start)
                .await
                .unwrap()
                .into_iter()
                .map(|event| event.event_id)
                .collect();
            if &stored != ids {
                return false;
            }
        }
        true
    };
    wait_for("the first ingestor to write every event", Duration::from_secs(90), all_stored).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let job_queue = PostgresJobQueue::new(PostgresConfig::for_url(&database_url).connect_lazy().unwrap());
    assert!(job_queue.dirty_hours().await.unwrap().is_empty(), "the killed ingestor marked nothing");
    let group_offsets = || {
        let kafka = kafka.clone();
        async move {
            tokio::task::spawn_blocking(move || kafka_testing::group_offsets(&kafka, group, &kafka.events_topic))
                .await
                .unwrap()
        }
    };
    let offsets = group_offsets().await;
    assert!(offsets.iter().all(|offset| offset.committed.is_none()), "it committed nothing: {offsets:?}");

    // The next member of the group gets every record again, writes it over the same rows, marks and commits.
    let (mut second, _) = start_ingestor(&database_url, &kafka, &cql, group, 100, 0).await;
    wait_for("every hour marked and every record committed", Duration::from_secs(90), || async {
        let marked: BTreeSet<CustomerHour> =
            job_queue.dirty_hours().await.unwrap().into_iter().map(|(hour, _)| hour).collect();
        let offsets = group_offsets().await;
        marked == expected_hours && offsets.iter().all(|offset| offset.end == 0 || offset.committed == Some(offset.end))
    })
    .await;
    assert!(all_stored().await, "the raw store holds each event once");

    // The real aggregator: closed hours final at once (no allowed lateness), the open hour provisional.
    let mut command = Command::new(HOURGLASS);
    command.arg("aggregator");
    platform_env(&mut command, &database_url, &kafka, &cql);
    let mut aggregator = command
        .env("HOURGLASS_ALLOWED_LATENESS_SECS", "0")
        .env("HOURGLASS_PROVISIONAL_INTERVAL_SECS", "1")
        .env("HOURGLASS_AGGREGATOR_POLL_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rollups = PostgresRollupStore::new(PostgresConfig::for_url(&database_url).connect_lazy().unwrap());
    let (from, to) = (hours[hours.len() - 1], current_hour + 3600);
    let counted = || async {
        let mut counted = BTreeMap::new();
        for customer in ["alpha", "beta"] {
            for row in rollups.hourly_rollups(customer, from, to, &[], false).await.unwrap() {
                counted.insert((customer.to_owned(), row.hour_start, row.event_type), (row.events, row.distinct_users));
            }
        }
        counted
    };
    let truth: BTreeMap<(String, i64, String), (u64, u64)> = expected
        .iter()
        .map(|(key, truth)| (key.clone(), (truth.event_ids.len() as u64, truth.users.len() as u64)))
        .collect();
    wait_for("every hour and event type to be aggregated", Duration::from_secs(120), || {
        let exited = aggregator.try_wait().unwrap();
        assert!(exited.is_none(), "the aggregator exited ({exited:?})");
        let (counted, truth) = (&counted, &truth);
        async move { counted().await.len() == truth.len() }
    })
    .await;
    // Events and distinct users per hour and event type: each event counted once, none lost.
    assert_eq!(counted().await, truth);
    let (status, logs) = support::sigterm_and_wait(&mut aggregator).await;
    assert!(status.success(), "aggregator exited with {status}: {logs}");
    let (status, logs) = support::sigterm_and_wait(&mut second).await;
    assert!(status.success(), "ingestor exited with {status}: {logs}");

    // The ledger after an independent recount of the raw store: received = stored = counted, every hour.
    let rfc3339 = |unix: i64| chrono::DateTime::from_timestamp(unix, 0).unwrap().to_rfc3339();
    let mut command = Command::new(HOURGLASS);
    command.args(["verify", "--from", &rfc3339(from), "--to", &rfc3339(to)]);
    platform_env(&mut command, &database_url, &kafka, &cql);
    let verified = command.output().unwrap();
    let printed = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{printed}\n{}", String::from_utf8_lossy(&verified.stderr));
    assert!(printed.contains("24 hour(s) verified, 0 final hour(s) do not balance"), "{printed}");
    let ledger = rollups.ledger(None, from, to).await.unwrap();
    let ledger: BTreeMap<(String, i64), (u64, u64, u64, u64)> = ledger
        .into_iter()
        .map(|row| {
            let key = (row.customer_hour.customer_id.as_str().to_owned(), row.customer_hour.hour_start);
            (key, (row.received, row.accepted, row.stored, row.counted))
        })
        .collect();
    let balanced: BTreeMap<(String, i64), (u64, u64, u64, u64)> = per_hour
        .iter()
        .map(|(key, ids)| {
            let sent = ids.len() as u64;
            (key.clone(), (sent, sent, sent, sent))
        })
        .collect();
    assert_eq!(ledger, balanced, "(received, accepted, stored, counted) per customer-hour");

    hourglass_cql::testing::drop_test_keyspace(&cql).await;
    let _ = hourglass_kafka::admin::delete_topics(&kafka, &[&kafka.events_topic, &kafka.dead_letter_topic]).await;
}
