//! Reading a topic by hand-assigned partitions, without joining a consumer group or committing anything:
//! a whole topic as it is now ([`read_to_end`]: `hourglass dlq`, tests), or a range of it as a stream
//! ([`TopicRange`]: `hourglass replay`). Both read each partition up to its high watermark as of the
//! start, so they end; records appended meanwhile are the consumer group's business.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::Stream;
use hourglass_core::event_log::{ConsumedRecord, EventLogError};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaConfig;
use crate::consumer::consumed_record;
use crate::context::HourglassKafkaContext;
use crate::error::classify;

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A group id for a reader: the consumer API requires one even when, as here, partitions are assigned by
/// hand and nothing is committed. Unique, so no group's members are disturbed.
fn reader_group(prefix: &str) -> String {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nonce}", std::process::id())
}

/// Reads a whole topic up to its high watermarks as of the call, in order per partition (partitions in
/// turn). Every acknowledged record is below them (acks=all advances the high watermark before
/// acknowledging), so this sees every record published before the call. Blocking.
pub fn read_to_end(config: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<ConsumedRecord>, ReadError> {
    let mut client = config.client_config("hourglass-reader")?;
    client.set("group.id", reader_group("hourglass-reader")).set("enable.auto.commit", "false");
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
        records.push(consumed_record(&message));
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}

/// Where a [`TopicRange`] starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeStart {
    /// The oldest record still in each partition.
    Beginning,
    /// The first record of each partition at or after this time (milliseconds since the Unix epoch).
    Time(i64),
    /// These offsets, as (partition, offset); partitions not listed are not read.
    Offsets(Vec<(i32, i64)>),
}

/// A range of a topic: each partition from a [`RangeStart`] to its high watermark as of
/// [`TopicRange::open`], read as a stream by [`TopicRange::into_records`].
pub struct TopicRange {
    consumer: Arc<StreamConsumer<HourglassKafkaContext>>,
    /// Per partition still to read: its end (exclusive).
    ends: HashMap<i32, i64>,
    total_records: u64,
}

impl TopicRange {
    /// Finds where the range starts and ends in every partition of `topic`, and assigns them.
    pub async fn open(config: &KafkaConfig, topic: &str, start: RangeStart) -> Result<Self, ReadError> {
        let consumer: StreamConsumer<HourglassKafkaContext> = config
            .consumer_config(&reader_group("hourglass-replay"), "hourglass-replay")?
            .create_with_context(HourglassKafkaContext)
            .map_err(crate::KafkaSetupError::Client)?;
        let consumer = Arc::new(consumer);
        let planner = Arc::clone(&consumer);
        let topic = topic.to_owned();
        // Metadata, watermark and offsets-for-times requests block until the broker answers.
        let (assignment, ranges) = tokio::task::spawn_blocking(move || plan(&planner, &topic, &start))
            .await
            .expect("planning a range does not panic")?;
        let total_records = ranges.values().map(|(from, to)| (to - from).max(0) as u64).sum();
        if total_records > 0 {
            consumer.assign(&assignment)?;
        }
        let ends = ranges.into_iter().map(|(partition, (_, end))| (partition, end)).collect();
        Ok(Self { consumer, ends, total_records })
    }

    /// How many offsets the range spans: its records, unless the topic is compacted or transactional
    /// (then some offsets hold no record).
    pub fn total_records(&self) -> u64 {
        self.total_records
    }

    /// The range's records, in order per partition; the stream ends once every partition is read to
    /// its end. A Kafka error ends the read: the caller may start a new range.
    pub fn into_records(self) -> impl Stream<Item = Result<ConsumedRecord, EventLogError>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut range = state?;
            loop {
                if range.ends.is_empty() {
                    return None;
                }
                let message = match range.consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => return Some((Err(classify(error)), None)),
                };
                let partition = message.partition();
                let Some(end) = range.ends.get(&partition).copied() else { continue };
                if message.offset() >= end {
                    continue; // written after the range was planned: the consumer group handles it
                }
                if message.offset() + 1 >= end {
                    range.ends.remove(&partition);
                }
                let record = consumed_record(&message);
                drop(message);
                return Some((Ok(record), Some(range)));
            }
        })
    }
}

/// Per partition: the first offset to read and the end (exclusive).
type Ranges = HashMap<i32, (i64, i64)>;

/// The partitions to read, from where, to where (the high watermark now).
fn plan(
    consumer: &StreamConsumer<HourglassKafkaContext>,
    topic: &str,
    start: &RangeStart,
) -> Result<(TopicPartitionList, Ranges), ReadError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(topic_metadata) = metadata.topics().first().filter(|found| found.error().is_none()) else {
        return Err(ReadError::NoSuchTopic(topic.to_owned()));
    };
    let partitions: Vec<i32> = topic_metadata.partitions().iter().map(|partition| partition.id()).collect();
    let starts: HashMap<i32, i64> = match start {
        RangeStart::Offsets(offsets) => offsets.iter().copied().collect(),
        RangeStart::Beginning => {
            let mut starts = HashMap::new();
            for partition in &partitions {
                starts.insert(*partition, consumer.fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?.0);
            }
            starts
        }
        RangeStart::Time(timestamp_ms) => {
            let mut query = TopicPartitionList::new();
            for partition in &partitions {
                query.add_partition_offset(topic, *partition, Offset::Offset(*timestamp_ms))?;
            }
            let found = consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
            found
                .elements()
                .iter()
                .filter_map(|element| match element.offset() {
                    Offset::Offset(offset) => Some((element.partition(), offset)),
                    _ => None, // no record at or after that time in this partition
                })
                .collect()
        }
    };
    let mut assignment = TopicPartitionList::new();
    let mut ranges = HashMap::new();
    for partition in partitions {
        let Some(from) = starts.get(&partition).copied() else { continue };
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let from = from.max(low);
        if from < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            ranges.insert(partition, (from, high));
        }
    }
    Ok((assignment, ranges))
}
