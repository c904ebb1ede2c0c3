//! One batch's way through the collector: validate → encode → admit (quota) → append → ack.
//!
//! [`Collector::begin_batch`] does the CPU work and the quota decision at once and returns a future of
//! the batch's ack. The future resolves after the event log has made the batch durable (or failed to),
//! so callers can keep many batches in flight and ack them as they complete.
//!
//! Every event seen ends up counted exactly once in the record's outcomes: accepted (and carried in the
//! same record), rejected by reason, or throttled. A batch with nothing accepted still produces an
//! outcome-only record, so the ledger downstream sees every event the collector saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt};
use hourglass_core::event_log::{EventLog, EventLogError, LogRecord, Topic};
use hourglass_core::hour;
use hourglass_core::key_store::KeyStore;
use hourglass_core::record;
use hourglass_core::trace_context;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::v1::{BatchAck, BatchStatus, Event, EventRejection, RejectionReason};
use tokio::time::Instant;
use tracing::Instrument;

use crate::cardinality::CardinalityTracker;
use crate::config::{CollectorConfig, RecordLayout};
use crate::memory::{MemoryBudget, StreamCounts};
use crate::quota::{Budget, Quotas};
use crate::telemetry;
use crate::validate::{Rejection, ValidationClock};
use hourglass_grpc::auth::{Authenticator, Principal};

/// How long a client is told to wait after Kafka failed to confirm its batch.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_millis(1000);

/// What to do with an over-quota batch.
#[derive(Clone, Copy, Debug)]
pub enum ThrottlePolicy {
    /// Ack it as throttled at once, with a retry-after (bidirectional and unary calls).
    Reject,
    /// Hold it, up to this long, until the quota allows it (client streams: the wait is backpressure).
    WaitUpTo(Duration),
}

/// The collector's shared state: everything a batch needs.
pub struct Collector<K, L> {
    pub(crate) config: CollectorConfig,
    pub(crate) authenticator: Arc<Authenticator<K>>,
    event_log: Arc<L>,
    quotas: Quotas,
    collector_id: String,
    batch_counter: AtomicU64,
    /// Decoded batches held at once (`--max-in-flight-bytes`).
    pub(crate) memory_budget: MemoryBudget,
    /// Open streams per customer (`--max-streams-per-customer`).
    pub(crate) open_streams: StreamCounts,
    /// The names each customer-hour has used, for the cardinality limits.
    cardinality: CardinalityTracker,
}

impl<K: KeyStore, L: EventLog> Collector<K, L> {
    /// Shared state for one collector process.
    pub fn new(config: CollectorConfig, key_store: Arc<K>, event_log: Arc<L>) -> Self {
        let authenticator = Arc::new(Authenticator::new(key_store, config.key_cache.clone()));
        let collector_id = config.resolved_collector_id();
        let memory_budget = MemoryBudget::new(config.streams.max_in_flight_bytes);
        let open_streams = StreamCounts::new(config.streams.max_streams_per_customer);
        let cardinality = CardinalityTracker::new(config.cardinality.tracker_max_names);
        Self {
            cardinality,
            memory_budget,
            open_streams,
            config,
            authenticator,
            event_log,
            quotas: Quotas::default(),
            collector_id,
            batch_counter: AtomicU64::new(0),
        }
    }

    /// The event log batches are appended to.
    pub fn event_log(&self) -> &Arc<L> {
        &self.event_log
    }

