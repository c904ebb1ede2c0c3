//! The ingestor against real Kafka, Cassandra (the CQL server) and Postgres (tier b).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, LogRecord, Topic};
use hourglass_core::hour;
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::key_store::KeyStore;
use hourglass_core::record;
use hourglass_cql::CqlRawStore;
use hourglass_ingestor::IngestorConfig;
use hourglass_ingestor::dead_letter::{REASON_HEADER, SOURCE_HEADER};
use hourglass_kafka::reader::{self, RangeStart, TopicRange};
use hourglass_kafka::{KafkaConfig, KafkaEventLog, KafkaEventLogConsumer, testing as kafka_testing};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, migrate, testing as pg_testing};
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{Event, IngestBatchRequest, PropertyValue, RejectionReason, property_value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Stores {
    kafka: KafkaConfig,
    database_url: String,
    cql: hourglass_cql::CqlConfig,
    raw_store: Arc<CqlRawStore>,
    job_queue: Arc<PostgresJobQueue>,
    key_store: Arc<PostgresKeyStore>,
    pool: sqlx::PgPool,
    event_log: Arc<KafkaEventLog>,
}

async fn stores(test_name: &str) -> Stores {
    let kafka = kafka_testing::test_config(test_name, &kafka_testing::test_brokers());
    let (cql, raw_store) = hourglass_cql::testing::create_test_store(test_name, 4).await;
    let database_url = pg_testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(&database_url).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "test-producer").await.unwrap());
    Stores {
        kafka,
        database_url,
        cql,
        raw_store: Arc::new(raw_store),
        job_queue: Arc::new(PostgresJobQueue::new(pool.clone())),
        key_store: Arc::new(PostgresKeyStore::new(pool.clone())),
        pool,
        event_log,
    }
}

impl Stores {
    /// Drops the test's keyspace and topics.
    async fn clean_up(self) {
        hourglass_cql::testing::drop_test_keyspace(&self.cql).await;
        let topics = [self.kafka.events_topic.as_str(), self.kafka.dead_letter_topic.as_str()];
        let _ = hourglass_kafka::admin::delete_topics(&self.kafka, &topics).await;
    }
}

fn start_ingestor(
    stores: &Stores,
    config: IngestorConfig,
) -> (CancellationToken, JoinHandle<Result<(), hourglass_ingestor::IngestorError>>) {
    let shutdown = CancellationToken::new();
    let consumer =
        KafkaEventLogConsumer::subscribe(&stores.kafka, Topic::Events, &config.group_id, "hourglass-ingestor")
            .expect("subscribe to the test topic");
    let task = tokio::spawn(hourglass_ingestor::run(
        config.loop_config(),
        consumer,
        Arc::clone(&stores.raw_store),
        Arc::clone(&stores.job_queue),
        Arc::clone(&stores.event_log),
        hourglass_ingestor::Suppression::none(),
        shutdown.clone(),
    ));
    (shutdown, task)
}

fn fast_config(group: &str) -> IngestorConfig {
    let mut config = IngestorConfig::with_defaults();
    config.group_id = group.to_owned();
    config.commit_interval_ms = 100;
    config
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn event_at(id: &str, seconds: i64) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: "purchase".to_owned(),
        occurred_at: Some(Timestamp { seconds, nanos: 250_000_000 }),
        user_id: Some(format!("user-{}", id.len())),
        properties: BTreeMap::from([
            ("sku".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue(format!("sku-{id}"))) }),
            ("price".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(9.5)) }),
            ("gift".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(false)) }),
        ]),
    }
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stored_ids(store: &CqlRawStore, customer: &str, hour_start: i64) -> BTreeSet<String> {
    store.read_hour(customer, hour_start).await.unwrap().into_iter().map(|event| event.event_id).collect()
}

