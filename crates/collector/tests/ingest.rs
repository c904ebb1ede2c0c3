//! The collector against the real Kafka broker and Postgres (tier b), over a real socket.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use hourglass_core::api_key::{ApiKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};
use hourglass_proto::log::v1::Outcome;
use hourglass_proto::v1::{
    BatchAck, BatchStatus, IngestBatchRequest, IngestRequest, IngestStreamRequest, IngestStreamResponse,
    RejectionReason,
};
use support::{TestCollector, authorized, event, events_by_id, invalid_event, open_stream, outcome_total};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

async fn next_ack(acks: &mut tonic::Streaming<IngestStreamResponse>) -> BatchAck {
    support::next_ack(acks, Duration::from_secs(60)).await
}

#[tokio::test]
async fn acked_events_are_in_kafka_exactly_as_sent_and_rejected_ones_are_not() {
    let collector = TestCollector::start("stream_acks").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let (batch_tx, mut acks) = open_stream(&collector, &key).await;

    let mut sent_valid = HashMap::new();
    let mut sent_invalid = Vec::new();
    for sequence in 0..5u64 {
        let mut events = Vec::new();
        for index in 0..20 {
            let id = format!("s{sequence}-e{index}");
            if index % 7 == 3 {
                sent_invalid.push(id.clone());
                events.push(invalid_event(&id));
            } else {
                let valid = event(&id);
                sent_valid.insert(id.clone(), valid.clone());
                events.push(valid);
            }
        }
        batch_tx.send(IngestStreamRequest { sequence: 100 + sequence, events }).await.unwrap();
    }

    let mut acked_sequences = Vec::new();
    let mut accepted = 0;
    for _ in 0..5 {
        let ack = next_ack(&mut acks).await;
        assert_eq!(ack.status, BatchStatus::Accepted as i32, "{ack:?}");
        assert_eq!(ack.rejections.len(), 3, "indices 3, 10 and 17 are invalid");
        for rejection in &ack.rejections {
            assert_eq!(rejection.index % 7, 3);
            assert_eq!(rejection.reason, RejectionReason::EventTypeEmpty as i32);
            assert!(!rejection.message.is_empty());
        }
        accepted += ack.accepted_count;
        acked_sequences.push(ack.sequence);
    }
    acked_sequences.sort();
    assert_eq!(acked_sequences, vec![100, 101, 102, 103, 104]);
    assert_eq!(accepted as usize, sent_valid.len());

    let records = collector.published_records().await;
    let published = events_by_id(&records);
    assert_eq!(published, sent_valid, "every acked event is in Kafka exactly as sent, once");
    for id in &sent_invalid {
        assert!(!published.contains_key(id), "rejected event {id} was published");
    }
    for published in &records {
        assert_eq!(published.record.customer_id, "acme", "the customer comes from the key");
        assert_eq!(published.key, "acme");
        assert_eq!(published.record.collector_id, "test-collector");
    }
    assert_eq!(outcome_total(&records, Outcome::Accepted) as usize, sent_valid.len());
    assert_eq!(outcome_total(&records, Outcome::Rejected) as usize, sent_invalid.len());
    drop(batch_tx);
    assert!(acks.message().await.unwrap().is_none(), "a half-closed stream ends cleanly");
    collector.stop().await;
}

