//! Stream-level behaviour against the real broker and Postgres (tier b): hot-customer key spread,
//! oversized messages, idle streams, and a key revoked while its stream is open or while it is cached.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};
use hourglass_proto::v1::{BatchStatus, IngestBatchRequest, IngestStreamRequest, IngestStreamResponse};
use support::{TestCollector, authorized, event, events_by_id, open_stream};
use tonic::Code;

/// Reads the stream until it ends; returns its final error status.
async fn stream_end(acks: &mut tonic::Streaming<IngestStreamResponse>) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), acks.message()).await.expect("the stream ends") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error status"),
            Err(status) => return status,
        }
    }
}

#[tokio::test]
async fn a_hot_customer_is_spread_over_its_configured_number_of_keys() {
    let collector = TestCollector::start("key_spread").await;
    let hot = CustomerId::new("hot").unwrap();
    let limits = CustomerLimits { kafka_key_spread: Some(3), ..Default::default() };
    collector.key_store.set_customer_limits(&hot, limits).await.unwrap();
    let key = collector.create_key("hot", Scope::Ingest).await;
    let mut client = collector.client().await;
    for batch in 0..6 {
        let request = IngestBatchRequest { events: vec![event(&format!("hot-{batch}"))] };
        client.ingest_batch(authorized(request, &key)).await.unwrap();
    }
    let records = collector.published_records().await;
    let keys: BTreeSet<_> = records.iter().map(|published| published.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["hot#0", "hot#1", "hot#2"]));
    assert!(records.iter().all(|published| published.record.customer_id == "hot"));
    assert_eq!(events_by_id(&records).len(), 6);
    collector.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_fails_with_out_of_range_and_publishes_nothing() {
    let collector = TestCollector::start_with("message_size", &support::test_brokers(), |config| {
        config.server.max_message_bytes = 16 * 1024;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let events = (0..200).map(|index| event(&format!("large-{index}"))).collect();
    let status =
        collector.client().await.ingest_batch(authorized(IngestBatchRequest { events }, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("limit"), "{}", status.message());
    assert!(collector.published_records().await.is_empty());
    collector.stop().await;
}

/// The key is checked from the headers before the message is read: an anonymous call is refused as
/// UNAUTHENTICATED even when its message is over the size limit (which decoding would have found first,
/// after buffering it), so no anonymous client can make the collector decode anything.
#[tokio::test]
async fn an_anonymous_call_is_refused_before_its_message_is_decoded() {
    let collector = TestCollector::start_with("auth_before_decode", &support::test_brokers(), |config| {
        config.server.max_message_bytes = 16 * 1024;
    })
    .await;
    let oversized = || IngestBatchRequest { events: (0..200).map(|index| event(&format!("e-{index}"))).collect() };
    let status = collector.client().await.ingest_batch(oversized()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut forged = tonic::Request::new(oversized());
    forged.metadata_mut().insert("authorization", "Bearer hgk_not_a_key".parse().unwrap());
    let status = collector.client().await.ingest_batch(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let stream = collector.client().await.ingest_stream(futures::stream::iter(Vec::<IngestStreamRequest>::new())).await;
    assert_eq!(stream.unwrap_err().code(), Code::Unauthenticated);
    assert!(collector.published_records().await.is_empty());
    collector.stop().await;
}

/// A client that sends batches and never reads its acks once held its stream's in-flight batches for as
/// long as the connection lived (the ack channel blocked forever). With `--ack-write-timeout-secs` the
/// stream gives up on it: when the client finally reads, it finds only the acks queued before, and the
/// stream over.
#[tokio::test]
async fn a_client_that_reads_no_acks_is_cut_off_after_the_ack_write_timeout() {
    let collector = TestCollector::start_with("stalled_reader", &support::test_brokers(), |config| {
        config.streams.ack_write_timeout_secs = 1;
        config.streams.max_in_flight_batches = 2;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    // Small HTTP/2 windows, so unread acks back up into the collector quickly; each ack lists 500
    // rejections (events without a type), about 20 KB.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.address))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(64);
    let mut acks = hourglass_proto::v1::ingest_service_client::IngestServiceClient::new(channel)
        .ingest_stream(authorized(tokio_stream::wrappers::ReceiverStream::new(batch_rx), &key))
        .await
        .unwrap()
        .into_inner();
    let batches = 40u64;
    for sequence in 0..batches {
        let events = (0..500)
            .map(|index| hourglass_proto::v1::Event {
                event_type: String::new(),
                ..event(&format!("s{sequence}-{index}"))
            })
            .collect();
        batch_tx.send(IngestStreamRequest { sequence, events }).await.unwrap();
    }
    // The client stalls well past the timeout before it reads anything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut acked = 0u64;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_secs(30), acks.message()).await.expect("the stream ends")
    {
        acked += 1;
    }
    assert!(acked < batches, "the stalled stream was kept: all {acked} acks came");
    drop(batch_tx);
    collector.stop().await;
}

#[tokio::test]
async fn an_idle_stream_is_ended_with_deadline_exceeded() {
    let collector = TestCollector::start_with("idle_stream", &support::test_brokers(), |config| {
        config.streams.idle_stream_timeout_secs = 1;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let (batch_tx, mut acks) = open_stream(&collector, &key).await;
    let status = stream_end(&mut acks).await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("--idle-stream-timeout-secs"), "{}", status.message());
    drop(batch_tx);
    collector.stop().await;
}

#[tokio::test]
async fn a_key_revoked_mid_stream_ends_the_stream_and_publishes_nothing_more() {
    let collector = TestCollector::start_with("revoke_mid_stream", &support::test_brokers(), |config| {
        config.key_cache.ttl_secs = 0;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let (batch_tx, mut acks) = open_stream(&collector, &key).await;
    batch_tx.send(IngestStreamRequest { sequence: 1, events: vec![event("before-revoke")] }).await.unwrap();
    let ack = support::next_ack(&mut acks, Duration::from_secs(60)).await;
    assert_eq!(ack.status, BatchStatus::Accepted as i32);

    assert!(collector.key_store.revoke_key(&key.id()).await.unwrap());
    batch_tx.send(IngestStreamRequest { sequence: 2, events: vec![event("after-revoke")] }).await.unwrap();
    let status = stream_end(&mut acks).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());

    let published = events_by_id(&collector.published_records().await);
    assert_eq!(published.keys().collect::<Vec<_>>(), vec!["before-revoke"]);
    collector.stop().await;
}

/// Unary calls check the key through the cache on every call: a key revoked while cached may still be
/// accepted until its cache entry, made before the revocation, expires, and never after.
#[tokio::test]
async fn a_key_revoked_while_cached_is_refused_for_unary_calls_once_the_cache_ttl_has_passed() {
    let ttl = Duration::from_secs(1);
    let collector = TestCollector::start_with("revoke_cached_unary", &support::test_brokers(), |config| {
        config.key_cache.ttl_secs = ttl.as_secs();
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let mut client = collector.client().await;
    let batch = |id: String| authorized(IngestBatchRequest { events: vec![event(&id)] }, &key);
    let mut acknowledged = vec!["before-revoke".to_owned()];
    client.ingest_batch(batch("before-revoke".into())).await.expect("a valid key is accepted (and now cached)");

    assert!(collector.key_store.revoke_key(&key.id()).await.unwrap());
    let revoked_at = Instant::now();
    // A call that starts a TTL after the revocation finds the entry expired and asks the store, on any
    // machine however slow: this bound is the guarantee, not a timing. The deadline only keeps a broken
    // cache from hanging the test.
    let deadline = revoked_at + 10 * ttl;
    let refusal = loop {
        let started = Instant::now();
        let id = format!("after-revoke-{}", acknowledged.len());
        match client.ingest_batch(batch(id.clone())).await {
            Ok(_) => {
                assert!(
                    started.duration_since(revoked_at) < ttl,
                    "a call started {:?} after the revocation was accepted: the key was trusted past the cache TTL",
                    started.duration_since(revoked_at)
                );
                acknowledged.push(id);
            }
            Err(status) => break status,
        }
        assert!(Instant::now() < deadline, "the revoked key was still accepted {:?} after its revocation", 10 * ttl);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    assert!(refusal.message().contains("revoked"), "{}", refusal.message());
    let again = client.ingest_batch(batch("after-refusal".into())).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "{again:?}");

    // Kafka holds exactly the acknowledged batches: nothing of the refused calls.
    let published = events_by_id(&collector.published_records().await);
    let mut published: Vec<String> = published.into_keys().collect();
    published.sort();
    acknowledged.sort();
    assert_eq!(published, acknowledged);
    collector.stop().await;
}
