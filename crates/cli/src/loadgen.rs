//! Streams events (generated, or given) to a collector over `IngestStream`, many batches in flight per
//! stream. Used by `hourglass send` and the benchmarks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{BatchStatus, Event, IngestStreamRequest, PropertyValue, RejectionReason, property_value};
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// The event types of generated events (and of the bench's tracking plan).
pub const EVENT_TYPES: [&str; 20] = [
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

/// Where a load's events come from.
#[derive(Clone, Debug)]
pub enum EventSource {
    /// `count` generated events (ids from `run_id`, so two runs never collide).
    Generated {
        /// Events in all.
        count: u64,
        /// Distinguishes event ids of different runs.
        run_id: String,
    },
    /// `count` generated events of the bench's tracking plan (`bench::tracking_plan`), about
    /// `violations_per_million` in a million of them breaking one of its rules.
    Planned {
        /// Events in all.
        count: u64,
        /// Distinguishes event ids of different runs.
        run_id: String,
        /// Events in a million that break the plan.
        violations_per_million: u32,
    },
    /// Events given up front (read from a file), sent in order.
    Given(Arc<Vec<Event>>),
}

impl EventSource {
    /// Events in all.
    pub fn len(&self) -> u64 {
        match self {
            Self::Generated { count, .. } | Self::Planned { count, .. } => *count,
            Self::Given(events) => events.len() as u64,
        }
    }

    fn batch(&self, first: u64, count: usize) -> Vec<Event> {
        match self {
            Self::Generated { run_id, .. } => generate_batch(run_id, first, count),
            Self::Planned { run_id, violations_per_million, .. } => {
                crate::bench::tracking_plan::generate_batch(run_id, first, count, *violations_per_million)
            }
            Self::Given(events) => events[first as usize..first as usize + count].to_vec(),
        }
    }
}

/// How to send load.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// The collector's address, e.g. `http://127.0.0.1:50051`.
    pub target: String,
    /// The API key (`hgk_…`).
    pub api_key: String,
    /// The events.
    pub source: EventSource,
    /// Events per batch.
    pub batch_size: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Streams per connection.
    pub streams_per_connection: usize,
    /// Unacknowledged batches allowed per stream.
    pub in_flight_per_stream: usize,
    /// Resend throttled and unavailable batches after their retry-after (same event ids, so a batch that
    /// did reach the log is still stored once). Benchmarks turn this off to measure first answers.
    pub retry: bool,
}

/// What the collector said about the load.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Acks received (a resent batch is acked again).
    pub batches: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events rejected, by the reason's proto name.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Events in throttled acks (resent when retrying).
    pub throttled: u64,
    /// Events in unavailable acks (resent when retrying).
    pub unavailable: u64,
    /// Events in batches refused whole as invalid (over a batch limit); never resent.
    pub invalid: u64,
    /// Batches resent.
    pub resent_batches: u64,
    /// Encoded bytes of the events sent.
    pub event_bytes: u64,
}

impl LoadReport {
    /// Events rejected for any reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_by_reason.values().sum()
    }
}

/// Sends the whole plan and waits for every ack.
pub async fn run(plan: &LoadPlan, progress: &ProgressBar) -> anyhow::Result<LoadReport> {
    let batch_size = plan.batch_size.max(1) as u64;
    let batches_total = plan.source.len().div_ceil(batch_size);
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let channel: Channel = Endpoint::from_shared(plan.target.clone())?
            .connect()
            .await
            .with_context(|| format!("failed to connect to {}", plan.target))?;
        for _ in 0..plan.streams_per_connection.max(1) {
            let client = IngestServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
            tasks.push(tokio::spawn(run_stream(
                client,
                plan.clone(),
                batches_total,
                Arc::clone(&next_batch),
                progress.clone(),
            )));
        }
    }
    let mut report = LoadReport::default();
    for task in tasks {
        let stream = task.await.context("stream task panicked")??;
        report.batches += stream.batches;
        report.accepted += stream.accepted;
        for (reason, count) in stream.rejected_by_reason {
            *report.rejected_by_reason.entry(reason).or_default() += count;
        }
        report.throttled += stream.throttled;
        report.unavailable += stream.unavailable;
        report.invalid += stream.invalid;
        report.resent_batches += stream.resent_batches;
        report.event_bytes += stream.event_bytes;
    }
    Ok(report)
}