#[tokio::test]
async fn events_published_by_the_collector_land_once_and_their_hours_are_marked() {
    let stores = stores("collector_to_store").await;
    // The real collector, publishing to the test topics.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector_shutdown = CancellationToken::new();
    let collector = tokio::spawn(hourglass_collector::run(
        hourglass_collector::CollectorConfig::with_defaults(address),
        Arc::clone(&stores.key_store),
        Arc::new(hourglass_postgres::PostgresPlanStore::new(stores.pool.clone())),
        Arc::clone(&stores.event_log),
        listener,
        collector_shutdown.clone(),
    ));
    let key = stores.key_store.create_key(&CustomerId::new("acme").unwrap(), Scope::Ingest, "").await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut client = IngestServiceClient::new(channel);

    // Events now, an hour ago and two hours ago (never in the future, which the collector refuses).
    let now = now_secs();
    let mut expected: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut batches = Vec::new();
    for batch in 0..4 {
        let events: Vec<Event> = (0..25)
            .map(|index| {
                let occurred_at = now - 3600 * ((batch + index) % 3) as i64 - index as i64;
                let id = format!("b{batch}-e{index}");
                expected.entry(hour::hour_start(occurred_at)).or_default().insert(id.clone());
                event_at(&id, occurred_at)
            })
            .collect();
        batches.push(events);
    }
    // A client retry: the first batch again, as if its ack had been lost.
    batches.push(batches[0].clone());
    for events in batches {
        let mut request = tonic::Request::new(IngestBatchRequest { events });
        request.metadata_mut().insert("authorization", format!("Bearer {}", key.expose_secret()).parse().unwrap());
        client.ingest_batch(request).await.unwrap();
    }

    let (shutdown, ingestor) = start_ingestor(&stores, fast_config("collector-to-store"));
    let expected_hours: Vec<CustomerHour> = expected
        .keys()
        .map(|hour_start| CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start: *hour_start })
        .collect();
    wait_for("every hour to be marked dirty", Duration::from_secs(60), || async {
        let marked: Vec<CustomerHour> =
            stores.job_queue.dirty_hours().await.unwrap().into_iter().map(|(hour, _)| hour).collect();
        marked.len() == expected_hours.len()
    })
    .await;

    for (hour_start, ids) in &expected {
        assert_eq!(
            &stored_ids(&stores.raw_store, "acme", *hour_start).await,
            ids,
            "hour {hour_start}: each event once"
        );
    }
    let stored = stores.raw_store.read_hour("acme", hour::hour_start(now)).await.unwrap();
    let sample = stored.iter().find(|event| event.event_id == "b0-e0").expect("b0-e0 stored");
    assert_eq!(sample.event_type, "purchase");
    assert_eq!(sample.occurred_at_ms, now * 1000 + 250);
    assert_eq!(sample.string_properties.get("sku").map(String::as_str), Some("sku-b0-e0"));
    assert_eq!(sample.number_properties.get("price"), Some(&9.5));
    assert_eq!(sample.bool_properties.get("gift"), Some(&false));
    let marked: Vec<CustomerHour> =
        stores.job_queue.dirty_hours().await.unwrap().into_iter().map(|(hour, _)| hour).collect();
    assert_eq!(marked, expected_hours, "the dirty marks name exactly the hours written");

    shutdown.cancel();
    ingestor.await.unwrap().unwrap();
    collector_shutdown.cancel();
    collector.await.unwrap().unwrap();
    stores.clean_up().await;
}

