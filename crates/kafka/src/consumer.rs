//! [`KafkaEventLogConsumer`]: the read side of the event log on Kafka, a member of a consumer group.
//!
//! It subscribes to a topic, so the group's members share its partitions and a member that leaves or
//! dies hands them to the others, which start at the group's committed offsets. Offsets are stored and
//! committed only when the caller says so (`enable.auto.commit` and `enable.auto.offset.store` are off),
//! so a record is never marked done behind the caller's back.

use std::sync::Arc;

use futures::FutureExt;
use hourglass_core::event_log::{CommitPosition, ConsumedRecord, EventLogConsumer, EventLogError, PartitionLag, Topic};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::context::HourglassKafkaContext;
use crate::error::{KafkaSetupError, classify};

/// How often librdkafka reports its statistics, which carry each partition's consumer lag, unless
/// `--kafka-option statistics.interval.ms=…` says otherwise. Parsing them costs well under a
/// millisecond, so every few seconds is cheap, and a lag alert looks at minutes.
const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

/// The Kafka implementation of [`EventLogConsumer`].
pub struct KafkaEventLogConsumer {
    consumer: Arc<StreamConsumer<LagReportingContext>>,
    topic_name: String,
    /// Each assigned partition's lag, from the latest statistics.
    lag: Arc<Mutex<Vec<PartitionLag>>>,
    /// The positions of the last commit. Commits are asynchronous (a commit per interval must not hold
    /// up the loop for a broker round trip) and librdkafka does not report their outcome to the caller,
    /// so [`EventLogConsumer::close`] commits these again and waits for the broker's answer.
    last_commit: Option<TopicPartitionList>,
}

impl KafkaEventLogConsumer {
    /// Joins `group_id` and subscribes to `topic`. Does not wait for the brokers: librdkafka connects and
    /// joins in the background, and [`EventLogConsumer::next_records`] waits until records come.
    pub fn subscribe(
        config: &KafkaConfig,
        topic: Topic,
        group_id: &str,
        client_id: &str,
    ) -> Result<Self, KafkaSetupError> {
        let topic_name = config.topic_name(topic).to_owned();
        let mut client_config = config.consumer_config(group_id, client_id)?;
        if client_config.get("statistics.interval.ms").is_none() {
            client_config.set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
        }
        let lag = Arc::new(Mutex::new(Vec::new()));
        let context = LagReportingContext { topic_name: topic_name.clone(), lag: Arc::clone(&lag) };
        let consumer: StreamConsumer<LagReportingContext> =
            client_config.create_with_context(context).map_err(KafkaSetupError::Client)?;
        consumer
            .subscribe(&[&topic_name])
            .map_err(|source| KafkaSetupError::Subscribe { topic: topic_name.clone(), source })?;
        tracing::info!(topic = %topic_name, group = group_id, "kafka consumer subscribed");
        Ok(Self { consumer: Arc::new(consumer), topic_name, lag, last_commit: None })
    }
}

impl EventLogConsumer for KafkaEventLogConsumer {
    async fn next_records(&mut self, max_records: usize) -> Result<Vec<ConsumedRecord>, EventLogError> {
        // `recv` is cancel-safe: a message is taken from librdkafka's queue only in the poll that returns
        // it, and the rest of this function does not wait.
        let first = loop {
            match self.consumer.recv().await {
                Ok(message) => break consumed_record(&message),
                // A broker that is down, a partition without a leader: librdkafka recovers on its own.
                Err(error) => tracing::warn!(%error, "kafka consumer error (retrying)"),
            }
        };
        let mut records = vec![first];
        while records.len() < max_records {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => records.push(consumed_record(&message)),
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error (retrying)");
                    break;
                }
                None => break,
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, positions: &[CommitPosition]) -> Result<(), EventLogError> {
        let mut offsets = TopicPartitionList::new();
        for position in positions {
            offsets
                .add_partition_offset(&self.topic_name, position.partition, Offset::Offset(position.next_offset))
                .map_err(classify)?;
        }
        self.consumer.commit(&offsets, CommitMode::Async).map_err(classify)?;
        self.last_commit = Some(offsets);
        Ok(())
    }

    fn lag(&self) -> Vec<PartitionLag> {
        self.lag.lock().clone()
    }

    async fn close(self) -> Result<(), EventLogError> {
        let Self { consumer, last_commit, .. } = self;
        // A synchronous commit and leaving the group both wait for the broker: not on a runtime thread.
        tokio::task::spawn_blocking(move || {
            let committed = match &last_commit {
                Some(offsets) => consumer.commit(offsets, CommitMode::Sync).map_err(classify),
                None => Ok(()),
            };
            consumer.unsubscribe();
            // Dropping the last handle closes the consumer: it leaves the group, so the partitions go to
            // another member now rather than after the session timeout.
            drop(consumer);
            committed
        })
        .await
        .map_err(|join_error| EventLogError::Unavailable(Box::new(join_error)))?
    }
}

/// The consumer's client context: Hourglass's logging ([`HourglassKafkaContext`]), and each partition's
/// lag taken from librdkafka's statistics.
struct LagReportingContext {
    topic_name: String,
    lag: Arc<Mutex<Vec<PartitionLag>>>,
}

impl ClientContext for LagReportingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        HourglassKafkaContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        HourglassKafkaContext.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        *self.lag.lock() = partition_lags(&statistics, &self.topic_name);
    }
}

impl ConsumerContext for LagReportingContext {}

/// The lag of each partition of `topic` the statistics know it for. librdkafka reports -1 for a
/// partition it does not fetch (not assigned to this member, or no committed offset and no fetch yet)
/// and lists an internal partition -1: both are left out.
fn partition_lags(statistics: &Statistics, topic: &str) -> Vec<PartitionLag> {
    let Some(topic) = statistics.topics.get(topic) else { return Vec::new() };
    let mut lags: Vec<PartitionLag> = topic
        .partitions
        .values()
        .filter(|partition| partition.partition >= 0 && partition.consumer_lag >= 0)
        .map(|partition| PartitionLag { partition: partition.partition, records: partition.consumer_lag })
        .collect();
    lags.sort_unstable();
    lags
}

/// A Kafka message as the event log's [`ConsumedRecord`] (copied out of librdkafka's buffer, which the
/// next poll may reuse).
pub(crate) fn consumed_record<M: Message>(message: &M) -> ConsumedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers.iter().map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec())).collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
        source: format!("{}/{}/{}", message.topic(), message.partition(), message.offset()),
    }
}