/// One stream: takes batches from the shared counter, keeps up to `in_flight_per_stream` unacknowledged,
/// and (when retrying) resends throttled or unavailable ones once their retry-after has passed.
async fn run_stream(
    mut client: IngestServiceClient<Channel>,
    plan: LoadPlan,
    batches_total: u64,
    next_batch: Arc<AtomicU64>,
    progress: ProgressBar,
) -> anyhow::Result<LoadReport> {
    let window = plan.in_flight_per_stream.max(1);
    let (request_tx, request_rx) = mpsc::channel::<IngestStreamRequest>(window);
    let mut request = tonic::Request::new(ReceiverStream::new(request_rx));
    request.metadata_mut().insert("authorization", format!("Bearer {}", plan.api_key).parse()?);
    let mut acks = client.ingest_stream(request).await.context("IngestStream refused")?.into_inner();

    let mut report = LoadReport::default();
    let mut request_tx = Some(request_tx);
    let mut in_flight: HashMap<u64, Vec<Event>> = HashMap::new();
    let mut retries: VecDeque<(Instant, Vec<Event>)> = VecDeque::new();
    let mut next_sequence = 0u64;
    let mut source_done = false;
    loop {
        // The next batch to send, if the window has room: a due retry first, else a new batch.
        if let Some(sender) = &request_tx
            && in_flight.len() < window
        {
            let due_retry = retries.front().is_some_and(|(due, _)| *due <= Instant::now());
            let batch = if due_retry {
                report.resent_batches += 1;
                retries.pop_front().map(|(_, events)| events)
            } else if !source_done {
                let number = next_batch.fetch_add(1, Ordering::Relaxed);
                if number >= batches_total {
                    source_done = true;
                    None
                } else {
                    let first = number * plan.batch_size as u64;
                    let count = (plan.source.len() - first).min(plan.batch_size as u64) as usize;
                    let events = plan.source.batch(first, count);
                    report.event_bytes +=
                        events.iter().map(|event| prost::Message::encoded_len(event) as u64).sum::<u64>();
                    Some(events)
                }
            } else {
                None
            };
            if let Some(events) = batch {
                let sequence = next_sequence;
                next_sequence += 1;
                in_flight.insert(sequence, events.clone());
                if sender.send(IngestStreamRequest { sequence, events }).await.is_err() {
                    anyhow::bail!("the collector closed the stream");
                }
                continue;
            }
            if source_done && in_flight.is_empty() && retries.is_empty() {
                // Half-close: the collector acks what it holds and ends the stream.
                request_tx = None;
            }
        }
        let next_retry = retries.front().map(|(due, _)| *due);
        tokio::select! {
            response = acks.message() => {
                let Some(response) = response.context("ingest stream failed")? else { break };
                let Some(ack) = response.ack else { continue };
                let Some(events) = in_flight.remove(&ack.sequence) else { continue };
                report.batches += 1;
                report.accepted += u64::from(ack.accepted_count);
                for rejection in &ack.rejections {
                    let reason = RejectionReason::try_from(rejection.reason)
                        .map(|reason| reason.as_str_name().trim_start_matches("REJECTION_REASON_").to_owned())
                        .unwrap_or_else(|_| format!("reason {}", rejection.reason));
                    *report.rejected_by_reason.entry(reason).or_default() += 1;
                }
                progress.inc(u64::from(ack.accepted_count) + ack.rejections.len() as u64);
                let retry_after = Duration::from_millis(u64::from(ack.retry_after_ms.max(100)));
                match BatchStatus::try_from(ack.status) {
                    Ok(BatchStatus::Throttled) => {
                        report.throttled += events.len() as u64;
                        if plan.retry { retries.push_back((Instant::now() + retry_after, events)); }
                    }
                    Ok(BatchStatus::Unavailable) => {
                        report.unavailable += events.len() as u64;
                        if plan.retry { retries.push_back((Instant::now() + retry_after, events)); }
                    }
                    Ok(BatchStatus::Invalid) => {
                        report.invalid += events.len() as u64;
                        tracing::warn!(error = %ack.error_message, "a batch was refused whole");
                    }
                    _ => {}
                }
            }
            () = sleep_until_or_forever(next_retry), if in_flight.len() < window => {}
        }
    }
    anyhow::ensure!(
        in_flight.is_empty() && (retries.is_empty() || !plan.retry),
        "stream ended with {} batches unacknowledged",
        in_flight.len() + retries.len()
    );
    Ok(report)
}

