//! One batch's way through the collector: read → validate → encode → admit (quota) → append → ack.
//!
//! A batch arrives as encoded events (`hourglass_proto::wire`); each is read in place and, if
//! accepted, copied into the record as it came (`event_view` says which events are decoded instead,
//! and why), so an event is never decoded into owned structs and encoded again on the common path.
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

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, EventLogError, LogRecord, Topic};
use hourglass_core::hour;
use hourglass_core::key_store::KeyStore;
use hourglass_core::record;
use hourglass_core::trace_context;
use hourglass_core::tracking_plan::store::PlanStore;
use hourglass_core::tracking_plan::{CompiledPlan, EventCheck, PlanMode, PlanValue, PlanViolation, ViolationAction};
use hourglass_proto::log::v1::{Outcome, OutcomeCount, PlanCheckCount};
use hourglass_proto::v1::{BatchAck, BatchStatus, EventRejection, RejectionReason};
use hourglass_proto::wire;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cardinality::{CardinalityLimits, CardinalityTracker};
use crate::config::{CollectorConfig, RecordLayout};
use crate::error::CollectorError;
use crate::event_view::{EventFields, PropertyRef, ReadEvent};
use crate::memory::{MemoryBudget, StreamCounts};
use crate::plans::PlanCache;
use crate::quota::{Budget, Quotas};
use crate::telemetry;
use crate::validate::{PropertyVisitor, Rejection, ValidationClock, ValidationLimits};
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
pub struct Collector<K, P, L> {
    pub(crate) config: CollectorConfig,
    pub(crate) authenticator: Arc<Authenticator<K>>,
    /// Customers' tracking plans, compiled.
    plans: PlanCache<P>,
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

impl<K: KeyStore, P: PlanStore, L: EventLog> Collector<K, P, L> {
    /// Shared state for one collector process.
    pub fn new(config: CollectorConfig, key_store: Arc<K>, plan_store: Arc<P>, event_log: Arc<L>) -> Self {
        let authenticator = Arc::new(Authenticator::new(key_store, config.key_cache.clone()));
        let plans = PlanCache::new(plan_store, &config.plan_cache);
        let collector_id = config.resolved_collector_id();
        let memory_budget = MemoryBudget::new(config.streams.max_in_flight_bytes);
        let open_streams = StreamCounts::new(config.streams.max_streams_per_customer);
        let cardinality = CardinalityTracker::new(config.cardinality.tracker_max_names);
        Self {
            plans,
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

    /// Validates, admits and starts publishing one batch of encoded events; the returned future yields
    /// its ack. An event that is no `hourglass.v1.Event` at all fails the batch before anything is
    /// published, as it failed the call when tonic decoded the events ([`CollectorError::UndecodableEvent`]).
    ///
    /// Both run in one `collector.batch` span, from validation to the log's confirmation; its trace
    /// context goes into the headers of every record the batch becomes (`hourglass_core::trace_context`),
    /// so the ingestor's span of each record continues this trace. The span is a root: a stream's
    /// batches are separate traces.
    pub async fn begin_batch(
        &self,
        principal: &Principal,
        sequence: u64,
        events: Vec<Bytes>,
        policy: ThrottlePolicy,
    ) -> Result<BoxFuture<'static, BatchAck>, CollectorError> {
        let batch_span = tracing::info_span!(
            parent: None,
            "collector.batch",
            customer_id = principal.customer_id.as_str(),
            batch_size = events.len(),
            batch_id = tracing::field::Empty,
        );
        let acked =
            self.begin_batch_in_span(principal, sequence, events, policy).instrument(batch_span.clone()).await?;
        Ok(acked.instrument(batch_span).boxed())
    }

    async fn begin_batch_in_span(
        &self,
        principal: &Principal,
        sequence: u64,
        events: Vec<Bytes>,
        policy: ThrottlePolicy,
    ) -> Result<BoxFuture<'static, BatchAck>, CollectorError> {
        let received_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let received_at_unix_ms = i64::try_from(received_at.as_millis()).unwrap_or(i64::MAX);
        let clock = ValidationClock { received_at_unix_secs: received_at_unix_ms / 1000 };
        let receipt_hour = hour::hour_start(clock.received_at_unix_secs);
        let batch_size = events.len();
        if batch_size == 0 {
            return Ok(futures::future::ready(ack(sequence, BatchStatus::Accepted)).boxed());
        }
        let read = read_events(&events)?;
        let plan = match self.plans.plan_for(&principal.customer_id).await {
            Ok(plan) => plan,
            Err(error) => {
                tracing::warn!(%error, "batch not accepted: its customer's tracking plan is unknown");
                metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "unavailable").increment(batch_size as u64);
                metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "unavailable").increment(1);
                let ack = BatchAck {
                    retry_after_ms: UNAVAILABLE_RETRY_AFTER.as_millis() as u32,
                    error_message: format!("not acknowledged, send the batch again: {error}"),
                    ..ack(sequence, BatchStatus::Unavailable)
                };
                return Ok(futures::future::ready(ack).boxed());
            }
        };
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
            let refused =
                self.invalid_batch(&batch, partition_key, sequence, batch_size, receipt_hour, limit.to_string());
            return Ok(refused);
        }

        let cardinality_limits = self.config.cardinality.limits_for(&principal.limits);
        let CheckedEvents { accepted, rejections, mut outcomes, plan_checks } = check_events(
            &self.config.limits,
            &self.cardinality,
            &principal.customer_id,
            cardinality_limits,
            plan.as_deref(),
            clock,
            read,
        );
        let accepted_count = accepted.len() as u32;
        record_plan_checks(&plan_checks);

        if accepted.is_empty() {
            record_rejections(&rejections);
            let ack = BatchAck { rejections, ..ack(sequence, BatchStatus::Accepted) };
            let outcome_record = self.encode(&batch, Vec::new(), outcomes.into_counts(), plan_checks, partition_key);
            return Ok(self.publish_outcome_only(outcome_record, ack));
        }

        let records =
            self.encode_accepted(&batch, accepted, outcomes.counts(), plan_checks.clone(), partition_key.clone());
        let encoded_bytes: usize = records.iter().map(|record| record.payload.len()).sum();
        if let Err(limit) = self.config.limits.check_batch(batch_size, encoded_bytes) {
            let refused =
                self.invalid_batch(&batch, partition_key, sequence, batch_size, receipt_hour, limit.to_string());
            return Ok(refused);
        }
        record_rejections(&rejections);

        if let Err(retry_after) = self.admit(principal, accepted_count, policy).await {
            metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "throttled").increment(u64::from(accepted_count));
            metrics::counter!(telemetry::BATCHES_TOTAL, "status" => "throttled").increment(1);
            outcomes.throttle_accepted();
            let outcome_record = self.encode(&batch, Vec::new(), outcomes.into_counts(), plan_checks, partition_key);
            let ack = BatchAck {
                retry_after_ms: u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX).max(1),
                ..ack(sequence, BatchStatus::Throttled)
            };
            return Ok(self.publish_outcome_only(outcome_record, ack));
        }

        let started = Instant::now();
        let appends: Vec<_> = records.into_iter().map(|record| self.event_log.append(Topic::Events, record)).collect();
        let acked = async move {
            let results = futures::future::join_all(appends).await;
            metrics::histogram!(telemetry::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
            match results.into_iter().find_map(Result::err) {
                None => {
                    metrics::counter!(telemetry::EVENTS_TOTAL, "outcome" => "accepted")
                        .increment(u64::from(accepted_count));
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
        };
        Ok(acked.boxed())
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
        let outcome_record = self.encode(batch, Vec::new(), outcomes.into_counts(), Vec::new(), partition_key);
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
        accepted: Vec<AcceptedEvent>,
        outcomes: Vec<OutcomeCount>,
        plan_checks: Vec<PlanCheckCount>,
        partition_key: String,
    ) -> Vec<LogRecord> {
        match self.config.record_layout {
            RecordLayout::Batch => {
                let events = accepted.into_iter().map(|event| event.bytes).collect();
                vec![self.encode(batch, events, outcomes, plan_checks, partition_key)]
            }
            RecordLayout::Event => {
                // Each record carries its own event's "accepted" count; the first also carries the rest,
                // and the plan checks.
                let (_, mut other_outcomes): (Vec<_>, Vec<_>) =
                    outcomes.into_iter().partition(|count| count.outcome == Outcome::Accepted as i32);
                let mut plan_checks = plan_checks;
                accepted
                    .into_iter()
                    .map(|event| {
                        let mut own_outcomes = std::mem::take(&mut other_outcomes);
                        let own_plan_checks = std::mem::take(&mut plan_checks);
                        own_outcomes.push(OutcomeCount {
                            hour_start_unix_secs: event.hour_start,
                            outcome: Outcome::Accepted.into(),
                            reason: RejectionReason::Unspecified.into(),
                            count: 1,
                        });
                        self.encode(batch, vec![event.bytes], own_outcomes, own_plan_checks, partition_key.clone())
                    })
                    .collect()
            }
        }
    }

    /// The record of `events` (encoded, copied into the record as they are) and `outcomes`: the wire
    /// view writes exactly the public `EventBatchRecord`.
    fn encode(
        &self,
        batch: &PendingBatch,
        events: Vec<Bytes>,
        outcomes: Vec<OutcomeCount>,
        plan_checks: Vec<PlanCheckCount>,
        key: String,
    ) -> LogRecord {
        let batch_record = wire::log::v1::EventBatchRecord {
            plan_checks,
            customer_id: batch.customer_id.clone(),
            received_at_unix_ms: batch.received_at_unix_ms,
            batch_id: batch.batch_id.clone(),
            collector_id: self.collector_id.clone(),
            events,
            outcomes,
        };
        let mut log_record = record::encode_wire(key, &batch_record);
        // Called inside the batch's span (`begin_batch`), so the record carries its context.
        trace_context::inject_span_context(&tracing::Span::current(), &mut log_record.headers);
        log_record
    }
}

/// One accepted event: the bytes its record carries, and its hour.
pub(crate) struct AcceptedEvent {
    bytes: Bytes,
    hour_start: i64,
}

/// What checking a batch's events found.
pub(crate) struct CheckedEvents {
    /// The accepted events, in batch order.
    accepted: Vec<AcceptedEvent>,
    /// The rejected events, in batch order.
    rejections: Vec<EventRejection>,
    /// The outcome of every event, per hour.
    outcomes: OutcomeCounter,
    /// What the customer's tracking plan checked and found, per hour.
    plan_checks: Vec<PlanCheckCount>,
}

/// The tracking plan's check of one event, fed each property by validation's walk over them
/// ([`ValidationLimits::check_event_visiting`]), so the plan costs no walk of its own.
impl<'e> PropertyVisitor<'e> for EventCheck<'_, 'e> {
    #[inline]
    fn visit(&mut self, name: &'e str, value: PropertyRef<'e>) {
        self.property(name, PlanValue::from(value));
    }
}

/// What a batch's events found against the customer's tracking plan, per hour: every valid event counts
/// as checked (one counter per hour: a batch has one plan version), and an event that broke a rule
/// also under its (hour, type, rule, rejected), a row found by linear search on this rarer path.
struct PlanChecks {
    plan_version: u32,
    /// (hour, events checked), in the order the hours were first seen.
    checked: Vec<(i64, u32)>,
    violations: Vec<PlanCheckCount>,
}

impl PlanChecks {
    fn new(plan_version: u32) -> Self {
        Self { plan_version, checked: Vec::new(), violations: Vec::new() }
    }

    /// Counts one valid event checked in `hour_start` and its first violation, if any; `Err` when the
    /// violation rejects it.
    #[inline]
    fn add(&mut self, hour_start: i64, event_type: &str, violation: Option<PlanViolation>) -> Result<(), Rejection> {
        match self.checked.iter_mut().find(|(hour, _)| *hour == hour_start) {
            Some((_, count)) => *count += 1,
            None => self.checked.push((hour_start, 1)),
        }
        let Some(violation) = violation else {
            return Ok(());
        };
        let rejected = violation.action == ViolationAction::Reject;
        let reason = violation.rule.reason();
        self.add_violation(hour_start, event_type, reason, rejected);
        if rejected {
            return Err(Rejection { reason, message: violation.message, hour_start: Some(hour_start) });
        }
        Ok(())
    }

    fn add_violation(&mut self, hour_start: i64, event_type: &str, rule: RejectionReason, rejected: bool) {
        let rule = i32::from(rule);
        match self.violations.iter_mut().find(|count| {
            count.hour_start_unix_secs == hour_start
                && count.rule == rule
                && count.rejected == rejected
                && count.event_type == event_type
        }) {
            Some(count) => count.count += 1,
            None => self.violations.push(PlanCheckCount {
                hour_start_unix_secs: hour_start,
                plan_version: self.plan_version,
                event_type: event_type.to_owned(),
                rule,
                rejected,
                count: 1,
            }),
        }
    }

    /// The record's rows: per hour the events checked (no type, no rule), then the violations.
    fn into_counts(self) -> Vec<PlanCheckCount> {
        let plan_version = self.plan_version;
        let checked = self.checked.into_iter().map(|(hour_start, count)| PlanCheckCount {
            hour_start_unix_secs: hour_start,
            plan_version,
            event_type: String::new(),
            rule: RejectionReason::Unspecified.into(),
            rejected: false,
            count,
        });
        checked.chain(self.violations).collect()
    }
}

/// Counts a batch's plan violations in the metrics, once per row (never per event).
fn record_plan_checks(plan_checks: &[PlanCheckCount]) {
    for count in plan_checks.iter().filter(|count| count.rule != RejectionReason::Unspecified as i32) {
        let reason = RejectionReason::try_from(count.rule).unwrap_or(RejectionReason::Unspecified);
        let rule = reason.as_str_name().strip_prefix("REJECTION_REASON_").unwrap_or(reason.as_str_name());
        let action = if count.rejected { "rejected" } else { "warned" };
        metrics::counter!(telemetry::PLAN_VIOLATIONS_TOTAL, "rule" => rule, "action" => action)
            .increment(u64::from(count.count));
    }
}

/// Reads each event of a batch (`event_view`: in place when it is in the plain form, decoded by prost
/// otherwise); an error names the first event that is no `hourglass.v1.Event`.
fn read_events(events: &[Bytes]) -> Result<Vec<(&Bytes, ReadEvent<'_>)>, CollectorError> {
    events
        .iter()
        .enumerate()
        .map(|(index, bytes)| match ReadEvent::read(bytes) {
            Ok(event) => Ok((bytes, event)),
            Err(source) => Err(CollectorError::UndecodableEvent { index, source }),
        })
        .collect()
}

/// Checks the events of a batch: field checks first, then the customer's cardinality limits over the
/// events that passed them (one lock for the whole batch), so a malformed event never takes a type's
/// place. The customer's tracking plan, if any, checks the events that passed the field checks, before
/// the cardinality limits, so an event the plan rejects takes no type's place either. Accepted events
/// keep their bytes as read (a decoded one is encoded again).
pub(crate) fn check_events(
    limits: &ValidationLimits,
    cardinality: &CardinalityTracker,
    customer_id: &CustomerId,
    cardinality_limits: CardinalityLimits,
    plan: Option<&CompiledPlan>,
    clock: ValidationClock,
    events: Vec<(&Bytes, ReadEvent<'_>)>,
) -> CheckedEvents {
    let receipt_hour = hour::hour_start(clock.received_at_unix_secs);
    let mut outcomes = OutcomeCounter::default();
    let mut accepted = Vec::with_capacity(events.len());
    let mut rejections = Vec::new();
    let mut planned = plan.map(|compiled| (compiled, PlanChecks::new(compiled.version())));
    let checked: Vec<Result<i64, Rejection>> = events
        .iter()
        .map(|(_, event)| {
            let Some((compiled, plan_checks)) = planned.as_mut() else {
                return check_read_event(limits, event, clock, &mut ());
            };
            if compiled.mode() == PlanMode::Off {
                // Counted as checked, as every valid event is under a plan; nothing to visit.
                let event_hour = check_read_event(limits, event, clock, &mut ())?;
                plan_checks.add(event_hour, event.event_type(), None)?;
                return Ok(event_hour);
            }
            // The plan checks each property in validation's walk; what it found counts only for an
            // event that passed validation.
            let mut plan_check = compiled.start(event.event_type());
            let event_hour = check_read_event(limits, event, clock, &mut plan_check)?;
            plan_checks.add(event_hour, event.event_type(), plan_check.finish())?;
            Ok(event_hour)
        })
        .collect();
    let mut cardinality_results = cardinality
        .check_batch(
            customer_id,
            cardinality_limits,
            events.iter().zip(&checked).filter_map(|((_, event), checked)| Some((event, *checked.as_ref().ok()?))),
        )
        .into_iter();
    for (index, ((bytes, event), checked)) in events.iter().zip(checked).enumerate() {
        let checked = checked.and_then(|event_hour| {
            cardinality_results.next().expect("one cardinality result per valid event").map(|()| event_hour)
        });
        match checked {
            Ok(event_hour) => {
                outcomes.add(event_hour, Outcome::Accepted, RejectionReason::Unspecified, 1);
                accepted.push(AcceptedEvent { bytes: event.record_bytes(bytes), hour_start: event_hour });
            }
            Err(Rejection { reason, message, hour_start }) => {
                let event_hour = hour_start.unwrap_or(receipt_hour);
                outcomes.add(event_hour, Outcome::Rejected, reason, 1);
                rejections.push(EventRejection { index: index as u32, reason: reason.into(), message });
            }
        }
    }
    let plan_checks = planned.map(|(_, plan_checks)| plan_checks.into_counts()).unwrap_or_default();
    CheckedEvents { accepted, rejections, outcomes, plan_checks }
}

/// Validates one read event, handing its properties to `visitor`: dispatched on the event's form once
/// here, so each form's walk is compiled for that form. Through `ReadEvent`'s own accessors every field
/// and property pays a match on the form, which doubled validation's cost (~80 → ~160 ns per event of the
/// tracking-plan bench, measured in process) and nearly doubled the plan's (~95 → ~155 ns).
#[inline]
fn check_read_event<'e>(
    limits: &ValidationLimits,
    event: &'e ReadEvent<'_>,
    clock: ValidationClock,
    visitor: &mut impl PropertyVisitor<'e>,
) -> Result<i64, Rejection> {
    match event {
        ReadEvent::View(view) => limits.check_event_visiting(view, clock, visitor),
        ReadEvent::Decoded(decoded) => limits.check_event_visiting(decoded, clock, visitor),
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
    use hourglass_proto::log::v1::EventBatchRecord;

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

    /// What the collector did before events were read in place: decode each with prost, validate the
    /// decoded event, encode the accepted ones in the public record.
    fn old_path(
        limits: &ValidationLimits,
        customer_id: &CustomerId,
        clock: ValidationClock,
        events: &[Bytes],
    ) -> (Vec<EventRejection>, Vec<OutcomeCount>, EventBatchRecord) {
        use hourglass_proto::v1::Event;
        use prost::Message;
        let decoded: Vec<Event> = events.iter().map(|bytes| Event::decode(bytes.as_ref()).unwrap()).collect();
        let receipt_hour = hour::hour_start(clock.received_at_unix_secs);
        let cardinality = CardinalityTracker::new(1000);
        let checked: Vec<Result<i64, Rejection>> =
            decoded.iter().map(|event| limits.check_event(event, clock)).collect();
        let mut cardinality_results = cardinality
            .check_batch(
                customer_id,
                cardinality_limits(),
                decoded.iter().zip(&checked).filter_map(|(event, checked)| Some((event, *checked.as_ref().ok()?))),
            )
            .into_iter();
        let mut outcomes = OutcomeCounter::default();
        let (mut accepted, mut rejections) = (Vec::new(), Vec::new());
        for (index, (event, checked)) in decoded.into_iter().zip(checked).enumerate() {
            match checked.and_then(|hour| cardinality_results.next().unwrap().map(|()| hour)) {
                Ok(hour) => {
                    outcomes.add(hour, Outcome::Accepted, RejectionReason::Unspecified, 1);
                    accepted.push(event);
                }
                Err(Rejection { reason, message, hour_start }) => {
                    outcomes.add(hour_start.unwrap_or(receipt_hour), Outcome::Rejected, reason, 1);
                    rejections.push(EventRejection { index: index as u32, reason: reason.into(), message });
                }
            }
        }
        let record = EventBatchRecord { customer_id: customer_id.to_string(), events: accepted, ..Default::default() };
        (rejections, outcomes.into_counts(), record)
    }

    fn cardinality_limits() -> CardinalityLimits {
        CardinalityLimits { max_event_types_per_hour: 3, max_property_names_per_event_type: 4 }
    }

    /// The new path over `events`: its rejections, outcomes and record (decoded).
    fn new_path(
        limits: &ValidationLimits,
        customer_id: &CustomerId,
        clock: ValidationClock,
        events: &[Bytes],
    ) -> (Vec<EventRejection>, Vec<OutcomeCount>, EventBatchRecord, Vec<u8>) {
        let cardinality = CardinalityTracker::new(1000);
        let read = read_events(events).unwrap();
        let CheckedEvents { accepted, rejections, outcomes, .. } =
            check_events(limits, &cardinality, customer_id, cardinality_limits(), None, clock, read);
        let wire_record = wire::log::v1::EventBatchRecord {
            customer_id: customer_id.to_string(),
            events: accepted.into_iter().map(|event| event.bytes).collect(),
            ..Default::default()
        };
        let payload = record::encode_wire(customer_id.to_string(), &wire_record).payload;
        let decoded = record::decode(Some(b"1"), &payload).unwrap();
        (rejections, outcomes.into_counts(), decoded, payload)
    }

    fn events_of_every_kind(now: i64) -> Vec<Bytes> {
        use hourglass_proto::prost_types::Timestamp;
        use hourglass_proto::v1::{Event, PropertyValue, property_value::Kind};
        use prost::Message;
        let value = |kind: Kind| PropertyValue { kind: Some(kind) };
        let valid = |id: &str, event_type: &str| Event {
            event_id: id.into(),
            event_type: event_type.into(),
            occurred_at: Some(Timestamp { seconds: now - 60, nanos: 7 }),
            user_id: Some(format!("user-{id}")),
            properties: [
                ("path".to_owned(), value(Kind::StringValue(format!("/p/{id}")))),
                ("amount".to_owned(), value(Kind::NumberValue(12.5))),
            ]
            .into_iter()
            .collect(),
        };
        let encoded = |event: &Event| Bytes::from(event.encode_to_vec());
        let mut events = vec![
            encoded(&valid("a", "view")),
            encoded(&Event { event_type: String::new(), ..valid("b", "view") }),
            encoded(&Event { occurred_at: None, ..valid("c", "view") }),
            encoded(&Event { occurred_at: Some(Timestamp { seconds: now + 86_400, nanos: 0 }), ..valid("d", "view") }),
            encoded(&Event { user_id: Some("u".repeat(300)), ..valid("e", "view") }),
            encoded(&valid("f", "click")),
            encoded(&valid("g", "buy")),
            // A fourth type this hour: over the cardinality limit of 3.
            encoded(&valid("h", "share")),
            encoded(&Event { event_id: "x".repeat(129), ..valid("i", "view") }),
        ];
        let mut too_many_names = valid("j", "view");
        for name in ["p1", "p2", "p3"] {
            too_many_names.properties.insert(name.into(), value(Kind::BoolValue(true)));
        }
        events.push(encoded(&too_many_names));
        // Two bad properties, encoded out of order: the one whose name sorts first is reported.
        let mut out_of_order = valid("k", "view").encode_to_vec();
        for (name, property) in [("zz", value(Kind::NumberValue(f64::INFINITY))), ("aa", PropertyValue { kind: None })]
        {
            let mut entry = Vec::new();
            prost::encoding::string::encode(1, &name.to_owned(), &mut entry);
            prost::encoding::message::encode(2, &property, &mut entry);
            prost::encoding::bytes::encode(5, &entry, &mut out_of_order);
        }
        events.push(Bytes::from(out_of_order));
        // An unknown field and a repeated id: decoded and encoded again (the id "m2" wins).
        let mut unknown = valid("l", "view").encode_to_vec();
        prost::encoding::uint64::encode(15, &9, &mut unknown);
        events.push(Bytes::from(unknown));
        let mut repeated_id = valid("m1", "view").encode_to_vec();
        prost::encoding::string::encode(1, &"m2".to_owned(), &mut repeated_id);
        events.push(Bytes::from(repeated_id));
        events
    }

    #[test]
    fn reading_in_place_acks_and_records_what_decoding_did() {
        let limits: ValidationLimits = hourglass_config::defaults();
        let customer_id = CustomerId::new("acme").unwrap();
        let now = 1_764_000_000;
        let clock = ValidationClock { received_at_unix_secs: now };
        let events = events_of_every_kind(now);
        let (old_rejections, old_outcomes, old_record) = old_path(&limits, &customer_id, clock, &events);
        let (new_rejections, new_outcomes, new_record, _) = new_path(&limits, &customer_id, clock, &events);
        assert_eq!(new_rejections, old_rejections);
        assert_eq!(new_outcomes, old_outcomes);
        assert_eq!(new_record, old_record);
        let accepted: Vec<&str> = new_record.events.iter().map(|event| event.event_id.as_str()).collect();
        assert_eq!(accepted, ["a", "f", "g", "l", "m2"], "the batch tests what it means to");
        let reasons: Vec<(u32, RejectionReason)> = new_rejections
            .iter()
            .map(|rejection| (rejection.index, RejectionReason::try_from(rejection.reason).unwrap()))
            .collect();
        use RejectionReason as Reason;
        assert_eq!(
            reasons,
            [
                (1, Reason::EventTypeEmpty),
                (2, Reason::OccurredAtInvalid),
                (3, Reason::OccurredAtInFuture),
                (4, Reason::UserIdTooLong),
                (7, Reason::TooManyEventTypes),
                (8, Reason::EventIdTooLong),
                (9, Reason::TooManyPropertyNames),
                (10, Reason::PropertyValueInvalid),
            ]
        );
        assert_eq!(new_rejections[7].message, "property \"aa\" has no value");
    }

    /// The plan checked in validation's walk finds, rejects and counts what a check of its own after
    /// validation found: an event validation rejects is neither checked nor counted, whatever its
    /// properties break, and the plan's rows say the same for read and decoded events.
    #[test]
    fn the_plan_checked_in_validations_walk_finds_what_a_check_after_validation_finds() {
        use std::collections::BTreeMap;

        use hourglass_core::tracking_plan::PlanDocument;
        use hourglass_proto::v1::{Event, PropertyValue, property_value::Kind};
        use prost::Message;
        let plan = PlanDocument::parse(
            r#"{"mode": "enforce", "undeclared_event_types": "reject", "undeclared_properties": "warn",
                "event_types": {
                    "view": {"properties": {
                        "path": {"type": "string", "required": true, "pattern": "^/p/"},
                        "amount": {"type": "number", "maximum": 100}
                    }},
                    "click": {"properties": {"path": {"type": "string"}, "amount": {"type": "number"}}}
                }}"#,
        )
        .unwrap();
        let plan = CompiledPlan::compile(2, &plan).unwrap();
        let limits: ValidationLimits = hourglass_config::defaults();
        let customer_id = CustomerId::new("acme").unwrap();
        let now = 1_764_000_000;
        let clock = ValidationClock { received_at_unix_secs: now };
        let mut events = events_of_every_kind(now);
        let view = |id: &str, properties: &[(&str, Kind)]| {
            let event = Event {
                event_id: id.into(),
                event_type: "view".into(),
                occurred_at: Some(hourglass_proto::prost_types::Timestamp { seconds: now - 60, nanos: 0 }),
                user_id: None,
                properties: properties
                    .iter()
                    .map(|(name, kind)| ((*name).to_owned(), PropertyValue { kind: Some(kind.clone()) }))
                    .collect(),
            };
            Bytes::from(event.encode_to_vec())
        };
        events.extend([
            view("out-of-range", &[("path", Kind::StringValue("/p/1".into())), ("amount", Kind::NumberValue(500.0))]),
            view("missing", &[("amount", Kind::NumberValue(5.0))]),
            view("pattern", &[("path", Kind::StringValue("/x".into()))]),
            view("undeclared", &[("path", Kind::StringValue("/p/2".into())), ("coupon", Kind::BoolValue(true))]),
            // Invalid (a value too long) and breaking the plan: validation's reason, and not counted.
            view("both", &[("path", Kind::StringValue("x".repeat(2000))), ("amount", Kind::NumberValue(500.0))]),
        ]);
        let roomy = CardinalityLimits { max_event_types_per_hour: 100, max_property_names_per_event_type: 100 };

        let mut expected_rejections = Vec::new();
        let mut expected_rows: BTreeMap<(i64, String, i32, bool), u32> = BTreeMap::new();
        for (index, bytes) in events.iter().enumerate() {
            let event = ReadEvent::read(bytes).unwrap();
            let hour_start = match limits.check_event(&event, clock) {
                Ok(hour_start) => hour_start,
                Err(rejection) => {
                    expected_rejections.push((index as u32, rejection.reason as i32, rejection.message));
                    continue;
                }
            };
            *expected_rows.entry((hour_start, String::new(), 0, false)).or_default() += 1;
            let properties = event.properties().map(|(name, value)| (name, PlanValue::from(value)));
            if let Some(violation) = plan.check(event.event_type(), properties) {
                let rejected = violation.action == ViolationAction::Reject;
                let reason = violation.rule.reason() as i32;
                *expected_rows.entry((hour_start, event.event_type().to_owned(), reason, rejected)).or_default() += 1;
                if rejected {
                    expected_rejections.push((index as u32, reason, violation.message));
                }
            }
        }
        expected_rejections.sort();

        let cardinality = CardinalityTracker::new(1000);
        let read = read_events(&events).unwrap();
        let checked = check_events(&limits, &cardinality, &customer_id, roomy, Some(&plan), clock, read);
        let rejections: Vec<(u32, i32, String)> = checked
            .rejections
            .into_iter()
            .map(|rejection| (rejection.index, rejection.reason, rejection.message))
            .collect();
        assert_eq!(rejections, expected_rejections);
        assert!(checked.plan_checks.iter().all(|row| row.plan_version == 2));
        let rows: BTreeMap<(i64, String, i32, bool), u32> = checked
            .plan_checks
            .into_iter()
            .map(|row| ((row.hour_start_unix_secs, row.event_type, row.rule, row.rejected), row.count))
            .collect();
        assert_eq!(rows, expected_rows);
        use RejectionReason as Reason;
        let rules: Vec<(i32, bool)> = rows.keys().map(|(_, _, rule, rejected)| (*rule, *rejected)).collect();
        for rule in [
            (Reason::EventTypeUndeclared as i32, true),
            (Reason::PropertyOutOfRange as i32, true),
            (Reason::PropertyRequiredMissing as i32, true),
            (Reason::PropertyPatternMismatch as i32, true),
            (Reason::PropertyUndeclared as i32, false),
        ] {
            assert!(rules.contains(&rule), "the batch breaks {rule:?}: {rows:?}");
        }
        let both = events.len() as u32 - 1;
        assert!(
            rejections
                .iter()
                .any(|(index, reason, _)| *index == both && *reason == Reason::PropertyValueInvalid as i32)
        );
    }

    #[test]
    fn a_batch_of_prost_encoded_events_makes_the_same_record_bytes() {
        use prost::Message;
        let limits: ValidationLimits = hourglass_config::defaults();
        let customer_id = CustomerId::new("acme").unwrap();
        let now = 1_764_000_000;
        let clock = ValidationClock { received_at_unix_secs: now };
        let plain: Vec<Bytes> = events_of_every_kind(now).into_iter().take(10).collect();
        let (_, old_outcomes, old_record) = old_path(&limits, &customer_id, clock, &plain);
        let (_, _, _, payload) = new_path(&limits, &customer_id, clock, &plain);
        let old_payload = EventBatchRecord { outcomes: Vec::new(), ..old_record }.encode_to_vec();
        assert!(!old_outcomes.is_empty());
        assert_eq!(payload, old_payload, "byte for byte");
    }

    #[test]
    fn an_undecodable_event_fails_the_batch_with_prosts_error_naming_it() {
        use hourglass_proto::v1::Event;
        use prost::Message;
        let events = vec![Bytes::from(Event::default().encode_to_vec()), Bytes::from_static(&[0x0a, 0x02, 0xff, 0xfe])];
        let Err(CollectorError::UndecodableEvent { index, source }) = read_events(&events) else {
            panic!("the second event is not UTF-8");
        };
        assert_eq!(index, 1);
        assert_eq!(source, Event::decode(&events[1][..]).unwrap_err());
        let status = tonic::Status::from(CollectorError::UndecodableEvent { index, source });
        assert_eq!(status.code(), tonic::Code::Internal, "what tonic answered an undecodable message");
    }
}
