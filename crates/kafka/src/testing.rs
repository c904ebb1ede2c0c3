//! Support for tests against a real Kafka broker: unique topics per test, and reading a whole topic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::KafkaConfig;
pub use crate::reader::ReadRecord;
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
pub fn read_topic(config: &KafkaConfig, topic: &str) -> Vec<ReadRecord> {
    read_to_end(config, topic, Duration::from_secs(30)).unwrap_or_else(|error| panic!("reading {topic}: {error}"))
}