    /// Validates, admits and starts publishing one batch; the returned future yields its ack.
    ///
    /// Both run in one `collector.batch` span, from validation to the log's confirmation; its trace
    /// context goes into the headers of every record the batch becomes (`hourglass_core::trace_context`),
    /// so the ingestor's span of each record continues this trace. The span is a root: a stream's
    /// batches are separate traces.
    pub async fn begin_batch(
        &self,
        principal: &Principal,
        sequence: u64,
        events: Vec<Event>,
        policy: ThrottlePolicy,
    ) -> BoxFuture<'static, BatchAck> {
        let batch_span = tracing::info_span!(
            parent: None,
            "collector.batch",
            customer_id = principal.customer_id.as_str(),
            batch_size = events.len(),
            batch_id = tracing::field::Empty,
        );
        let acked = self.begin_batch_in_span(principal, sequence, events, policy).instrument(batch_span.clone()).await;
        acked.instrument(batch_span).boxed()
    }

    async fn begin_batch_in_span(
        &self,
        principal: &Principal,
        sequence: u64,
        events: Vec<Event>,
        policy: ThrottlePolicy,
    ) -> BoxFuture<'static, BatchAck> {
        let received_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let received_at_unix_ms = i64::try_from(received_at.as_millis()).unwrap_or(i64::MAX);
        let clock = ValidationClock { received_at_unix_secs: received_at_unix_ms / 1000 };
        let receipt_hour = hour::hour_start(clock.received_at_unix_secs);
        let batch_size = events.len();
        if batch_size == 0 {
            return futures::future::ready(ack(sequence, BatchStatus::Accepted)).boxed();
        }
        let batch = PendingBatch {
            customer_id: principal.customer_id.as_str().to_owned(),
            received_at_unix_ms,
            batch_id: uuid::Uuid::now_v7().to_string(),
        };
        tracing::Span::current().record("batch_id", batch.batch_id.as_str());
        let key_spread = principal.limits.kafka_key_spread.unwrap_or(1);
        let partition_key = record::partition_key(
            &principal.customer_id,
            key_spread,
            self.batch_counter.fetch_add(1, Ordering::Relaxed),
        );
        if let Err(limit) = self.config.limits.check_batch(batch_size, 0) {
            return self.invalid_batch(&batch, partition_key, sequence, batch_size, receipt_hour, limit.to_string());
        }

        let mut outcomes = OutcomeCounter::default();
        let mut accepted = Vec::with_capacity(batch_size);
        let mut rejections = Vec::new();
        // Field checks first, then the customer's cardinality limits over the events that passed them
        // (one lock for the whole batch), so a malformed event never takes a type's place.
        let checked: Vec<Result<i64, Rejection>> =
            events.iter().map(|event| self.config.limits.check_event(event, clock)).collect();
        let cardinality_limits = self.config.cardinality.limits_for(&principal.limits);
        let mut cardinality = self
            .cardinality
            .check_batch(
                &principal.customer_id,
                cardinality_limits,
                events.iter().zip(&checked).filter_map(|(event, checked)| Some((event, *checked.as_ref().ok()?))),
            )
            .into_iter();
        for (index, (event, checked)) in events.into_iter().zip(checked).enumerate() {
            let checked = checked.and_then(|event_hour| {
                cardinality.next().expect("one cardinality result per valid event").map(|()| event_hour)
            });
            match checked {
                Ok(event_hour) => {
                    outcomes.add(event_hour, Outcome::Accepted, RejectionReason::Unspecified, 1);
                    accepted.push(event);
                }
                Err(Rejection { reason, message, hour_start }) => {
                    let event_hour = hour_start.unwrap_or(receipt_hour);
                    outcomes.add(event_hour, Outcome::Rejected, reason, 1);
                    rejections.push(EventRejection { index: index as u32, reason: reason.into(), message });
                }
            }
        }
        let accepted_count = accepted.len() as u32;

        if accepted.is_empty() {
            record_rejections(&rejections);
            let ack = BatchAck { rejections, ..ack(sequence, BatchStatus::Accepted) };
            let outcome_record = self.encode(&batch, Vec::new(), outcomes.into_counts(), partition_key);
            return self.publish_outcome_only(outcome_record, ack);
        }

        let records = self.encode_accepted(&batch, accepted, outcomes.counts(), partition_key.clone());
        let encoded_bytes: usize = records.iter().map(|record| record.payload.len()).sum();
        if let Err(limit) = self.config.limits.check_batch(batch_size, encoded_bytes) {
            return self.invalid_batch(&batch, partition_key, sequence, batch_size, receipt_hour, limit.to_string());
        }
        record_rejections(&rejections);

        if let Err(retry_after) = self.admit(principal, accepted_count, policy).await {
            metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "throttled").increment(u64::from(accepted_count));
            metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "throttled").increment(1);
            outcomes.throttle_accepted();
            let outcome_record = self.encode(&batch, Vec::new(), outcomes.into_counts(), partition_key);
            let ack = BatchAck {
                retry_after_ms: u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX).max(1),
                ..ack(sequence, BatchStatus::Throttled)
            };
            return self.publish_outcome_only(outcome_record, ack);
        }

        let started = Instant::now();
        let appends: Vec<_> = records.into_iter().map(|record| self.event_log.append(Topic::Events, record)).collect();
        async move {
            let results = futures::future::join_all(appends).await;
            metrics::histogram!(telemetry::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
            match results.into_iter().find_map(Result::err) {
                None => {
                    metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "accepted").increment(u64::from(accepted_count));
                    metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "accepted").increment(1);
                    BatchAck { accepted_count, rejections, ..ack(sequence, BatchStatus::Accepted) }
                }
                Some(error) => {
                    tracing::warn!(%error, batch_size, "event log did not confirm a batch; the client is told to retry");
                    metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "unavailable").increment(batch_size as u64);
                    metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "unavailable").increment(1);
                    unavailable_ack(sequence, &error)
                }
            }
        }
        .boxed()
    }

    async fn admit(&self, principal: &Principal, events: u32, policy: ThrottlePolicy) -> Result<(), Duration> {
        let budget = Budget {
            events_per_second: principal
                .limits
                .events_per_second
                .unwrap_or(self.config.quota.default_events_per_second),
            burst_events: principal.limits.burst_events.unwrap_or(self.config.quota.default_burst_events),
        };
        let mut waited = Duration::ZERO;
        loop {
            match self.quotas.try_admit(&principal.customer_id, budget, events, Instant::now()) {
                Ok(()) => return Ok(()),
                Err(retry_after) => match policy {
                    ThrottlePolicy::WaitUpTo(max_wait) if waited + retry_after <= max_wait => {
                        tokio::time::sleep(retry_after).await;
                        waited += retry_after;
                    }
                    _ => return Err(retry_after),
                },
            }
        }
    }

    /// Refuses a batch whole; its events are counted as rejected in the hour of receipt.
    fn invalid_batch(
        &self,
        batch: &PendingBatch,
        partition_key: String,
        sequence: u64,
        batch_size: usize,
        receipt_hour: i64,
        message: String,
    ) -> BoxFuture<'static, BatchAck> {
        metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "rejected").increment(batch_size as u64);
        metrics::counter!(telemetry::REJECTED_EVENTS_TOTAL, "reason" => RejectionReason::BatchInvalid.as_str_name())
            .increment(batch_size as u64);
        metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "invalid").increment(1);
        let mut outcomes = OutcomeCounter::default();
        let count = u32::try_from(batch_size).unwrap_or(u32::MAX);
        outcomes.add(receipt_hour, Outcome::Rejected, RejectionReason::BatchInvalid, count);
        let outcome_record = self.encode(batch, Vec::new(), outcomes.into_counts(), partition_key);
        self.publish_outcome_only(
            outcome_record,
            BatchAck { error_message: message, ..ack(sequence, BatchStatus::Invalid) },
        )
    }

    fn publish_outcome_only(&self, outcome_record: LogRecord, ack: BatchAck) -> BoxFuture<'static, BatchAck> {
        let append = self.event_log.append(Topic::Events, outcome_record);
        async move {
            if let Err(error) = append.await {
                tracing::warn!(%error, "outcome record not published: the ledger will miss this batch's outcomes");
                metrics::counter!(telemetry::OUTCOME_RECORDS_LOST_TOTAL).increment(1);
            }
            if ack.status == BatchStatus::Accepted as i32 {
                metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "accepted").increment(1);
            }
            ack
        }
        .boxed()
    }

    fn encode_accepted(
        &self,
        batch: &PendingBatch,
        accepted: Vec<Event>,
        outcomes: Vec<OutcomeCount>,
        partition_key: String,
    ) -> Vec<LogRecord> {
        match self.config.record_layout {
            RecordLayout::Batch => vec![self.encode(batch, accepted, outcomes, partition_key)],
            RecordLayout::Event => {
                // Each record carries its own event's "accepted" count; the first also carries the rest.
                let (_, mut other_outcomes): (Vec<_>, Vec<_>) =
                    outcomes.into_iter().partition(|count| count.outcome == Outcome::Accepted as i32);
                accepted
                    .into_iter()
                    .map(|event| {
                        let event_hour =
                            hour::hour_start(event.occurred_at.as_ref().map(|time| time.seconds).unwrap_or_default());
                        let mut own_outcomes = std::mem::take(&mut other_outcomes);
                        own_outcomes.push(OutcomeCount {
                            hour_start_unix_secs: event_hour,
                            outcome: Outcome::Accepted.into(),
                            reason: RejectionReason::Unspecified.into(),
                            count: 1,
                        });
                        self.encode(batch, vec![event], own_outcomes, partition_key.clone())
                    })
                    .collect()
            }
        }
    }

    fn encode(&self, batch: &PendingBatch, events: Vec<Event>, outcomes: Vec<OutcomeCount>, key: String) -> LogRecord {
        let batch_record = EventBatchRecord {
            customer_id: batch.customer_id.clone(),
            received_at_unix_ms: batch.received_at_unix_ms,
            batch_id: batch.batch_id.clone(),
            collector_id: self.collector_id.clone(),
            events,
            outcomes,
        };
        let mut log_record = record::encode(key, &batch_record);
        // Called inside the batch's span (`begin_batch`), so the record carries its context.
        trace_context::inject_span_context(&tracing::Span::current(), &mut log_record.headers);
        log_record
    }
}

