//! Replay: re-consume a range of a topic into the raw store, after an ingestion bug or a lost store.
//!
//! It reads each partition from a start (a time, explicit offsets, or the beginning) up to its end as of
//! the start of the replay, through the same [`RecordHandler`] as the ingestor: same idempotent writes,
//! same dead-lettering, same dirty marks (so the aggregator recomputes the replayed hours). It assigns
//! partitions by hand and commits nothing, so the ingestor's consumer group is not disturbed and the two
//! can run at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hourglass_core::event_log::EventLog;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_kafka::KafkaConfig;
use hourglass_kafka::context::HourglassKafkaContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::IngestorConfig;
use crate::pipeline::{Handled, RecordHandler};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a replay starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayStart {
    /// The oldest record still in each partition.
    Beginning,
    /// The first record of each partition at or after this time (milliseconds since the Unix epoch).
    Time(i64),
    /// These offsets; partitions not listed are not replayed.
    Offsets(Vec<(i32, i64)>),
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Kafka could not be read.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka configuration is invalid.
    #[error(transparent)]
    Setup(#[from] hourglass_kafka::KafkaSetupError),
    /// The topic does not exist.
    #[error("topic {0} not found")]
    NoSuchTopic(String),
    /// Dirty hours could not be marked (the replayed events are stored; run the replay again).
    #[error("failed to mark replayed hours dirty: {0}")]
    Marks(#[from] hourglass_core::job_queue::JobQueueError),
    /// Interrupted before the end.
    #[error("replay interrupted after {done} of {total} records")]
    Interrupted {
        /// Records replayed.
        done: u64,
        /// Records in the range.
        total: u64,
    },
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Records written to the raw store.
    pub stored: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Customer-hours marked dirty.
    pub hours_marked: u64,
}

/// Replays `topic` from `start` to its current end. `on_plan` is told how many records the range holds,
/// `on_progress` how many were handled so far.
#[allow(clippy::too_many_arguments)]
pub async fn replay<S: RawStore, Q: JobQueue, L: EventLog>(
    config: IngestorConfig,
    kafka: &KafkaConfig,
    topic: &str,
    start: ReplayStart,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    dead_letter_log: Arc<L>,
    stop: CancellationToken,
    on_plan: impl FnOnce(u64),
    mut on_progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let consumer: StreamConsumer<HourglassKafkaContext> = kafka
        .consumer_config(&format!("hourglass-replay-{nonce}"), "hourglass-replay")?
        .create_with_context(HourglassKafkaContext)
        .map_err(hourglass_kafka::KafkaSetupError::Client)?;
    let (assignment, mut remaining) = plan(&consumer, topic, &start)?;
    let total: u64 = remaining.values().map(|(from, to)| (to - from).max(0) as u64).sum();
    on_plan(total);
    let mut summary = ReplaySummary::default();
    if total == 0 {
        return Ok(summary);
    }
    consumer.assign(&assignment)?;

    let handler = RecordHandler::from_config(raw_store, dead_letter_log, &config);
    let group_size = config.max_records_per_write.max(1);
    let mut hours: HashSet<CustomerHour> = HashSet::new();
    let mut done = 0u64;
    let mut messages = consumer.stream();
    while !remaining.is_empty() {
        let mut group = Vec::with_capacity(group_size);
        while group.len() < group_size && !remaining.is_empty() {
            let next = if group.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return Err(ReplayError::Interrupted { done, total }),
                    next = messages.next() => next,
                }
            } else {
                match futures::FutureExt::now_or_never(messages.next()) {
                    Some(next) => next,
                    None => break,
                }
            };
            let Some(message) = next else { break };
            let message = message?;
            let partition = message.partition();
            let Some((_, end)) = remaining.get(&partition).copied() else { continue };
            if message.offset() >= end {
                continue; // written after the replay started: the ingestor handles it
            }
            if message.offset() + 1 >= end {
                remaining.remove(&partition);
            }
            group.push(message.detach());
        }
        if group.is_empty() {
            continue;
        }
        for outcome in handler.handle(&group, &stop).await {
            match outcome {
                Handled::Stored { hours: touched } => {
                    summary.stored += 1;
                    hours.extend(touched);
                }
                Handled::DeadLettered => summary.dead_lettered += 1,
                Handled::Abandoned => return Err(ReplayError::Interrupted { done, total }),
            }
        }
        done += group.len() as u64;
        on_progress(done);
    }
    let hours: Vec<CustomerHour> = hours.into_iter().collect();
    job_queue.mark_dirty(&hours).await?;
    summary.hours_marked = hours.len() as u64;
    Ok(summary)
}

/// Per partition: the first offset to replay and the end (exclusive).
type Ranges = HashMap<i32, (i64, i64)>;

/// The partitions to read, from where, to where (the high watermark now).
fn plan(
    consumer: &StreamConsumer<HourglassKafkaContext>,
    topic: &str,
    start: &ReplayStart,
) -> Result<(TopicPartitionList, Ranges), ReplayError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(topic_metadata) = metadata.topics().first().filter(|found| found.error().is_none()) else {
        return Err(ReplayError::NoSuchTopic(topic.to_owned()));
    };
    let partitions: Vec<i32> = topic_metadata.partitions().iter().map(|partition| partition.id()).collect();
    let starts: HashMap<i32, i64> = match start {
        ReplayStart::Offsets(offsets) => offsets.iter().copied().collect(),
        ReplayStart::Beginning => {
            let mut starts = HashMap::new();
            for partition in &partitions {
                starts.insert(*partition, consumer.fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?.0);
            }
            starts
        }
        ReplayStart::Time(timestamp_ms) => {
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
    let mut remaining = HashMap::new();
    for partition in partitions {
        let Some(from) = starts.get(&partition).copied() else { continue };
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let from = from.max(low);
        if from < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
            remaining.insert(partition, (from, high));
        }
    }
    Ok((assignment, remaining))
}
