//! The collector while its Kafka broker dies and comes back (tier b, a real broker of each test's own).

mod support;

use std::time::{Duration, Instant};

use hourglass_core::api_key::Scope;
use hourglass_proto::v1::{BatchAck, BatchStatus, IngestStreamRequest, IngestStreamResponse};
use support::{FaultBroker, TestCollector, authorized, event, events_by_id, test_kafka_config};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Acks can take the delivery timeout plus a broker restart; the stream must survive the outage.
async fn next_ack(acks: &mut tonic::Streaming<IngestStreamResponse>) -> BatchAck {
    support::next_ack(acks, Duration::from_secs(120)).await
}

#[tokio::test]
async fn a_stopped_broker_gets_no_ack_and_the_stream_recovers_when_it_returns() {
    let broker = FaultBroker::start("collector-outage", 19292);
    let mut kafka = test_kafka_config("outage", &broker.brokers);
    kafka.delivery_timeout_ms = 3_000;
    let collector = TestCollector::start_on("outage", kafka, |_| {}).await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let (batch_tx, batch_rx) = mpsc::channel(16);
    let mut acks = collector
        .client()
        .await
        .ingest_stream(authorized(ReceiverStream::new(batch_rx), &key))
        .await
        .unwrap()
        .into_inner();

    let before: Vec<_> = (0..10).map(|index| event(&format!("before-{index}"))).collect();
    batch_tx.send(IngestStreamRequest { sequence: 1, events: before }).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.sequence, ack.status), (1, BatchStatus::Accepted as i32), "{ack:?}");

    broker.kill();
    let during: Vec<_> = (0..10).map(|index| event(&format!("during-{index}"))).collect();
    batch_tx.send(IngestStreamRequest { sequence: 2, events: during }).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.sequence, 2);
    assert_eq!(ack.status, BatchStatus::Unavailable as i32, "no ack for events Kafka does not have: {ack:?}");
    assert_eq!(ack.accepted_count, 0);
    assert!(ack.retry_after_ms > 0);

    broker.restart();
    // The client protocol: resend an unacknowledged batch after retry_after_ms, on the same stream.
    let after: Vec<_> = (0..10).map(|index| event(&format!("after-{index}"))).collect();
    let mut sequence = 3;
    let recovered = loop {
        batch_tx.send(IngestStreamRequest { sequence, events: after.clone() }).await.unwrap();
        let ack = next_ack(&mut acks).await;
        assert_eq!(ack.sequence, sequence);
        if ack.status == BatchStatus::Accepted as i32 {
            break ack;
        }
        assert_eq!(ack.status, BatchStatus::Unavailable as i32, "{ack:?}");
        assert!(sequence < 40, "the collector never recovered after the broker returned");
        tokio::time::sleep(Duration::from_millis(u64::from(ack.retry_after_ms))).await;
        sequence += 1;
    };
    assert_eq!(recovered.accepted_count, 10);

    let published = events_by_id(&collector.published_records().await);
    let mut ids: Vec<_> = published.keys().map(String::as_str).collect();
    ids.sort();
    let mut expected: Vec<String> =
        (0..10).flat_map(|index| [format!("after-{index}"), format!("before-{index}")]).collect();
    expected.sort();
    assert_eq!(ids, expected, "the acked batches are in Kafka, once each, and the unacked one is not");
    drop(batch_tx);
    collector.stop().await;
}

/// Waits until health reports `expected` for the whole server and for the ingest service.
async fn wait_for_health(channel: &Channel, expected: ServingStatus, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut health = HealthClient::new(channel.clone());
    loop {
        let mut statuses = Vec::new();
        for service in ["", "hourglass.v1.IngestService"] {
            let answer = health.check(HealthCheckRequest { service: service.into() }).await;
            statuses.push(answer.map(|response| response.into_inner().status));
        }
        if statuses.iter().all(|status| status.as_ref().is_ok_and(|status| *status == expected as i32)) {
            return;
        }
        assert!(Instant::now() < deadline, "health did not report {expected:?} within {timeout:?}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A balancer must stop sending batches to a collector that cannot get them into Kafka (each would end
/// UNAVAILABLE), and send them again once it can. The collector checks readiness every 100 ms here.
#[tokio::test]
async fn health_is_not_serving_while_the_broker_is_down_and_serving_once_it_returns() {
    let broker = FaultBroker::start("collector-health", 19392);
    let collector =
        TestCollector::start_on("broker_health", test_kafka_config("broker_health", &broker.brokers), |_| {}).await;
    let channel = collector.channel().await;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(60)).await;

    broker.kill();
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(60)).await;

    broker.restart();
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(120)).await;
    collector.stop().await;
}