#[tokio::test]
async fn unknown_revoked_and_wrong_scope_keys_publish_nothing() {
    let collector = TestCollector::start("bad_keys").await;
    let ingest_key = collector.create_key("acme", Scope::Ingest).await;
    let query_key = collector.create_key("acme", Scope::Query).await;
    let revoked_key = collector.create_key("acme", Scope::Ingest).await;
    assert!(collector.key_store.revoke_key(&revoked_key.id()).await.unwrap());
    let mut client = collector.client().await;
    let batch = || IngestBatchRequest { events: vec![event("e1")] };

    let missing = client.ingest_batch(tonic::Request::new(batch())).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let mut garbage = tonic::Request::new(batch());
    garbage.metadata_mut().insert("authorization", "Bearer not-a-key".parse().unwrap());
    assert_eq!(client.ingest_batch(garbage).await.unwrap_err().code(), Code::Unauthenticated);
    let unknown = client.ingest_batch(authorized(batch(), &ApiKey::generate())).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let revoked = client.ingest_batch(authorized(batch(), &revoked_key)).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert!(revoked.message().contains("revoked"), "{}", revoked.message());
    let wrong_scope = client.ingest_batch(authorized(batch(), &query_key)).await.unwrap_err();
    assert_eq!(wrong_scope.code(), Code::PermissionDenied);

    let (_batch_rx_keepalive, batch_rx) = mpsc::channel::<IngestStreamRequest>(1);
    let stream = client.ingest_stream(authorized(ReceiverStream::new(batch_rx), &ApiKey::generate())).await;
    assert_eq!(stream.unwrap_err().code(), Code::Unauthenticated);

    assert!(collector.published_records().await.is_empty(), "nothing may be published for a refused key");
    // The good key still works on the same connection.
    let ack = client.ingest_batch(authorized(batch(), &ingest_key)).await.unwrap().into_inner().ack.unwrap();
    assert_eq!(ack.accepted_count, 1);
    collector.stop().await;
}