fn batch_record(customer: &str, batch_id: &str, events: Vec<Event>) -> LogRecord {
    let outcomes = events
        .iter()
        .map(|event| OutcomeCount {
            hour_start_unix_secs: hour::hour_start(event.occurred_at.unwrap().seconds),
            outcome: Outcome::Accepted.into(),
            reason: RejectionReason::Unspecified.into(),
            count: 1,
        })
        .collect();
    let record = EventBatchRecord {
        customer_id: customer.to_owned(),
        received_at_unix_ms: now_secs() * 1000,
        batch_id: batch_id.to_owned(),
        collector_id: "test".to_owned(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    };
    record::encode(customer.to_owned(), &record)
}

#[tokio::test]
async fn a_crash_after_writing_and_before_committing_redelivers_without_loss_or_duplicates() {
    let stores = stores("crash_before_commit").await;
    let current_hour = hour::hour_start(now_secs());
    let mut sent = BTreeSet::new();
    for batch in 0..10 {
        let events: Vec<Event> = (0..20)
            .map(|index| {
                let id = format!("c{batch}-{index}");
                sent.insert(id.clone());
                event_at(&id, current_hour + index)
            })
            .collect();
        stores
            .event_log
            .append(Topic::Events, batch_record("crashy", &format!("batch-{batch}"), events))
            .await
            .unwrap();
    }

    // First ingestor: writes everything but never gets to commit (its commit interval is an hour), then
    // dies without a graceful shutdown.
    let mut never_commits = fast_config("crash-group");
    never_commits.commit_interval_ms = 3_600_000;
    let (_shutdown, first) = start_ingestor(&stores, never_commits);
    wait_for("the first ingestor to write every event", Duration::from_secs(60), || async {
        stored_ids(&stores.raw_store, "crashy", current_hour).await.len() == sent.len()
    })
    .await;
    first.abort();
    let _ = first.await;
    assert!(stores.job_queue.dirty_hours().await.unwrap().is_empty(), "nothing was marked or committed");

    // Second ingestor in the same group: the records come again.
    let (shutdown, second) = start_ingestor(&stores, fast_config("crash-group"));
    wait_for("the redelivered records to be marked", Duration::from_secs(90), || async {
        !stores.job_queue.dirty_hours().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(stored_ids(&stores.raw_store, "crashy", current_hour).await, sent, "exactly the sent events, once each");
    shutdown.cancel();
    second.await.unwrap().unwrap();
    stores.clean_up().await;
}

/// The group's committed offset and the end of every partition of the events topic.
async fn group_offsets(kafka: &KafkaConfig, group: &str) -> Vec<kafka_testing::GroupOffset> {
    let (kafka, group) = (kafka.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || kafka_testing::group_offsets(&kafka, &group, &kafka.events_topic))
        .await
        .unwrap()
}

/// An offset is committed only once the hours of the records below it are marked dirty: committed
/// without its mark, a record would sit in the raw store and never be aggregated, and nothing would
/// redeliver it to try again. Marking fails for real here: the test renames the table the marks go to.
#[tokio::test]
async fn nothing_is_committed_while_marking_hours_fails_and_everything_once_it_works() {
    let stores = stores("mark_failure").await;
    // A connection of the test's own, apart from the ingestor's pool, so watching the ingestor's
    // statements in pg_stat_activity never overwrites them.
    let admin =
        PostgresConfig { max_connections: 1, ..PostgresConfig::for_url(&stores.database_url) }.connect_lazy().unwrap();
    sqlx::query("ALTER TABLE dirty_hours RENAME TO dirty_hours_away").execute(&admin).await.unwrap();

    // Several customers, so the records (keyed by customer) spread over the partitions; two hours each.
    let current_hour = hour::hour_start(now_secs());
    let mut sent: BTreeMap<(String, i64), BTreeSet<String>> = BTreeMap::new();
    for customer in ["north", "south", "east", "west"] {
        for batch in 0..3 {
            let events: Vec<Event> = (0..10)
                .map(|index| {
                    let hour_start = current_hour - 3600 * (index % 2);
                    let id = format!("{customer}-{batch}-{index}");
                    sent.entry((customer.to_owned(), hour_start)).or_default().insert(id.clone());
                    event_at(&id, hour_start + index)
                })
                .collect();
            let log_record = batch_record(customer, &format!("{customer}-{batch}"), events);
            stores.event_log.append(Topic::Events, log_record).await.unwrap();
        }
    }
    let expected_hours: BTreeSet<CustomerHour> = sent
        .keys()
        .map(|(customer, hour_start)| CustomerHour {
            customer_id: CustomerId::new(customer).unwrap(),
            hour_start: *hour_start,
        })
        .collect();
    let all_stored = || async {
        for ((customer, hour_start), ids) in &sent {
            if &stored_ids(&stores.raw_store, customer, *hour_start).await != ids {
                return false;
            }
        }
        true
    };

    let group = "mark-failure-group";
    let (shutdown, first) = start_ingestor(&stores, fast_config(group));
    wait_for("every event to be written", Duration::from_secs(60), all_stored).await;
    let (written_at,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM now())::float8").fetch_one(&admin).await.unwrap();
    wait_for("a mark attempt after the writes to fail", Duration::from_secs(60), || async {
        let (failed,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query LIKE 'INSERT INTO dirty_hours%' AND state = 'idle' AND query_start > to_timestamp($1)",
        )
        .bind(written_at)
        .fetch_one(&admin)
        .await
        .unwrap();
        failed > 0
    })
    .await;
    let offsets = group_offsets(&stores.kafka, group).await;
    assert!(offsets.iter().all(|offset| offset.committed.is_none()), "committed while marks fail: {offsets:?}");

    // A graceful stop marks and commits once more after every write has finished; that mark fails too.
    shutdown.cancel();
    first.await.unwrap().unwrap();
    let offsets = group_offsets(&stores.kafka, group).await;
    assert!(offsets.iter().any(|offset| offset.end > 0), "the records are in the topic: {offsets:?}");
    assert!(offsets.iter().all(|offset| offset.committed.is_none()), "committed without marks: {offsets:?}");
    let (marked,): (i64,) = sqlx::query_as("SELECT count(*) FROM dirty_hours_away").fetch_one(&admin).await.unwrap();
    assert_eq!(marked, 0);

    // The next member of the group gets every record again and, once marking works, marks every hour
    // and commits every record.
    let (shutdown, second) = start_ingestor(&stores, fast_config(group));
    sqlx::query("ALTER TABLE dirty_hours_away RENAME TO dirty_hours").execute(&admin).await.unwrap();
    wait_for("every hour marked and every record committed", Duration::from_secs(60), || async {
        let marked: BTreeSet<CustomerHour> =
            stores.job_queue.dirty_hours().await.unwrap().into_iter().map(|(hour, _)| hour).collect();
        let offsets = group_offsets(&stores.kafka, group).await;
        marked == expected_hours && offsets.iter().all(|offset| offset.end == 0 || offset.committed == Some(offset.end))
    })
    .await;
    shutdown.cancel();
    second.await.unwrap().unwrap();
    assert!(all_stored().await, "each event stored once, as sent");
    stores.clean_up().await;
}

#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let stores = stores("poison").await;
    let current_hour = hour::hour_start(now_secs());
    let garbage = LogRecord {
        key: "victim".into(),
        payload: b"\xff\xff\xff not protobuf".to_vec(),
        headers: vec![(record::SCHEMA_VERSION_HEADER, b"1".to_vec())],
    };
    let mut from_the_future = batch_record("victim", "future", vec![event_at("future-1", current_hour)]);
    from_the_future.headers = vec![(record::SCHEMA_VERSION_HEADER, b"99".to_vec())];
    let good = batch_record("victim", "good", vec![event_at("good-1", current_hour + 1)]);
    for log_record in [garbage, from_the_future, good] {
        stores.event_log.append(Topic::Events, log_record).await.unwrap();
    }

    let (shutdown, ingestor) = start_ingestor(&stores, fast_config("poison-group"));
    wait_for("the record after the poison ones to be stored", Duration::from_secs(60), || async {
        stored_ids(&stores.raw_store, "victim", current_hour).await.contains("good-1")
    })
    .await;
    shutdown.cancel();
    ingestor.await.unwrap().unwrap();

    assert_eq!(stored_ids(&stores.raw_store, "victim", current_hour).await, BTreeSet::from(["good-1".to_owned()]));
    let kafka = stores.kafka.clone();
    let dead_letters =
        tokio::task::spawn_blocking(move || kafka_testing::read_topic(&kafka, kafka.topic_name(Topic::DeadLetter)))
            .await
            .unwrap();
    assert_eq!(dead_letters.len(), 2);
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|record| String::from_utf8(record.header(REASON_HEADER).unwrap().to_vec()).unwrap())
        .collect();
    assert!(reasons.iter().any(|reason| reason.contains("undecodable payload")), "{reasons:?}");
    assert!(reasons.iter().any(|reason| reason.contains("unknown schema version 99")), "{reasons:?}");
    for dead_letter in &dead_letters {
        let source = String::from_utf8(dead_letter.header(SOURCE_HEADER).unwrap().to_vec()).unwrap();
        assert!(source.starts_with(&stores.kafka.events_topic), "{source}");
        assert_eq!(dead_letter.key, "victim");
    }
    stores.clean_up().await;
}

/// A record with a time no store can hold (a hostile or faulty producer: the collector refuses such
/// events) once wedged the partition: marking its hour failed forever and nothing after it was
/// committed, for every customer. It must be dead-lettered with its reason, and the records after it,
/// of any customer, stored, marked and committed.
#[tokio::test]
async fn a_record_with_an_impossible_hour_is_dead_lettered_and_other_customers_go_on() {
    let stores = stores("impossible_hour").await;
    let current_hour = hour::hour_start(now_secs());
    let far_future = 9_000_000_000_000_000;
    let mut hostile = EventBatchRecord {
        customer_id: "hostile".to_owned(),
        received_at_unix_ms: now_secs() * 1000,
        batch_id: "hostile-1".to_owned(),
        collector_id: "test".to_owned(),
        events: vec![event_at("h-1", far_future)],
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: hour::hour_start(far_future),
            outcome: Outcome::Rejected.into(),
            reason: RejectionReason::EventIdEmpty.into(),
            count: 1,
        }],
        plan_checks: Vec::new(),
    };
    stores.event_log.append(Topic::Events, record::encode("hostile".into(), &hostile)).await.unwrap();
    hostile.events.clear();
    hostile.batch_id = "hostile-2".to_owned();
    stores.event_log.append(Topic::Events, record::encode("hostile".into(), &hostile)).await.unwrap();
    for customer in ["hostile", "bystander"] {
        let good = batch_record(
            customer,
            &format!("{customer}-good"),
            vec![event_at(&format!("{customer}-ok"), current_hour + 5)],
        );
        stores.event_log.append(Topic::Events, good).await.unwrap();
    }

    let (shutdown, ingestor) = start_ingestor(&stores, fast_config("impossible-hour-group"));
    let expected_hours: BTreeSet<CustomerHour> = ["bystander", "hostile"]
        .into_iter()
        .map(|customer| CustomerHour { customer_id: CustomerId::new(customer).unwrap(), hour_start: current_hour })
        .collect();
    wait_for("both customers' good hours to be marked", Duration::from_secs(60), || async {
        let marked: BTreeSet<CustomerHour> =
            stores.job_queue.dirty_hours().await.unwrap().into_iter().map(|(hour, _)| hour).collect();
        marked == expected_hours
    })
    .await;
    shutdown.cancel();
    ingestor.await.unwrap().unwrap();

    assert_eq!(
        stored_ids(&stores.raw_store, "bystander", current_hour).await,
        BTreeSet::from(["bystander-ok".to_owned()])
    );
    assert_eq!(stored_ids(&stores.raw_store, "hostile", current_hour).await, BTreeSet::from(["hostile-ok".to_owned()]));
    let kafka = stores.kafka.clone();
    let dead_letters =
        tokio::task::spawn_blocking(move || kafka_testing::read_topic(&kafka, kafka.topic_name(Topic::DeadLetter)))
            .await
            .unwrap();
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|record| String::from_utf8(record.header(REASON_HEADER).unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("outside the supported range"), "{reasons:?}");
    assert!(reasons[1].contains("not the start of a supported hour"), "{reasons:?}");
    stores.clean_up().await;
}

