//! Kafka client configuration, from flags and `HOURGLASS_KAFKA_*` environment variables.

use std::time::Duration;

use hourglass_core::event_log::Topic;
use rdkafka::ClientConfig;

use crate::error::KafkaSetupError;

/// How Hourglass talks to Kafka.
#[derive(Clone, clap::Args)]
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

    /// Extra librdkafka properties, KEY=VALUE pairs separated by ';' (security.protocol, sasl.*, ssl.*):
    /// a value may hold commas, newlines (a PEM) and anything else; write a ';' inside a value as '\;' and
    /// a '\' before a ';' as '\\'. Example:
    /// `security.protocol=SASL_SSL;sasl.mechanism=PLAIN;sasl.username=app;sasl.password=…`. Applied
    /// after the settings above, then the `--kafka-option` flags; `acks` and `enable.idempotence` cannot
    /// be weakened. Prefer the environment variable for secrets: flags show in the process list. Its
    /// value is never shown in --help.
    #[arg(
        long = "kafka-options",
        env = "HOURGLASS_KAFKA_OPTIONS",
        value_name = "KEY=VALUE;...",
        hide_env_values = true
    )]
    pub options_list: Option<String>,

    /// One extra librdkafka property, KEY=VALUE, taken as it is (commas, semicolons and all);
    /// repeatable. Applied last of all, so it overrides `--kafka-options` and the settings above, except
    /// `acks` and `enable.idempotence`, which cannot be weakened.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
}

/// Splits a `--kafka-options` list into its KEY=VALUE pairs: at each ';' not escaped as '\;', with
/// '\\' standing for one '\' and any other '\' kept as it is. Blank pairs (a trailing ';', a line
/// break after a ';') are skipped.
fn split_options_list(list: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    let mut pair = String::new();
    let mut characters = list.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => match characters.clone().next() {
                Some(escaped @ (';' | '\\')) => {
                    pair.push(escaped);
                    characters.next();
                }
                _ => pair.push('\\'),
            },
            ';' => pairs.push(std::mem::take(&mut pair)),
            other => pair.push(other),
        }
    }
    pairs.push(pair);
    pairs.retain(|pair| !pair.trim().is_empty());
    pairs
}

/// librdkafka options may hold credentials (`sasl.password`, `ssl.key.password`, PEMs): their values are
/// hidden, their names shown, so a configuration logged with `?` leaks nothing.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide_value = |option: &str| match option.split_once('=') {
            Some((name, _)) => format!("{name}={}", hourglass_config::HIDDEN),
            None => hourglass_config::HIDDEN.to_owned(),
        };
        formatter
            .debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("events_topic", &self.events_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("linger_ms", &self.linger_ms)
            .field("compression", &self.compression)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("enqueue_timeout_ms", &self.enqueue_timeout_ms)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("consumer_prefetch_kbytes", &self.consumer_prefetch_kbytes)
            .field("options_list", &self.options_list.as_ref().map(|_| hourglass_config::HIDDEN))
            .field("options", &self.options.iter().map(|option| hide_value(option)).collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConfig {
    /// A configuration for the given brokers with every other setting at its default.
    pub fn for_brokers(brokers: impl Into<String>) -> Self {
        let mut config: Self = hourglass_config::defaults();
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

    /// The extra options as (key, value), in the order they apply: `--kafka-options` (or
    /// `HOURGLASS_KAFKA_OPTIONS`), then each `--kafka-option`. Keys and values are trimmed.
    pub fn extra_options(&self) -> Result<Vec<(String, String)>, KafkaSetupError> {
        let from_list = self.options_list.as_deref().map(split_options_list).unwrap_or_default();
        let listed =
            from_list.iter().enumerate().map(|(index, pair)| (format!("pair {} of --kafka-options", index + 1), pair));
        let flagged =
            self.options.iter().enumerate().map(|(index, pair)| (format!("--kafka-option number {}", index + 1), pair));
        listed
            .chain(flagged)
            .map(|(position, pair)| {
                let (key, value) = pair.split_once('=').ok_or(KafkaSetupError::Option(position))?;
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            })
            .collect()
    }

    /// The settings every Hourglass Kafka client shares: brokers and the extra options.
    pub fn client_config(&self, client_id: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", client_id);
        for (key, value) in self.extra_options()? {
            config.set(key, value);
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
    fn debug_hides_option_values() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.options_list = Some("sasl.mechanism=PLAIN;sasl.password=s3cret-list".into());
        config.options = vec!["sasl.password=s3cret-flag".into()];
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sasl.password=<hidden>") && shown.contains("b:1"), "{shown}");
    }

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
    fn malformed_options_are_refused_without_showing_them() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.options = vec!["a=1".into(), "sasl.password:hunter2".into()];
        let error = config.producer_config("test").unwrap_err();
        assert!(matches!(error, KafkaSetupError::Option(_)));
        let message = error.to_string();
        assert!(message.contains("--kafka-option number 2") && !message.contains("hunter2"), "{message}");
    }

    #[test]
    fn option_values_keep_their_commas_and_escaped_semicolons() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.options_list = Some(
            "security.protocol=SASL_SSL;\n\
             debug=broker,topic,msg;\n\
             sasl.jaas.config=PlainLoginModule required username=\"a,b\" password=\"x\\;y\"\\;;\n\
             ssl.ca.location=C:\\certs\\\\;\n\
             ssl.ca.pem=-----BEGIN CERTIFICATE-----\nMIIB,AA==\n-----END CERTIFICATE-----;"
                .into(),
        );
        config.options = vec!["ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384;x".into()];
        let options = config.extra_options().unwrap();
        let pairs: Vec<(&str, &str)> = options.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("security.protocol", "SASL_SSL"),
                ("debug", "broker,topic,msg"),
                ("sasl.jaas.config", "PlainLoginModule required username=\"a,b\" password=\"x;y\";"),
                ("ssl.ca.location", "C:\\certs\\"),
                ("ssl.ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB,AA==\n-----END CERTIFICATE-----"),
                // A flag is taken whole: its ';' is part of the value.
                ("ssl.cipher.suites", "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384;x"),
            ]
        );
        let consumer = config.consumer_config("group", "test").unwrap();
        assert_eq!(consumer.get("debug"), Some("broker,topic,msg"));
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        kafka: KafkaConfig,
    }

    #[test]
    fn command_line_option_values_keep_their_commas() {
        use clap::Parser;
        let flags = Flags::try_parse_from([
            "test",
            "--kafka-options",
            "socket.timeout.ms=5000;client.rack=a\\;b",
            "--kafka-option",
            "debug=broker,topic,msg",
            "--kafka-option",
            "socket.timeout.ms=6000",
        ])
        .unwrap();
        let consumer = flags.kafka.consumer_config("group", "test").unwrap();
        assert_eq!(consumer.get("debug"), Some("broker,topic,msg"));
        assert_eq!(consumer.get("client.rack"), Some("a;b"));
        assert_eq!(consumer.get("socket.timeout.ms"), Some("6000"), "a flag overrides the list");
    }

    #[test]
    fn topics_map_to_configured_names() {
        let mut config = KafkaConfig::for_brokers("b:1");
        config.events_topic = "e".into();
        assert_eq!(config.topic_name(Topic::Events), "e");
        assert_eq!(config.topic_name(Topic::DeadLetter), "hourglass.dead-letter");
    }
}
