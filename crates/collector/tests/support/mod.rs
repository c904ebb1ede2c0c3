//! A collector in-process against the real Kafka broker and Postgres that `scripts/test.sh` starts,
//! each test with its own database and topics, driven over a real socket.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hourglass_collector::CollectorConfig;
use hourglass_core::api_key::{ApiKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::KeyStore;
use hourglass_core::record;
use hourglass_kafka::{KafkaConfig, KafkaEventLog, admin};
use hourglass_postgres::{PostgresConfig, PostgresKeyStore, PostgresPlanStore, migrate, testing};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{Event, PropertyValue, property_value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use hourglass_kafka::testing::{test_brokers, test_config as test_kafka_config};

/// A running collector and what a test needs around it.
pub struct TestCollector {
    pub address: SocketAddr,
    pub key_store: Arc<PostgresKeyStore>,
    pub plan_store: Arc<PostgresPlanStore>,
    pub kafka: KafkaConfig,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<Result<(), hourglass_collector::CollectorError>>,
}

impl TestCollector {
    /// Starts a collector on the shared test broker.
    pub async fn start(test_name: &str) -> Self {
        Self::start_with(test_name, &test_brokers(), |_| {}).await
    }

    /// Starts a collector on `brokers`, with its configuration adjusted by `adjust`.
    pub async fn start_with(test_name: &str, brokers: &str, adjust: impl FnOnce(&mut CollectorConfig)) -> Self {
        let kafka = test_kafka_config(test_name, brokers);
        Self::start_on(test_name, kafka, adjust).await
    }

    /// Starts a collector with the given Kafka configuration.
    pub async fn start_on(test_name: &str, kafka: KafkaConfig, adjust: impl FnOnce(&mut CollectorConfig)) -> Self {
        let database_url = testing::create_test_database(test_name).await;
        let pool = PostgresConfig::for_url(database_url).connect_lazy().unwrap();
        migrate::run(&pool).await.unwrap();
        let key_store = Arc::new(PostgresKeyStore::new(pool.clone()));
        let plan_store = Arc::new(PostgresPlanStore::new(pool));
        let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "hourglass-test-collector").await.unwrap());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = CollectorConfig::with_defaults(address);
        config.collector_id = Some("test-collector".into());
        config.server.readiness_interval_ms = 100;
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(hourglass_collector::run(
            config,
            Arc::clone(&key_store),
            Arc::clone(&plan_store),
            event_log,
            listener,
            shutdown.clone(),
        ));
        Self { address, key_store, plan_store, kafka, shutdown, server }
    }

    pub async fn create_key(&self, customer: &str, scope: Scope) -> ApiKey {
        self.key_store.create_key(&CustomerId::new(customer).unwrap(), scope, "test").await.unwrap()
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .expect("collector accepts connections")
    }

    pub async fn client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel().await)
    }

    /// Every record in the events topic now, with the headers that matter.
    pub async fn published_records(&self) -> Vec<PublishedRecord> {
        read_topic(&self.kafka, &self.kafka.events_topic).await
    }

    /// Stops the collector and deletes the test's topics.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        let _ = admin::delete_topics(&self.kafka, &[&self.kafka.events_topic, &self.kafka.dead_letter_topic]).await;
    }
}

/// Opens a bidirectional stream with `key`; returns the batch sender and the ack stream.
pub async fn open_stream(
    collector: &TestCollector,
    key: &ApiKey,
) -> (
    tokio::sync::mpsc::Sender<hourglass_proto::v1::IngestStreamRequest>,
    tonic::Streaming<hourglass_proto::v1::IngestStreamResponse>,
) {
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(64);
    let acks = collector
        .client()
        .await
        .ingest_stream(authorized(tokio_stream::wrappers::ReceiverStream::new(batch_rx), key))
        .await
        .expect("stream accepted")
        .into_inner();
    (batch_tx, acks)
}

