//! [`RecordHandler`]: what happens to one group of consumed records, the same for the ingest loop
//! ([`crate::pipeline`]) and [`replay`](crate::replay), in either mode: decode each record (into a
//! [`RecordView`]: the header owned, each event's bytes borrowed from the payload, which the raw stores
//! copy into their blocks as they are), send the ones that cannot be decoded to the dead-letter topic,
//! drop the events of suppressed users ([`crate::suppression`]), write the others in one store call,
//! retry failed writes with backoff.
//!
//! Tracing: each record gets an `ingestor.record` span whose parent is the trace context the collector
//! put in the record's headers (`hourglass_core::trace_context`), or none (a new trace) for a record
//! without one. It covers decoding; the group's one store call appears in each record's trace as an
//! `ingestor.raw_write` child (one per record, over the same call), and the span is returned with the
//! record's [`Handled::Stored`] so the loop ends it once the record's hours are marked dirty.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{ConsumedRecord, EventLog, Topic};
use hourglass_core::job_queue::CustomerHour;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record::{self, SCHEMA_VERSION_HEADER};
use hourglass_core::record_view::RecordView;
use hourglass_core::trace_context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dead_letter;
use crate::suppression::{Suppression, drop_suppressed};
use crate::telemetry;

/// What became of one record.
#[derive(Debug)]
pub enum Handled {
    /// Its events and outcomes are durable; these customer-hours need (re)aggregation.
    Stored {
        /// The customer-hours the record touched: its events' hours and its outcome counts' hours.
        hours: Vec<CustomerHour>,
        /// The record's `ingestor.record` span, still open: whoever marks `hours` dirty does it under
        /// this span, then drops it.
        span: tracing::Span,
    },
    /// It could not be decoded and is now in the dead-letter topic.
    DeadLettered,
    /// Shutdown came while it was still retrying: it stays uncommitted.
    Abandoned,
}

/// Turns consumed records into raw-store rows, the same way for every event log: decodes each record,
/// sends the ones that cannot be decoded to the dead-letter topic, writes the others in one store call,
/// and retries failed writes with exponential backoff. It marks nothing and commits nothing: the caller
/// marks the returned hours dirty, then commits.
pub struct RecordHandler<S, L> {
    raw_store: Arc<S>,
    dead_letter_log: Arc<L>,
    suppression: Suppression,
    retry_backoff: Duration,
    max_retry_backoff: Duration,
}

impl<S: RawStore, L: EventLog> RecordHandler<S, L> {
    /// A handler writing to `raw_store` and dead-lettering to `dead_letter_log`, dropping the events of
    /// the people `suppression` lists; a failed write is retried after `retry_backoff`, doubling up to
    /// `max_retry_backoff` (both at least 1 ms).
    pub fn new(
        raw_store: Arc<S>,
        dead_letter_log: Arc<L>,
        suppression: Suppression,
        retry_backoff: Duration,
        max_retry_backoff: Duration,
    ) -> Self {
        let at_least_1_ms = Duration::from_millis(1);
        Self {
            raw_store,
            dead_letter_log,
            suppression,
            retry_backoff: retry_backoff.max(at_least_1_ms),
            max_retry_backoff: max_retry_backoff.max(at_least_1_ms),
        }
    }

