//! Reading a whole topic as it is now: for tools (`hourglass dlq`) and tests.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaConfig;

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

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A Kafka request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The configuration is invalid.
    #[error(transparent)]
    Setup(#[from] crate::KafkaSetupError),
    /// The topic does not exist.
    #[error("topic {0} not found")]
    NoSuchTopic(String),
    /// Reading took longer than allowed.
    #[error("timed out reading {topic}: partitions {remaining:?} not read to their end")]
    Timeout {
        /// The topic.
        topic: String,
        /// Partitions not read to the end, with their end offsets.
        remaining: HashMap<i32, i64>,
    },
}

/// Reads a whole topic up to its high watermarks as of the call, without joining a consumer group or
/// committing anything. Every acknowledged record is below them (acks=all advances the high watermark
/// before acknowledging), so this sees every record published before the call. Blocking.
pub fn read_to_end(config: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<ReadRecord>, ReadError> {
    let mut client = config.client_config("hourglass-reader")?;
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    // A group id is required by the consumer API even when, as here, partitions are assigned by hand.
    client
        .set("group.id", format!("hourglass-reader-{}-{nonce}", std::process::id()))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().map_err(crate::KafkaSetupError::Client)?;
    let request_timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), request_timeout)?;
    let Some(topic_metadata) = metadata.topics().first().filter(|found| found.error().is_none()) else {
        return Err(ReadError::NoSuchTopic(topic.to_owned()));
    };
    let partitions: Vec<i32> = topic_metadata.partitions().iter().map(|partition| partition.id()).collect();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let deadline = std::time::Instant::now() + timeout;
    for partition in partitions {
        // Right after a broker restart a partition briefly has no leader (NotLeaderForPartition,
        // LeaderNotAvailable); ask again until the timeout rather than fail the whole read.
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, partition, request_timeout) {
                Ok(watermarks) => break watermarks,
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%error, partition, "no watermarks yet; asking again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => return Err(error.into()),
            }
        };
        if high > low {
            remaining.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(ReadError::Timeout { topic: topic.to_owned(), remaining });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
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
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}