struct PendingBatch {
    customer_id: String,
    received_at_unix_ms: i64,
    batch_id: String,
}

fn ack(sequence: u64, status: BatchStatus) -> BatchAck {
    BatchAck { sequence, status: status.into(), ..Default::default() }
}

fn unavailable_ack(sequence: u64, error: &EventLogError) -> BatchAck {
    BatchAck {
        retry_after_ms: UNAVAILABLE_RETRY_AFTER.as_millis() as u32,
        error_message: format!("not acknowledged, send the batch again: {error}"),
        ..ack(sequence, BatchStatus::Unavailable)
    }
}

fn record_rejections(rejections: &[EventRejection]) {
    if rejections.is_empty() {
        return;
    }
    metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "rejected").increment(rejections.len() as u64);
    for rejection in rejections {
        let reason = RejectionReason::try_from(rejection.reason).unwrap_or(RejectionReason::Unspecified);
        metrics::counter!(telemetry::REJECTED_EVENTS_TOTAL, "reason" => reason.as_str_name()).increment(1);
    }
}

/// Outcome counts of one batch, per (hour, outcome, reason). A batch spans few hours, so a small vector
/// with linear search beats a map.
#[derive(Default)]
struct OutcomeCounter {
    counts: Vec<OutcomeCount>,
}