    /// Handles a group of records: dead-letters the ones that cannot be decoded and writes the others
    /// in one store call, retrying failures with backoff until they succeed or `abandon` is cancelled.
    /// Returns what became of each record, in order.
    pub async fn handle(&self, records: &[ConsumedRecord], abandon: &CancellationToken) -> Vec<Handled> {
        let mut handled = Vec::with_capacity(records.len());
        let mut batches = Vec::with_capacity(records.len());
        let mut hours_of_batches = Vec::with_capacity(records.len());
        let mut spans_of_batches = Vec::with_capacity(records.len());
        // One list for the whole group: a refresh meanwhile applies from the next group.
        let suppressed = self.suppression.snapshot();
        let mut erased = 0u64;
        for consumed in records {
            let record_span = record_span(consumed);
            let schema_version = consumed.header(SCHEMA_VERSION_HEADER);
            match record_span.in_scope(|| record::decode_view(schema_version, &consumed.payload)) {
                Ok(mut batch) => {
                    erased += drop_suppressed(&suppressed, &mut batch);
                    record_span.record("customer_id", batch.customer_id.as_str());
                    record_span.record("batch_id", batch.batch_id.as_str());
                    hours_of_batches.push(touched_hours(&batch));
                    batches.push(batch);
                    spans_of_batches.push(record_span);
                    handled.push(None);
                }
                Err(decode_error) => {
                    let outcome =
                        self.dead_letter(consumed, &decode_error.to_string(), abandon).instrument(record_span).await;
                    handled.push(Some(outcome));
                }
            }
        }
        let events: usize = batches.iter().map(|batch| batch.events.len()).sum();
        let write_spans: Vec<tracing::Span> = spans_of_batches
            .iter()
            .map(|record_span| {
                tracing::info_span!(parent: record_span, "ingestor.raw_write", records = batches.len(), events)
            })
            .collect();
        let write =
            self.retry("write to the raw store", abandon, || timed_raw_write(self.raw_store.write_records(&batches)));
        // One store call for the whole group: its retries log under the first record's write span, and
        // every record's write span lasts as long as the call.
        let stored = batches.is_empty()
            || write.instrument(write_spans.first().cloned().unwrap_or_else(tracing::Span::none)).await.is_some();
        drop(write_spans);
        if stored && !batches.is_empty() {
            metrics::counter!(telemetry::RECORDS_TOTAL, "result" => "stored").increment(batches.len() as u64);
            metrics::counter!(telemetry::EVENTS_STORED_TOTAL).increment(events as u64);
            if erased > 0 {
                metrics::counter!(telemetry::EVENTS_ERASED_TOTAL).increment(erased);
            }
        }
        let mut hours_of_batches = hours_of_batches.into_iter();
        let mut spans_of_batches = spans_of_batches.into_iter();
        handled
            .into_iter()
            .map(|outcome| match outcome {
                Some(outcome) => outcome,
                None => {
                    let hours = hours_of_batches.next().unwrap_or_default();
                    let span = spans_of_batches.next().unwrap_or_else(tracing::Span::none);
                    if stored { Handled::Stored { hours, span } } else { Handled::Abandoned }
                }
            })
            .collect()
    }

    async fn dead_letter(&self, consumed: &ConsumedRecord, reason: &str, abandon: &CancellationToken) -> Handled {
        let source = &consumed.source;
        tracing::warn!(%source, %reason, "poison record: sending it to the dead-letter topic");
        let dead_letter = dead_letter::dead_letter_record(
            consumed,
            reason,
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64,
        );
        let sent = self
            .retry("write to the dead-letter topic", abandon, || {
                self.dead_letter_log.append(Topic::DeadLetter, dead_letter.clone())
            })
            .await;
        if sent.is_none() {
            return Handled::Abandoned;
        }
        metrics::counter!(telemetry::RECORDS_TOTAL, "result" => "dead_lettered").increment(1);
        Handled::DeadLettered
    }

    /// Runs `attempt` until it succeeds, backing off exponentially; `None` if abandoned first.
    async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        what: &str,
        abandon: &CancellationToken,
        mut attempt: impl FnMut() -> F,
    ) -> Option<T> {
        let mut backoff = self.retry_backoff;
        loop {
            match attempt().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    metrics::counter!(telemetry::WRITE_RETRIES_TOTAL).increment(1);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "failed to {what}; retrying");
                    tokio::select! {
                        () = abandon.cancelled() => return None,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.max_retry_backoff);
                }
            }
        }
    }
}

/// Runs one attempt to write to the raw store, recording how long it took and whether it worked.
async fn timed_raw_write<T, E>(attempt: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = attempt.await;
    let label = if result.is_ok() { "ok" } else { "failed" };
    metrics::histogram!(telemetry::RAW_WRITE_SECONDS, "result" => label).record(started.elapsed().as_secs_f64());
    result
}

/// The span of one consumed record: a child of the trace context in its headers, else a new trace
/// (never a child of whatever span the loop runs in: a record's trace is its batch's).
fn record_span(consumed: &ConsumedRecord) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "ingestor.record",
        source = consumed.source.as_str(),
        customer_id = tracing::field::Empty,
        batch_id = tracing::field::Empty,
    );
    trace_context::set_parent_from_headers(&span, consumed);
    span
}

/// The customer-hours a record touches: its events' hours and its outcome counts' hours (an hour with
/// only rejected events still needs its ledger row).
fn touched_hours(batch: &RecordView<'_>) -> Vec<CustomerHour> {
    let Ok(customer_id) = CustomerId::new(&batch.customer_id) else {
        return Vec::new(); // decode() already refused such records
    };
    let event_hours = batch.events.iter().map(|event| event.hour_start());
    let outcome_hours = batch.outcomes.iter().map(|count| count.hour_start_unix_secs);
    let mut hours: Vec<i64> = event_hours.chain(outcome_hours).collect();
    hours.sort_unstable();
    hours.dedup();
    hours.into_iter().map(|hour_start| CustomerHour { customer_id: customer_id.clone(), hour_start }).collect()
}
