//! Topic administration.

use std::time::Duration;

use hourglass_core::event_log::Topic;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::context::HourglassKafkaContext;
use crate::error::KafkaSetupError;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the given topics if they do not exist, with the configured partitions and replication
/// factor. Existing topics are left as they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[Topic]) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<HourglassKafkaContext> = config
        .client_config("hourglass-admin")?
        .create_with_context(HourglassKafkaContext)
        .map_err(KafkaSetupError::Client)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                config.topic_name(*topic),
                config.topic_partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics(&new_topics, &options).await.map_err(|error| KafkaSetupError::Topic {
        topic: new_topics.iter().map(|topic| topic.name).collect::<Vec<_>>().join(","),
        message: error.to_string(),
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic { topic, message: code.to_string() });
            }
        }
    }
    Ok(())
}

/// Deletes topics; missing ones are ignored. For benchmarks and tests that create their own topics.
pub async fn delete_topics(config: &KafkaConfig, names: &[&str]) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<HourglassKafkaContext> = config
        .client_config("hourglass-admin")?
        .create_with_context(HourglassKafkaContext)
        .map_err(KafkaSetupError::Client)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .delete_topics(names, &options)
        .await
        .map_err(|error| KafkaSetupError::Topic { topic: names.join(","), message: error.to_string() })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::Topic { topic, message: code.to_string() }),
        }
    }
    Ok(())
}
