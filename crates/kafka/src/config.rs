//! Kafka client configuration, from flags and `HOURGLASS_KAFKA_*` environment variables.

use std::time::Duration;

use hourglass_core::event_log::Topic;
use rdkafka::ClientConfig;

use crate::error::KafkaSetupError;

/// How Hourglass talks to Kafka.
#[derive(Clone, Debug, clap::Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated. The default is the broker `e2e/servers/kafka.sh` starts.
    #[arg(long = "kafka-brokers", env = "HOURGLASS_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,

    /// Name of the topic carrying event batches (the logical `events` topic).
    #[arg(long = "kafka-events-topic", env = "HOURGLASS_KAFKA_EVENTS_TOPIC", default_value = "hourglass.events")]
    pub events_topic: String,

    /// Name of the dead-letter topic.
    #[arg(
        long = "kafka-dead-letter-topic",
        env = "HOURGLASS_KAFKA_DEAD_LETTER_TOPIC",
        default_value = "hourglass.dead-letter"
    )]
    pub dead_letter_topic: String,

    /// Create missing topics at start-up with the partitions and replication factor below.
    /// Production clusters that manage topics elsewhere set this to false.
    #[arg(
        long = "kafka-create-topics",
        env = "HOURGLASS_KAFKA_CREATE_TOPICS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub create_topics: bool,

    /// Partitions of topics Hourglass creates: the most ingestor replicas that can share the work
    /// (docs/capacity.md does the math).
    #[arg(long = "kafka-topic-partitions", env = "HOURGLASS_KAFKA_TOPIC_PARTITIONS", default_value_t = 12)]
    pub topic_partitions: i32,

    /// Replication factor of topics Hourglass creates: 1 for a single dev broker, 3 in production
    /// (with min.insync.replicas=2 on the broker, so acks=all survives one broker loss).
    #[arg(long = "kafka-replication-factor", env = "HOURGLASS_KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// How long the producer waits to fill a batch before sending it (librdkafka `linger.ms`).
    #[arg(long = "kafka-linger-ms", env = "HOURGLASS_KAFKA_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u64,

    /// Compression codec: none, gzip, snappy, lz4 or zstd.
    #[arg(long = "kafka-compression", env = "HOURGLASS_KAFKA_COMPRESSION", default_value = "lz4")]
    pub compression: String,

    /// How long a record may wait for Kafka's acknowledgement before its append fails and the client is
    /// told to retry (librdkafka `message.timeout.ms`).
    #[arg(long = "kafka-delivery-timeout-ms", env = "HOURGLASS_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub delivery_timeout_ms: u64,

    /// How long an append waits for room in the producer's local queue before failing. While it waits,
    /// the collector stops reading from its clients: this is the backpressure when Kafka is slow.
    #[arg(long = "kafka-enqueue-timeout-ms", env = "HOURGLASS_KAFKA_ENQUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub enqueue_timeout_ms: u64,

    /// The most memory the producer's local queue may hold, in KiB (librdkafka
    /// `queue.buffering.max.kbytes`). Bounds the collector's memory when Kafka is slow.
    #[arg(long = "kafka-queue-max-kbytes", env = "HOURGLASS_KAFKA_QUEUE_MAX_KBYTES", default_value_t = 131_072)]
    pub queue_max_kbytes: u64,

    /// Most data a consumer prefetches, in KiB (librdkafka `queued.max.messages.kbytes`).
    #[arg(
        long = "kafka-consumer-prefetch-kbytes",
        env = "HOURGLASS_KAFKA_CONSUMER_PREFETCH_KBYTES",
        default_value_t = 8_192
    )]
    pub consumer_prefetch_kbytes: u64,

    /// Extra librdkafka properties as KEY=VALUE (security.protocol, sasl.*, ssl.*), repeatable; applied
    /// last, so they override the settings above. `acks` and `enable.idempotence` cannot be weakened.
    #[arg(long = "kafka-option", env = "HOURGLASS_KAFKA_OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,
}

impl KafkaConfig {
    /// A configuration for the given brokers with every other setting at its default.
    pub fn for_brokers(brokers: impl Into<String>) -> Self {
        let mut config: Self = hourglass_core::config::defaults();
        config.brokers = brokers.into();
        config
    }

    /// The name of a logical topic.
    pub fn topic_name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Events => &self.events_topic,
            Topic::DeadLetter => &self.dead_letter_topic,
        }
    }

    /// The delivery timeout as a duration.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// The settings every Hourglass Kafka client shares: brokers and the extra options.
    pub fn client_config(&self, client_id: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        for option in &self.options {
            let (key, value) = option.split_once('=').ok_or_else(|| KafkaSetupError::Option(option.clone()))?;
            config.set(key.trim(), value.trim());
        }
        Ok(config)
    }

    /// The producer's settings: durable (`acks=all`, idempotent) and batched.
    pub fn producer_config(&self, client_id: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = self.client_config(client_id)?;
        config
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", &self.compression)
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.kbytes", self.queue_max_kbytes.to_string())
            // Set after the extra options: durability is not an option.
            .set("enable.idempotence", "true")
            .set("acks", "all");
        Ok(config)
    }
}

impl KafkaConfig {
    /// A consumer's settings: a member of `group_id` that stores and commits offsets only when told to,
    /// and starts from the earliest offset when its group has none.
    pub fn consumer_config(&self, group_id: &str, client_id: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = self.client_config(client_id)?;
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // librdkafka prefetches up to 64 MiB by default; the consumer's own bound on records in
            // flight is what should hold memory, so keep the prefetch modest.
            .set("queued.max.messages.kbytes", self.consumer_prefetch_kbytes.to_string());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_cannot_be_overridden() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.options = vec!["acks=1".into(), "enable.idempotence=false".into(), "socket.timeout.ms = 5000".into()];
        let producer = config.producer_config("test").unwrap();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("socket.timeout.ms"), Some("5000"));
        assert_eq!(producer.get("bootstrap.servers"), Some("b:1"));
    }

    #[test]
    fn malformed_options_are_refused() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.options = vec!["novalue".into()];
        assert!(matches!(config.producer_config("test"), Err(KafkaSetupError::Option(_))));
    }

    #[test]
    fn topics_map_to_configured_names() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.events_topic = "e".into();
        assert_eq!(config.topic_name(Topic::Events), "e");
        assert_eq!(config.topic_name(Topic::DeadLetter), "hourglass.dead-letter");
    }
}
