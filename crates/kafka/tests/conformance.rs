//! The [`EventLog`](hourglass_core::event_log::EventLog) conformance suite against a real Kafka broker
//! (tier b), on topics of the test's own.

use std::collections::BTreeMap;

use futures::FutureExt;
use hourglass_conformance::event_log::{self, ReadBack};
use hourglass_core::event_log::Topic;
use hourglass_kafka::{KafkaEventLog, admin, testing};

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