impl OutcomeCounter {
    fn add(&mut self, hour_start: i64, outcome: Outcome, reason: RejectionReason, count: u32) {
        let (outcome, reason) = (i32::from(outcome), i32::from(reason));
        match self.counts.iter_mut().find(|existing| {
            existing.hour_start_unix_secs == hour_start && existing.outcome == outcome && existing.reason == reason
        }) {
            Some(existing) => existing.count += count,
            None => self.counts.push(OutcomeCount { hour_start_unix_secs: hour_start, outcome, reason, count }),
        }
    }

    /// Turns the accepted counts into throttled ones: the batch was refused by the quota.
    fn throttle_accepted(&mut self) {
        for count in &mut self.counts {
            if count.outcome == Outcome::Accepted as i32 {
                count.outcome = Outcome::Throttled.into();
            }
        }
    }

    fn counts(&self) -> Vec<OutcomeCount> {
        self.counts.clone()
    }

    fn into_counts(self) -> Vec<OutcomeCount> {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_per_hour_outcome_and_reason() {
        let mut counter = OutcomeCounter::default();
        counter.add(0, Outcome::Accepted, RejectionReason::Unspecified, 1);
        counter.add(0, Outcome::Accepted, RejectionReason::Unspecified, 1);
        counter.add(3600, Outcome::Accepted, RejectionReason::Unspecified, 1);
        counter.add(0, Outcome::Rejected, RejectionReason::EventIdEmpty, 1);
        counter.add(0, Outcome::Rejected, RejectionReason::EventTypeEmpty, 1);
        assert_eq!(counter.counts.len(), 4);
        assert_eq!(counter.counts[0].count, 2);
        counter.throttle_accepted();
        let throttled: u32 = counter
            .counts
            .iter()
            .filter(|count| count.outcome == Outcome::Throttled as i32)
            .map(|count| count.count)
            .sum();
        assert_eq!(throttled, 3);
        assert!(counter.counts.iter().all(|count| count.outcome != Outcome::Accepted as i32));
    }
}
