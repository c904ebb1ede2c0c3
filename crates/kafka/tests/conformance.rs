//! The [`EventLog`](hourglass_core::event_log::EventLog) and
//! [`EventLogConsumer`](hourglass_core::event_log::EventLogConsumer) conformance suites against a real
//! Kafka broker (tier b), on topics of the test's own.

use std::collections::BTreeMap;

use futures::FutureExt;
use hourglass_conformance::event_log::{self, ReadBack};
use hourglass_conformance::event_log_consumer;
use hourglass_core::event_log::Topic;
use hourglass_kafka::{KafkaEventLog, KafkaEventLogConsumer, admin, testing};

#[tokio::test]
async fn kafka_event_log_conforms() {
    let config = testing::test_config("event_log_conformance", &testing::test_brokers());
    let log = KafkaEventLog::connect(config.clone(), "conformance").await.expect("connect to the test broker");
    let read_config = config.clone();
    event_log::suite(&log, move |topic: Topic| {
        let config = read_config.clone();
        async move {
            let topic_name = config.topic_name(topic).to_owned();
            let records = tokio::task::spawn_blocking(move || testing::read_topic(&config, &topic_name))
                .await
                .expect("the reading thread does not panic");
            records
                .into_iter()
                .map(|record| ReadBack {
                    partition: record.partition,
                    offset: record.offset,
                    key: record.key,
                    payload: record.payload,
                    headers: record.headers.into_iter().collect::<BTreeMap<_, _>>(),
                })
                .collect()
        }
        .boxed()
    })
    .await;
    let _ = admin::delete_topics(&config, &[config.events_topic.as_str(), config.dead_letter_topic.as_str()]).await;
}

#[tokio::test]
async fn kafka_event_log_consumer_conforms() {
    let mut config = testing::test_config("consumer_conformance", &testing::test_brokers());
    // The lag comes with librdkafka's statistics: report them often so the suite's lag checks wait
    // less than the 5 s default.
    config.options.push("statistics.interval.ms=500".to_owned());
    let log = KafkaEventLog::connect(config.clone(), "conformance").await.expect("connect to the test broker");
    let consumer_config = config.clone();
    event_log_consumer::suite(&log, move |group: &'static str| {
        let config = consumer_config.clone();
        async move {
            // Groups live on the shared broker: name them after the test's own topic.
            let group = format!("{}.{group}", config.events_topic);
            KafkaEventLogConsumer::subscribe(&config, Topic::Events, &group, "conformance").expect("subscribe")
        }
        .boxed()
    })
    .await;
    let _ = admin::delete_topics(&config, &[config.events_topic.as_str(), config.dead_letter_topic.as_str()]).await;
}
