//! Errors that stop the ingestor.

/// Why the ingestor could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum IngestorError {
    /// Kafka clients could not be created.
    #[error("kafka setup failed: {0}")]
    Kafka(#[from] hourglass_kafka::KafkaSetupError),
    /// The consumer could not subscribe or commit at shutdown.
    #[error("kafka consumer failed: {0}")]
    Consumer(#[from] rdkafka::error::KafkaError),
}