async fn sleep_until_or_forever(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
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

/// Customers of the benchmarks' generated records (issue 24's fixed sizes: 1k customers).
pub const BENCH_CUSTOMERS: usize = 1000;
/// The Zipf exponent of the benchmarks' customers: the busiest customer sends about a sixth of all
/// events, the 1000th about 1/7000 of the busiest's.
pub const BENCH_ZIPF_EXPONENT: f64 = 1.1;
/// The seed of every benchmark's random choices, so two runs send the same load.
pub const BENCH_SEED: u64 = 24;

/// A seeded sampler of customer ranks following a Zipf law: rank `k` (0-based) is drawn with a
/// probability proportional to `1 / (k + 1)^exponent`. The same seed gives the same sequence on every
/// machine and build: the generator is SplitMix64, written out here rather than taken from `rand`,
/// whose generators may change between versions.
#[derive(Clone, Debug)]
pub struct ZipfCustomers {
    /// `cumulative[k]`: the probability of a rank ≤ k; the last is 1.
    cumulative: Vec<f64>,
    state: u64,
}

impl ZipfCustomers {
    /// A sampler over `customers` ranks (at least one).
    pub fn new(customers: usize, exponent: f64, seed: u64) -> Self {
        let weights: Vec<f64> = (1..=customers.max(1)).map(|rank| (rank as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut running = 0.0;
        let mut cumulative: Vec<f64> = weights
            .iter()
            .map(|weight| {
                running += weight / total;
                running
            })
            .collect();
        // Rounding may leave the last a hair below 1; a draw must always find a rank.
        *cumulative.last_mut().expect("at least one customer") = 1.0;
        Self { cumulative, state: seed }
    }

    /// The probability of drawing `rank`.
    #[cfg(test)]
    pub fn probability(&self, rank: usize) -> f64 {
        let below = if rank == 0 { 0.0 } else { self.cumulative[rank - 1] };
        self.cumulative[rank] - below
    }

    /// The next rank, 0 the most frequent.
    pub fn next_rank(&mut self) -> usize {
        let uniform = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative.partition_point(|&probability| probability <= uniform).min(self.cumulative.len() - 1)
    }

    /// The customer id of a rank.
    pub fn customer_id(rank: usize) -> String {
        format!("customer-{rank:04}")
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea and Flood, 2014).
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_customers_and_another_seed_does_not() {
        let draw = |seed| {
            let mut sampler = ZipfCustomers::new(BENCH_CUSTOMERS, BENCH_ZIPF_EXPONENT, seed);
            (0..1000).map(|_| sampler.next_rank()).collect::<Vec<_>>()
        };
        assert_eq!(draw(BENCH_SEED), draw(BENCH_SEED));
        assert_ne!(draw(BENCH_SEED), draw(BENCH_SEED + 1));
        // Pinned: the sequence is part of what makes two runs comparable, across builds too.
        assert_eq!(&draw(BENCH_SEED)[..8], &[42, 35, 0, 18, 205, 11, 190, 127]);
    }

    #[test]
    fn draws_follow_the_zipf_law() {
        let mut sampler = ZipfCustomers::new(BENCH_CUSTOMERS, BENCH_ZIPF_EXPONENT, BENCH_SEED);
        let draws = 200_000;
        let mut counts = vec![0u64; BENCH_CUSTOMERS];
        for _ in 0..draws {
            counts[sampler.next_rank()] += 1;
        }
        let probabilities: f64 = (0..BENCH_CUSTOMERS).map(|rank| sampler.probability(rank)).sum();
        assert!((probabilities - 1.0).abs() < 1e-9, "{probabilities}");
        // Rank k's share is (1/(k+1))^1.1 of the busiest's; the busiest has ~18% of all.
        let top = sampler.probability(0);
        assert!((0.15..0.22).contains(&top), "{top}");
        assert!((sampler.probability(9) / top - 10f64.powf(-1.1)).abs() < 1e-12);
        for rank in [0, 1, 9, 99] {
            let expected = sampler.probability(rank) * draws as f64;
            let observed = counts[rank] as f64;
            // Five standard deviations of a binomial count.
            assert!((observed - expected).abs() < 5.0 * expected.sqrt() + 1.0, "rank {rank}: {observed} vs {expected}");
        }
        let top_ten: u64 = counts[..10].iter().sum();
        let bottom_half: u64 = counts[500..].iter().sum();
        assert!(top_ten > 3 * bottom_half, "skewed: top ten {top_ten}, bottom half {bottom_half}");
        assert!(counts.iter().filter(|count| **count > 0).count() > 900, "the tail is drawn too");
    }
}
