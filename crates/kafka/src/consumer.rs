//! [`KafkaEventLogConsumer`]: the read side of the event log on Kafka, a member of a consumer group.
//!
//! It subscribes to a topic, so the group's members share its partitions and a member that leaves or
//! dies hands them to the others, which start at the group's committed offsets. Offsets are stored and
//! committed only when the caller says so (`enable.auto.commit` and `enable.auto.offset.store` are off),
//! so a record is never marked done behind the caller's back.

use std::sync::Arc;

use futures::FutureExt;
use hourglass_core::event_log::{CommitPosition, ConsumedRecord, EventLogConsumer, EventLogError, Topic};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::context::HourglassKafkaContext;
use crate::error::{KafkaSetupError, classify};

/// The Kafka implementation of [`EventLogConsumer`].
pub struct KafkaEventLogConsumer {
    consumer: Arc<StreamConsumer<HourglassKafkaContext>>,
    topic_name: String,
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
        let consumer: StreamConsumer<HourglassKafkaContext> = config
            .consumer_config(group_id, client_id)?
            .create_with_context(HourglassKafkaContext)
            .map_err(KafkaSetupError::Client)?;
        let topic_name = config.topic_name(topic).to_owned();
        consumer
            .subscribe(&[&topic_name])
            .map_err(|source| KafkaSetupError::Subscribe { topic: topic_name.clone(), source })?;
        tracing::info!(topic = %topic_name, group = group_id, "kafka consumer subscribed");
        Ok(Self { consumer: Arc::new(consumer), topic_name, last_commit: None })
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