/// The next ack of a bidirectional stream, failing the test if none comes within `timeout`.
pub async fn next_ack(
    acks: &mut tonic::Streaming<hourglass_proto::v1::IngestStreamResponse>,
    timeout: Duration,
) -> hourglass_proto::v1::BatchAck {
    tokio::time::timeout(timeout, acks.message())
        .await
        .unwrap_or_else(|_| panic!("no ack within {timeout:?}"))
        .expect("stream healthy")
        .expect("stream open")
        .ack
        .expect("ack present")
}

/// Attaches an API key to a request.
pub fn authorized<T>(message: T, key: &ApiKey) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {}", key.expose_secret()).parse().unwrap());
    request
}

/// One decoded record with its Kafka coordinates.
#[derive(Debug, Clone)]
pub struct PublishedRecord {
    pub key: String,
    pub partition: i32,
    pub record: EventBatchRecord,
}

/// Every record of a topic now, decoded. See [`hourglass_kafka::testing::read_topic`].
pub async fn read_topic(kafka: &KafkaConfig, topic: &str) -> Vec<PublishedRecord> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || hourglass_kafka::testing::read_topic(&kafka, &topic)).await.unwrap();
    records
        .into_iter()
        .map(|read| {
            let schema_version = read.header(record::SCHEMA_VERSION_HEADER);
            let decoded = record::decode(schema_version, &read.payload).expect("decodable record");
            PublishedRecord { key: read.key, partition: read.partition, record: decoded }
        })
        .collect()
}

/// A valid event of `now`.
pub fn event(id: &str) -> Event {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Event {
        event_id: id.to_owned(),
        event_type: "page_view".to_owned(),
        occurred_at: Some(Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
        user_id: Some(format!("user-{id}")),
        properties: [
            ("path".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue(format!("/p/{id}"))) }),
            ("amount".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(12.5)) }),
            ("first".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(true)) }),
        ]
        .into_iter()
        .collect(),
    }
}

/// An event that fails validation (empty event type).
pub fn invalid_event(id: &str) -> Event {
    Event { event_type: String::new(), ..event(id) }
}

/// Every event in the records, by id.
pub fn events_by_id(records: &[PublishedRecord]) -> HashMap<String, Event> {
    let mut events = HashMap::new();
    for published in records {
        for event in &published.record.events {
            let previous = events.insert(event.event_id.clone(), event.clone());
            assert!(previous.is_none(), "event {} published twice", event.event_id);
        }
    }
    events
}

/// Total outcome count of one kind over all records.
pub fn outcome_total(records: &[PublishedRecord], outcome: hourglass_proto::log::v1::Outcome) -> u32 {
    records
        .iter()
        .flat_map(|published| &published.record.outcomes)
        .filter(|count| count.outcome == outcome as i32)
        .map(|count| count.count)
        .sum()
}

/// The path of the project's Kafka script.
pub fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/servers/kafka.sh")
}

/// A broker of a test's own, started by the project's Kafka script, that the test may kill and restart
/// while the shared broker keeps serving the other tests. Stopped when dropped.
pub struct FaultBroker {
    name: String,
    port: u16,
    pub brokers: String,
}

impl FaultBroker {
    pub fn start(name: &str, port: u16) -> Self {
        let broker = Self { name: name.to_owned(), port, brokers: format!("127.0.0.1:{port}") };
        broker.script("start");
        broker
    }

    pub fn kill(&self) {
        self.script("kill");
    }

    pub fn restart(&self) {
        self.script("start");
    }

    fn script(&self, action: &str) {
        let status = std::process::Command::new("bash")
            .arg(kafka_script())
            .args([action, "--name", &self.name, "--port", &self.port.to_string()])
            .status()
            .expect("run e2e/servers/kafka.sh");
        assert!(status.success(), "kafka.sh {action} --name {} failed", self.name);
    }
}

impl Drop for FaultBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(kafka_script()).args(["stop", "--name", &self.name]).status();
    }
}
