//! Errors while setting up Kafka clients, and how librdkafka's errors become the event log's.

use hourglass_core::event_log::EventLogError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Errors while creating Kafka clients or topics.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the configuration.
    #[error("invalid kafka client configuration: {0}")]
    Client(#[source] KafkaError),
    /// An extra option is not `KEY=VALUE`. Named by its position, not its text, which may hold a secret.
    #[error("invalid kafka option: {0} is not KEY=VALUE (its text is not shown: it may hold a secret)")]
    Option(String),
    /// A consumer could not subscribe to its topic.
    #[error("failed to subscribe to kafka topic {topic}: {source}")]
    Subscribe {
        /// The topic's name.
        topic: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
    /// Topics could not be created or inspected.
    #[error("failed to create kafka topic {topic}: {message}")]
    Topic {
        /// The topic's name.
        topic: String,
        /// What the broker said.
        message: String,
    },
}

/// Sorts librdkafka's errors into what the caller can do about them.
pub(crate) fn classify(error: KafkaError) -> EventLogError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Fatal) => EventLogError::Fatal(Box::new(error)),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidMessage,
        ) => EventLogError::Rejected(Box::new(error)),
        _ => EventLogError::Unavailable(Box::new(error)),
    }
}