#[tokio::test]
async fn a_fixed_dead_letter_reinjected_twice_is_stored_once() {
    let stores = stores("reinject").await;
    let current_hour = hour::hour_start(now_secs());
    // A valid batch whose producer mislabelled its schema version.
    let mut mislabelled = batch_record(
        "fixable",
        "fixable-batch",
        vec![event_at("fix-1", current_hour), event_at("fix-2", current_hour + 1)],
    );
    mislabelled.headers = vec![(record::SCHEMA_VERSION_HEADER, b"7".to_vec())];
    stores.event_log.append(Topic::Events, mislabelled).await.unwrap();

    let (shutdown, ingestor) = start_ingestor(&stores, fast_config("reinject-group"));
    let kafka = stores.kafka.clone();
    let list = move || {
        let kafka = kafka.clone();
        async move {
            let records = tokio::task::spawn_blocking(move || {
                reader::read_to_end(&kafka, kafka.topic_name(Topic::DeadLetter), Duration::from_secs(30))
            })
            .await
            .unwrap()
            .unwrap();
            records.into_iter().map(hourglass_ingestor::dead_letter::DeadLetter::from_record).collect::<Vec<_>>()
        }
    };
    wait_for("the record to be dead-lettered", Duration::from_secs(60), || async { list().await.len() == 1 }).await;
    let dead_letters = list().await;
    assert_eq!(dead_letters[0].schema_version.as_deref(), Some("7"));
    assert!(dead_letters[0].reason.contains("unknown schema version 7"), "{}", dead_letters[0].reason);

    let dlq_topic = stores.kafka.dead_letter_topic.clone();
    for _ in 0..2 {
        let count = hourglass_ingestor::dead_letter::reinject(&*stores.event_log, &dlq_topic, &dead_letters, Some(1))
            .await
            .unwrap();
        assert_eq!(count, 1);
    }
    wait_for("the re-injected events to be stored and marked", Duration::from_secs(60), || async {
        !stores.job_queue.dirty_hours().await.unwrap().is_empty()
    })
    .await;
    let expected = BTreeSet::from(["fix-1".to_owned(), "fix-2".to_owned()]);
    assert_eq!(stored_ids(&stores.raw_store, "fixable", current_hour).await, expected);
    shutdown.cancel();
    ingestor.await.unwrap().unwrap();
    assert_eq!(list().await.len(), 1, "re-injected records did not come back to the dead-letter topic");
    stores.clean_up().await;
}

