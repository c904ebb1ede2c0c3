//! Support for tests against a real Kafka broker: unique topics per test, and reading a whole topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaConfig;

/// The environment variable naming the broker the tests use (`scripts/test.sh` sets it).
pub const TEST_KAFKA_BROKERS_ENV: &str = "HOURGLASS_TEST_KAFKA_BROKERS";

/// The test broker, or a panic telling how to start it.
pub fn test_brokers() -> String {
    std::env::var(TEST_KAFKA_BROKERS_ENV).unwrap_or_else(|_| {
        panic!("{TEST_KAFKA_BROKERS_ENV} is not set: run the tests with scripts/test.sh, which starts Kafka")
    })
}

/// A configuration with topics of the test's own, few partitions so the shared broker stays light.
pub fn test_config(test_name: &str, brokers: &str) -> KafkaConfig {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let unique = format!(
        "{test_name}.{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
    );
    let mut config = KafkaConfig::for_brokers(brokers);
    config.events_topic = format!("hourglass.test.events.{unique}");
    config.dead_letter_topic = format!("hourglass.test.dlq.{unique}");
    config.topic_partitions = 3;
    config
}

/// One record as read back.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, as text.
    pub key: String,
    /// Headers, by name.
    pub headers: HashMap<String, Vec<u8>>,
    /// The value.
    pub payload: Vec<u8>,
}

/// Reads a whole topic up to its high watermarks as of now. Every acknowledged record is below them
/// (acks=all advances the high watermark before acknowledging), so this sees every record published
/// before the call. Blocking: call it from `spawn_blocking` in async code.
pub fn read_topic(config: &KafkaConfig, topic: &str) -> Vec<ReadRecord> {
    let mut client = config.client_config("hourglass-test-reader").expect("test kafka config");
    let group = format!(
        "reader-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
    );
    client.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().expect("test consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|partition| partition.id()).collect();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).expect("watermarks");
        if high > low {
            remaining.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return records;
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        assert!(std::time::Instant::now() < deadline, "timed out reading {topic}: still waiting for {remaining:?}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("kafka read");
        let partition = message.partition();
        if remaining.get(&partition).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&partition);
        }
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(ReadRecord {
            partition,
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    records
}