#[tokio::test]
async fn a_throttled_batch_is_acked_with_retry_after_and_publishes_no_event() {
    let collector = TestCollector::start("throttle").await;
    let customer = CustomerId::new("small").unwrap();
    let limits = CustomerLimits { events_per_second: Some(1), burst_events: Some(10), ..Default::default() };
    collector.key_store.set_customer_limits(&customer, limits).await.unwrap();
    let key = collector.create_key("small", Scope::Ingest).await;
    let (batch_tx, mut acks) = open_stream(&collector, &key).await;

    let first: Vec<_> = (0..10).map(|index| event(&format!("first-{index}"))).collect();
    batch_tx.send(IngestStreamRequest { sequence: 1, events: first }).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.sequence, ack.status, ack.accepted_count), (1, BatchStatus::Accepted as i32, 10));

    let second: Vec<_> = (0..10).map(|index| event(&format!("second-{index}"))).collect();
    batch_tx.send(IngestStreamRequest { sequence: 2, events: second.clone() }).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.sequence, 2);
    assert_eq!(ack.status, BatchStatus::Throttled as i32);
    assert_eq!(ack.accepted_count, 0);
    assert!(ack.retry_after_ms >= 1000, "10 events at 1/s: {} ms", ack.retry_after_ms);

    // Unary calls get RESOURCE_EXHAUSTED with a RetryInfo.
    let mut client = collector.client().await;
    let status = client.ingest_batch(authorized(IngestBatchRequest { events: second }, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert!(details.retry_info().and_then(|info| info.retry_delay).is_some(), "RetryInfo attached");

    let records = collector.published_records().await;
    let published = events_by_id(&records);
    assert_eq!(published.len(), 10);
    assert!(published.keys().all(|id| id.starts_with("first-")), "no throttled event is published");
    assert_eq!(outcome_total(&records, Outcome::Throttled), 20, "both throttled batches are counted");
    assert_eq!(outcome_total(&records, Outcome::Accepted), 10);
    drop(batch_tx);
    collector.stop().await;
}

#[tokio::test]
async fn client_streaming_ingest_returns_one_summary() {
    let collector = TestCollector::start("client_stream").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let batches = vec![
        IngestRequest { events: (0..30).map(|index| event(&format!("a{index}"))).collect() },
        IngestRequest { events: vec![event("b0"), invalid_event("b1"), event("b2")] },
        IngestRequest { events: (0..1001).map(|index| event(&format!("c{index}"))).collect() },
        IngestRequest { events: vec![] },
    ];
    let summary =
        collector.client().await.ingest(authorized(tokio_stream::iter(batches), &key)).await.unwrap().into_inner();
    assert_eq!(summary.batches, 4);
    assert_eq!(summary.accepted_events, 32);
    assert_eq!(summary.rejected_events, 1 + 1001);
    assert_eq!(summary.throttled_events, 0);
    assert_eq!(summary.problem_batches.len(), 2);
    assert_eq!(summary.problem_batches[0].sequence, 1);
    assert_eq!(summary.problem_batches[0].rejections[0].index, 1);
    assert_eq!(summary.problem_batches[1].sequence, 2);
    assert_eq!(summary.problem_batches[1].status, BatchStatus::Invalid as i32);
    assert!(summary.problem_batches[1].error_message.contains("--max-batch-events"));

    let records = collector.published_records().await;
    assert_eq!(events_by_id(&records).len(), 32);
    assert_eq!(outcome_total(&records, Outcome::Rejected), 1 + 1001);
    collector.stop().await;
}

#[tokio::test]
async fn unary_ingest_accepts_and_refuses_oversized_batches_whole() {
    let collector = TestCollector::start_with("unary", &support::test_brokers(), |config| {
        config.limits.max_batch_bytes = 4096;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let mut client = collector.client().await;

    let ack = client
        .ingest_batch(authorized(IngestBatchRequest { events: vec![event("u1"), invalid_event("u2")] }, &key))
        .await
        .unwrap()
        .into_inner()
        .ack
        .unwrap();
    assert_eq!(ack.accepted_count, 1);
    assert_eq!(ack.rejections.len(), 1);

    let big: Vec<_> = (0..100).map(|index| event(&format!("big{index}"))).collect();
    let status = client.ingest_batch(authorized(IngestBatchRequest { events: big }, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("--max-batch-bytes"), "{}", status.message());

    let records = collector.published_records().await;
    assert_eq!(events_by_id(&records).keys().collect::<Vec<_>>(), vec!["u1"]);
    assert_eq!(outcome_total(&records, Outcome::Rejected), 1 + 100);
    collector.stop().await;
}

#[tokio::test]
async fn shutdown_acks_in_flight_batches_then_ends_streams_with_unavailable() {
    let collector = TestCollector::start("shutdown").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let (batch_tx, mut acks) = open_stream(&collector, &key).await;
    for sequence in 0..3 {
        let events = (0..10).map(|index| event(&format!("s{sequence}-{index}"))).collect();
        batch_tx.send(IngestStreamRequest { sequence, events }).await.unwrap();
    }
    let first = next_ack(&mut acks).await;
    assert_eq!(first.status, BatchStatus::Accepted as i32);

    collector.shutdown.cancel();
    let mut accepted = first.accepted_count;
    let end = loop {
        match acks.message().await {
            Ok(Some(response)) => accepted += response.ack.unwrap().accepted_count,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = end.expect("the stream ends with a status telling the client to reconnect");
    assert_eq!(status.code(), Code::Unavailable);
    let records = support::read_topic(&collector.kafka, &collector.kafka.events_topic).await;
    assert_eq!(events_by_id(&records).len() as u32, accepted, "exactly the acked events are in kafka");
    collector.server.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn health_reports_serving_once_kafka_and_postgres_answer() {
    let collector = TestCollector::start("health").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(collector.channel().await);
    let request = || tonic_health::pb::HealthCheckRequest { service: "hourglass.v1.IngestService".into() };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let mut updates = health.watch(request()).await.unwrap().into_inner();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(30), updates.message()).await.unwrap().unwrap().unwrap();
        if update.status == serving {
            break;
        }
    }
    assert_eq!(health.check(request()).await.unwrap().into_inner().status, serving);
    collector.stop().await;
}

/// A customer limited to 2 event types and 2 property names per type per hour: a batch's third type and
/// an event adding a third property name to its type are rejected with their own reasons, in the event's
/// hour, and counted in the record's outcomes (what the ledger sums); known types still pass.
#[tokio::test]
async fn event_types_and_property_names_past_the_customers_limits_are_rejected_and_counted() {
    use hourglass_proto::v1::{Event, PropertyValue, property_value};
    let collector = TestCollector::start("cardinality").await;
    let customer = CustomerId::new("wide").unwrap();
    let limits = CustomerLimits {
        max_event_types_per_hour: Some(2),
        max_property_names_per_event_type: Some(2),
        ..Default::default()
    };
    collector.key_store.set_customer_limits(&customer, limits).await.unwrap();
    let key = collector.create_key("wide", Scope::Ingest).await;
    let typed = |id: &str, event_type: &str, properties: &[&str]| Event {
        event_type: event_type.to_owned(),
        properties: properties
            .iter()
            .map(|name| {
                ((*name).to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue("v".into())) })
            })
            .collect(),
        ..event(id)
    };
    let events = vec![
        typed("t1", "view", &["a"]),
        typed("t2", "click", &["a", "b"]),
        typed("t3", "scroll", &[]),       // a third type
        typed("t4", "view", &["a", "b"]), // view has a, b: fine
        typed("t5", "view", &["c"]),      // a third name for view
        typed("t6", "click", &[]),
    ];
    let ack = collector
        .client()
        .await
        .ingest_batch(authorized(IngestBatchRequest { events }, &key))
        .await
        .unwrap()
        .into_inner()
        .ack
        .unwrap();
    assert_eq!(ack.accepted_count, 4);
    let rejected: Vec<(u32, i32)> =
        ack.rejections.iter().map(|rejection| (rejection.index, rejection.reason)).collect();
    assert_eq!(
        rejected,
        [(2, RejectionReason::TooManyEventTypes as i32), (4, RejectionReason::TooManyPropertyNames as i32)]
    );
    assert!(ack.rejections[0].message.contains("--max-event-types-per-hour"), "{}", ack.rejections[0].message);

    let records = collector.published_records().await;
    let by_reason = |reason: RejectionReason| -> u32 {
        records
            .iter()
            .flat_map(|published| &published.record.outcomes)
            .filter(|count| count.outcome == Outcome::Rejected as i32 && count.reason == reason as i32)
            .map(|count| count.count)
            .sum()
    };
    assert_eq!(
        (by_reason(RejectionReason::TooManyEventTypes), by_reason(RejectionReason::TooManyPropertyNames)),
        (1, 1)
    );
    assert_eq!(outcome_total(&records, Outcome::Accepted), 4);
    collector.stop().await;
}

#[tokio::test]
async fn events_are_published_as_sent_with_unknown_fields_stripped_and_an_undecodable_one_ends_the_stream() {
    use bytes::Bytes;
    use hourglass_proto::wire::v1::ingest_service_client::IngestServiceClient as WireClient;
    use prost::Message;

    let collector = TestCollector::start("wire_events").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    // The collector's own view of the request lets the test send any bytes as an event.
    let mut client = WireClient::new(collector.channel().await);
    let (batch_tx, batch_rx) = mpsc::channel(4);
    let mut acks = client.ingest_stream(authorized(ReceiverStream::new(batch_rx), &key)).await.unwrap().into_inner();

    let plain = event("w-plain");
    let with_unknown = event("w-unknown");
    let mut with_unknown_bytes = with_unknown.encode_to_vec();
    prost::encoding::uint64::encode(15, &9, &mut with_unknown_bytes);
    let first = hourglass_proto::wire::v1::IngestStreamRequest {
        sequence: 1,
        events: vec![
            Bytes::from(plain.encode_to_vec()),
            Bytes::from(with_unknown_bytes),
            Bytes::from(invalid_event("w-invalid").encode_to_vec()),
        ],
    };
    batch_tx.send(first).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.status, ack.accepted_count), (BatchStatus::Accepted as i32, 2), "{ack:?}");
    let rejected: Vec<(u32, i32)> =
        ack.rejections.iter().map(|rejection| (rejection.index, rejection.reason)).collect();
    assert_eq!(rejected, [(2, RejectionReason::EventTypeEmpty as i32)]);

    let undecodable = hourglass_proto::wire::v1::IngestStreamRequest {
        sequence: 2,
        events: vec![Bytes::from(event("w-never").encode_to_vec()), Bytes::from_static(&[0x0a, 0x02, 0xff, 0xfe])],
    };
    batch_tx.send(undecodable).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), acks.message())
        .await
        .expect("the stream ends")
        .expect_err("an undecodable event ends the stream with an error");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("event 1 of the batch"), "{}", status.message());

    let records = collector.published_records().await;
    let published = events_by_id(&records);
    let expected: HashMap<String, _> =
        [("w-plain".to_owned(), plain), ("w-unknown".to_owned(), with_unknown)].into_iter().collect();
    assert_eq!(published, expected, "as sent, the unknown field stripped; nothing of the undecodable batch");
    assert_eq!(outcome_total(&records, Outcome::Rejected), 1);
    collector.stop().await;
}
