//! Streams generated events to a collector over `IngestStream`, many batches in flight per stream.
//! Used by `hourglass bench collector`; the future `hourglass loadgen` shares it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{BatchStatus, Event, IngestStreamRequest, PropertyValue, property_value};
use indicatif::ProgressBar;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const EVENT_TYPES: [&str; 20] = [
    "page_view",
    "click",
    "signup",
    "login",
    "logout",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "checkout_completed",
    "video_play",
    "video_pause",
    "share",
    "comment",
    "like",
    "subscribe",
    "unsubscribe",
    "error",
    "download",
    "upload",
];

/// How to generate and send load.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// The collector's address, e.g. `http://127.0.0.1:50051`.
    pub target: String,
    /// The API key (`hgk_…`).
    pub api_key: String,
    /// Events to send in all.
    pub events: u64,
    /// Events per batch.
    pub batch_size: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Streams per connection.
    pub streams_per_connection: usize,
    /// Unacknowledged batches allowed per stream.
    pub in_flight_per_stream: usize,
    /// Distinguishes event ids of different runs.
    pub run_id: String,
}

/// What the collector said about the load.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Batches acked.
    pub batches: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected.
    pub rejected: u64,
    /// Events in throttled batches.
    pub throttled: u64,
    /// Events in batches Kafka did not confirm.
    pub unavailable: u64,
    /// Encoded bytes of the events sent.
    pub event_bytes: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    unavailable: AtomicU64,
    event_bytes: AtomicU64,
}

/// Sends the whole plan and waits for every ack.
pub async fn run(plan: &LoadPlan, progress: &ProgressBar) -> anyhow::Result<LoadReport> {
    let streams = plan.connections * plan.streams_per_connection;
    let batches_total = plan.events.div_ceil(plan.batch_size as u64);
    let next_batch = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let channel: Channel = Endpoint::from_shared(plan.target.clone())?
            .connect()
            .await
            .with_context(|| format!("failed to connect to {}", plan.target))?;
        for _ in 0..plan.streams_per_connection {
            let client = IngestServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
            tasks.push(tokio::spawn(run_stream(
                client,
                plan.clone(),
                batches_total,
                Arc::clone(&next_batch),
                Arc::clone(&counters),
                progress.clone(),
            )));
        }
    }
    debug_assert_eq!(tasks.len(), streams);
    for task in tasks {
        task.await.context("stream task panicked")??;
    }
    Ok(LoadReport {
        batches: counters.batches.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        throttled: counters.throttled.load(Ordering::Relaxed),
        unavailable: counters.unavailable.load(Ordering::Relaxed),
        event_bytes: counters.event_bytes.load(Ordering::Relaxed),
    })
}

async fn run_stream(
    mut client: IngestServiceClient<Channel>,
    plan: LoadPlan,
    batches_total: u64,
    next_batch: Arc<AtomicU64>,
    counters: Arc<Counters>,
    progress: ProgressBar,
) -> anyhow::Result<()> {
    let window = Arc::new(Semaphore::new(plan.in_flight_per_stream));
    let (request_tx, request_rx) = mpsc::channel::<IngestStreamRequest>(plan.in_flight_per_stream);
    let mut request = tonic::Request::new(ReceiverStream::new(request_rx));
    request.metadata_mut().insert("authorization", format!("Bearer {}", plan.api_key).parse()?);
    let mut acks = client.ingest_stream(request).await.context("IngestStream refused")?.into_inner();

    let sender_window = Arc::clone(&window);
    let sender_counters = Arc::clone(&counters);
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let batch_number = next_batch.fetch_add(1, Ordering::Relaxed);
            if batch_number >= batches_total {
                break;
            }
            let first_event = batch_number * plan.batch_size as u64;
            let events_in_batch = (plan.events - first_event).min(plan.batch_size as u64) as usize;
            let events = generate_batch(&plan.run_id, first_event, events_in_batch);
            let bytes: usize = events.iter().map(prost::Message::encoded_len).sum();
            sender_counters.event_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            sender_window.acquire().await.expect("window never closes").forget();
            if request_tx.send(IngestStreamRequest { sequence: batch_number, events }).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });

    let mut acked = 0u64;
    while let Some(response) = acks.message().await.context("ingest stream failed")? {
        let Some(ack) = response.ack else { continue };
        window.add_permits(1);
        acked += 1;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.accepted.fetch_add(u64::from(ack.accepted_count), Ordering::Relaxed);
        counters.rejected.fetch_add(ack.rejections.len() as u64, Ordering::Relaxed);
        match BatchStatus::try_from(ack.status) {
            Ok(BatchStatus::Throttled) => counters.throttled.fetch_add(plan.batch_size as u64, Ordering::Relaxed),
            Ok(BatchStatus::Unavailable) => counters.unavailable.fetch_add(plan.batch_size as u64, Ordering::Relaxed),
            _ => 0,
        };
        progress.inc(u64::from(ack.accepted_count));
    }
    // The sender half-closes the stream after its last batch; the collector then acks what it holds and
    // ends the stream, which ends the loop above.
    let sent = sender.await.context("sender task panicked")?;
    anyhow::ensure!(acked == sent, "stream ended with {} of {sent} batches unacknowledged", sent - acked);
    Ok(())
}

/// A batch of ~200-byte events: 5 string properties, 20 event types, 100k users.
pub fn generate_batch(run_id: &str, first_event: u64, count: usize) -> Vec<Event> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let occurred_at = Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 };
    let string = |text: &str| PropertyValue { kind: Some(property_value::Kind::StringValue(text.to_owned())) };
    (0..count as u64)
        .map(|offset| {
            let number = first_event + offset;
            Event {
                event_id: format!("{run_id}-{number:012}"),
                event_type: EVENT_TYPES[(number % EVENT_TYPES.len() as u64) as usize].to_owned(),
                occurred_at: Some(occurred_at),
                user_id: Some(format!("user-{:06}", number.wrapping_mul(2_654_435_761) % 100_000)),
                properties: [
                    ("page".to_owned(), string("/products/shoes/12345")),
                    ("referrer".to_owned(), string("https://example.com/")),
                    ("browser".to_owned(), string("firefox")),
                    ("country".to_owned(), string("DE")),
                    ("plan".to_owned(), string("pro")),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect()
}
