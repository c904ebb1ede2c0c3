//! [`KafkaEventLog`]: appends records with an idempotent, `acks=all` producer.
//!
//! An append resolves only when librdkafka reports the delivery: `Ok` once all in-sync replicas have the
//! record, an error once `message.timeout.ms` has passed without that. The producer's local queue is
//! bounded (`queue.buffering.max.kbytes`); when it is full an append waits for room, with backoff, up to
//! the enqueue timeout. Callers see that wait as backpressure, never as an unbounded buffer.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hourglass_core::event_log::{Appended, EventLog, EventLogError, LogRecord, Topic};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::time::Instant;

use crate::admin;
use crate::config::KafkaConfig;
use crate::context::HourglassKafkaContext;
use crate::error::{KafkaSetupError, classify};

const READINESS_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ENQUEUE_BACKOFF: Duration = Duration::from_millis(50);

/// The Kafka implementation of [`EventLog`].
#[derive(Clone)]
pub struct KafkaEventLog {
    producer: FutureProducer<HourglassKafkaContext>,
    config: Arc<KafkaConfig>,
}

impl KafkaEventLog {
    /// Creates the producer and, if configured, the topics. Does not wait for the brokers: librdkafka
    /// connects in the background and [`EventLog::check_ready`] tells when they answer.
    pub async fn connect(config: KafkaConfig, client_id: &str) -> Result<Self, KafkaSetupError> {
        let producer: FutureProducer<HourglassKafkaContext> = config
            .producer_config(client_id)?
            .create_with_context(HourglassKafkaContext)
            .map_err(KafkaSetupError::Client)?;
        if config.create_topics {
            admin::ensure_topics(&config, &[Topic::Events, Topic::DeadLetter]).await?;
        }
        Ok(Self { producer, config: Arc::new(config) })
    }

    /// The configuration this log was created with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

impl EventLog for KafkaEventLog {
    fn append(&self, topic: Topic, record: LogRecord) -> BoxFuture<'static, Result<Appended, EventLogError>> {
        let producer = self.producer.clone();
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let topic_name = config.topic_name(topic);
            let headers = record
                .headers
                .iter()
                .fold(OwnedHeaders::new_with_capacity(record.headers.len()), |headers, (key, value)| {
                    headers.insert(Header { key, value: Some(value.as_slice()) })
                });
            let enqueue_deadline = Instant::now() + Duration::from_millis(config.enqueue_timeout_ms);
            let mut backoff = Duration::from_millis(1);
            let delivery = loop {
                let kafka_record = FutureRecord::to(topic_name)
                    .key(record.key.as_bytes())
                    .payload(record.payload.as_slice())
                    .headers(headers.clone());
                match producer.send_result(kafka_record) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        if Instant::now() + backoff > enqueue_deadline {
                            return Err(EventLogError::Unavailable(
                                format!(
                                    "producer queue still full after {} ms: kafka is not keeping up",
                                    config.enqueue_timeout_ms
                                )
                                .into(),
                            ));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_ENQUEUE_BACKOFF);
                    }
                    Err((error, _)) => return Err(classify(error)),
                }
            };
            match delivery.await {
                Ok(Ok(delivered)) => Ok(Appended { partition: delivered.partition, offset: delivered.offset }),
                Ok(Err((error, _message))) => Err(classify(error)),
                Err(_canceled) => Err(EventLogError::Unavailable("producer shut down before delivery".into())),
            }
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), EventLogError>> {
        let producer = self.producer.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|join_error| EventLogError::Unavailable(Box::new(join_error)))?
                .map_err(classify)
        })
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), EventLogError>> {
        let producer = self.producer.clone();
        let events_topic = self.config.events_topic.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                if let Some((code, reason)) = producer.client().fatal_error() {
                    return Err(EventLogError::Fatal(format!("{code:?}: {reason}").into()));
                }
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&events_topic), READINESS_TIMEOUT)
                    .map_err(|error| EventLogError::Unavailable(Box::new(error)))?;
                match metadata.topics().first() {
                    Some(topic) if topic.error().is_none() && !topic.partitions().is_empty() => Ok(()),
                    Some(topic) => Err(EventLogError::Unavailable(
                        format!("topic {events_topic} not usable: {:?}", topic.error()).into(),
                    )),
                    None => Err(EventLogError::Unavailable(format!("topic {events_topic} not found").into())),
                }
            })
            .await
            .map_err(|join_error| EventLogError::Unavailable(Box::new(join_error)))?
        })
    }
}