#[tokio::test]
async fn replay_restores_a_lost_store_from_a_time_or_from_the_beginning() {
    let stores = stores("replay").await;
    let current_hour = hour::hour_start(now_secs());
    let early: Vec<Event> = (0..5).map(|index| event_at(&format!("early-{index}"), current_hour + index)).collect();
    let late: Vec<Event> = (0..5).map(|index| event_at(&format!("late-{index}"), current_hour + 10 + index)).collect();
    stores.event_log.append(Topic::Events, batch_record("replayed", "early", early)).await.unwrap();
    // Kafka timestamps are milliseconds: leave a gap so "from" falls between the two records.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    stores.event_log.append(Topic::Events, batch_record("replayed", "late", late)).await.unwrap();

    let replay = |start| async {
        let range = TopicRange::open(&stores.kafka, &stores.kafka.events_topic, start).await.unwrap();
        let total = range.total_records();
        hourglass_ingestor::replay::replay(
            &fast_config("unused").loop_config(),
            range.into_records(),
            total,
            Arc::clone(&stores.raw_store),
            Arc::clone(&stores.job_queue),
            Arc::clone(&stores.event_log),
            hourglass_ingestor::Suppression::none(),
            CancellationToken::new(),
            |_| {},
        )
        .await
    };
    let summary = replay(RangeStart::Time(between)).await.unwrap();
    assert_eq!((summary.stored, summary.dead_lettered, summary.hours_marked), (1, 0, 1));
    let late_ids: BTreeSet<String> = (0..5).map(|index| format!("late-{index}")).collect();
    assert_eq!(stored_ids(&stores.raw_store, "replayed", current_hour).await, late_ids);

    let summary = replay(RangeStart::Beginning).await.unwrap();
    assert_eq!(summary.stored, 2);
    assert_eq!(stored_ids(&stores.raw_store, "replayed", current_hour).await.len(), 10);
    let marks = stores.job_queue.dirty_hours().await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].1, 2, "the replayed hour was marked again: its generation went up");
    stores.clean_up().await;
}
