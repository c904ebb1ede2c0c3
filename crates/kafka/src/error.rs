//! Errors while setting up Kafka clients.

/// Errors while creating Kafka clients or topics.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the configuration.
    #[error("invalid kafka client configuration: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// An extra option is not `KEY=VALUE`. Named by its position, not its text, which may hold a secret.
    #[error("invalid kafka option: {0} is not KEY=VALUE (its text is not shown: it may hold a secret)")]
    Option(String),
    /// Topics could not be created or inspected.
    #[error("failed to create kafka topic {topic}: {message}")]
    Topic {
        /// The topic's name.
        topic: String,
        /// What the broker said.
        message: String,
    },
}
