//! Support for tests against a real Kafka broker: unique topics per test, reading a whole topic, and a
//! consumer group's committed offsets.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use hourglass_core::event_log::ConsumedRecord;

use crate::KafkaConfig;
use crate::reader::read_to_end;

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

/// Every record of a topic now. See [`crate::reader::read_to_end`]; panics on errors (tests only).
/// Blocking: call it from `spawn_blocking` in async code.
pub fn read_topic(config: &KafkaConfig, topic: &str) -> Vec<ConsumedRecord> {
    read_to_end(config, topic, Duration::from_secs(30)).unwrap_or_else(|error| panic!("reading {topic}: {error}"))
}

/// Where a consumer group stands on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOffset {
    /// The partition.
    pub partition: i32,
    /// The offset the group committed (the next record it will read), `None` if it committed none.
    pub committed: Option<i64>,
    /// The partition's high watermark: the offset after its last record.
    pub end: i64,
}

/// The committed offset of `group` and the end of every partition of `topic`, by partition, as the
/// broker has them now. Asks without joining the group, so the group's members are not disturbed.
/// Blocking: call it from `spawn_blocking` in async code; panics on errors (tests only).
pub fn group_offsets(config: &KafkaConfig, group: &str, topic: &str) -> Vec<GroupOffset> {
    let consumer: BaseConsumer = config
        .consumer_config(group, "hourglass-test-offsets")
        .and_then(|client| client.create().map_err(crate::KafkaSetupError::Client))
        .unwrap_or_else(|error| panic!("cannot create a consumer of group {group}: {error}"));
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap_or_else(|error| panic!("{topic}: {error}"));
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().first().map(|found| found.partitions()).unwrap_or_default() {
        partitions.add_partition(topic, partition.id());
    }
    let committed =
        consumer.committed_offsets(partitions, timeout).unwrap_or_else(|error| panic!("{group} on {topic}: {error}"));
    let mut offsets: Vec<GroupOffset> = committed
        .elements()
        .iter()
        .map(|element| {
            let (_, end) = consumer
                .fetch_watermarks(topic, element.partition(), timeout)
                .unwrap_or_else(|error| panic!("{topic}/{}: {error}", element.partition()));
            let committed = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            GroupOffset { partition: element.partition(), committed, end }
        })
        .collect();
    offsets.sort_by_key(|offset| offset.partition);
    offsets
}
