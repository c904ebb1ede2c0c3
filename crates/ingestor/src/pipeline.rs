//! The consume → write → mark dirty → commit loop.
//!
//! Records are written concurrently (at most `--ingestor-max-in-flight-records`); when that many are in
//! flight the loop stops fetching. Records already waiting are written together (up to
//! `--ingestor-max-records-per-write`), so rows of one partition from several records share a batch. Every commit interval, the loop first marks the customer-hours of the
//! finished records dirty in the job queue, and only if that succeeded commits the offsets below every
//! record still in flight ([`OffsetTracker`]). A store that is down makes writes retry with backoff;
//! nothing is committed past them, so a crash or a rebalance redelivers them: at-least-once into an
//! idempotent store.
//!
//! What happens to one record (decode, dead-letter or write, retry) is [`RecordHandler`], shared with
//! [`replay`](crate::replay) and with the embedded ingestion of `hourglass-embedded`: it works on any
//! consumed record through the [`LogMessage`] trait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, Topic};
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record::{self, SCHEMA_VERSION_HEADER};
use hourglass_kafka::KafkaConfig;
use hourglass_kafka::context::HourglassKafkaContext;
use hourglass_proto::log::v1::EventBatchRecord;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::IngestorConfig;
use crate::dead_letter;
use crate::error::IngestorError;
use crate::offsets::OffsetTracker;
use crate::telemetry;

/// A record consumed from an event log, whatever the log: Kafka's [`OwnedMessage`] here, the embedded
/// log's record in `hourglass-embedded`. It is what [`RecordHandler`] needs of a record; the method
/// names carry a `record_` prefix so they never clash with rdkafka's [`Message`] methods.
pub trait LogMessage: Send + Sync {
    /// The record's key (the customer, possibly salted), as bytes; empty if it has none.
    fn record_key(&self) -> &[u8];
    /// The encoded record; empty if it has none.
    fn record_payload(&self) -> &[u8];
    /// The value of its schema-version header ([`SCHEMA_VERSION_HEADER`]), if it has one.
    fn schema_version(&self) -> Option<&[u8]>;
    /// Where it comes from, for logs and the dead-letter source header: `topic/partition/offset`.
    fn source(&self) -> String;
}

impl LogMessage for OwnedMessage {
    fn record_key(&self) -> &[u8] {
        self.key().unwrap_or_default()
    }

    fn record_payload(&self) -> &[u8] {
        self.payload().unwrap_or_default()
    }

    fn schema_version(&self) -> Option<&[u8]> {
        self.headers()
            .and_then(|headers| headers.iter().find(|header| header.key == SCHEMA_VERSION_HEADER))
            .and_then(|header| header.value)
    }

    fn source(&self) -> String {
        format!("{}/{}/{}", self.topic(), self.partition(), self.offset())
    }
}

/// What became of one record.
#[derive(Debug)]
pub enum Handled {
    /// Its events and outcomes are durable; these customer-hours need (re)aggregation.
    Stored {
        /// The customer-hours the record touched: its events' hours and its outcome counts' hours.
        hours: Vec<CustomerHour>,
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
    retry_backoff: Duration,
    max_retry_backoff: Duration,
}

impl<S: RawStore, L: EventLog> RecordHandler<S, L> {
    /// A handler writing to `raw_store` and dead-lettering to `dead_letter_log`; a failed write is
    /// retried after `retry_backoff`, doubling up to `max_retry_backoff` (both at least 1 ms).
    pub fn new(
        raw_store: Arc<S>,
        dead_letter_log: Arc<L>,
        retry_backoff: Duration,
        max_retry_backoff: Duration,
    ) -> Self {
        let at_least_1_ms = Duration::from_millis(1);
        Self {
            raw_store,
            dead_letter_log,
            retry_backoff: retry_backoff.max(at_least_1_ms),
            max_retry_backoff: max_retry_backoff.max(at_least_1_ms),
        }
    }

    /// A handler with the ingestor's retry settings.
    pub(crate) fn from_config(raw_store: Arc<S>, dead_letter_log: Arc<L>, config: &IngestorConfig) -> Self {
        Self::new(
            raw_store,
            dead_letter_log,
            Duration::from_millis(config.retry_backoff_ms),
            Duration::from_millis(config.max_retry_backoff_ms),
        )
    }

    /// Handles a group of records: dead-letters the ones that cannot be decoded and writes the others
    /// in one store call, retrying failures with backoff until they succeed or `abandon` is cancelled.
    /// Returns what became of each record, in order.
    pub async fn handle<M: LogMessage>(&self, messages: &[M], abandon: &CancellationToken) -> Vec<Handled> {
        let mut handled = Vec::with_capacity(messages.len());
        let mut batches = Vec::with_capacity(messages.len());
        let mut hours_of_batches = Vec::with_capacity(messages.len());
        for message in messages {
            let schema_version = message.schema_version();
            let payload = message.record_payload();
            match record::decode(schema_version, payload) {
                Ok(batch) => {
                    hours_of_batches.push(touched_hours(&batch));
                    batches.push(batch);
                    handled.push(None);
                }
                Err(decode_error) => {
                    let outcome =
                        self.dead_letter(message, schema_version, payload, &decode_error.to_string(), abandon).await;
                    handled.push(Some(outcome));
                }
            }
        }
        let events: usize = batches.iter().map(|batch| batch.events.len()).sum();
        let stored = batches.is_empty()
            || self.retry("write to the raw store", abandon, || self.raw_store.write_records(&batches)).await.is_some();
        if stored && !batches.is_empty() {
            metrics::counter!(telemetry::RECORDS_TOTAL, "result" => "stored").increment(batches.len() as u64);
            metrics::counter!(telemetry::EVENTS_STORED_TOTAL).increment(events as u64);
        }
        let mut hours_of_batches = hours_of_batches.into_iter();
        handled
            .into_iter()
            .map(|outcome| match outcome {
                Some(outcome) => outcome,
                None => {
                    let hours = hours_of_batches.next().unwrap_or_default();
                    if stored { Handled::Stored { hours } } else { Handled::Abandoned }
                }
            })
            .collect()
    }

    async fn dead_letter<M: LogMessage>(
        &self,
        message: &M,
        schema_version: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        abandon: &CancellationToken,
    ) -> Handled {
        let source = message.source();
        tracing::warn!(%source, %reason, "poison record: sending it to the dead-letter topic");
        let dead_letter = dead_letter::dead_letter_record(
            message.record_key(),
            payload,
            schema_version,
            reason,
            &source,
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

/// The customer-hours a record touches: its events' hours and its outcome counts' hours (an hour with
/// only rejected events still needs its ledger row).
fn touched_hours(batch: &EventBatchRecord) -> Vec<CustomerHour> {
    let Ok(customer_id) = CustomerId::new(&batch.customer_id) else {
        return Vec::new(); // decode() already refused such records
    };
    let event_hours = batch
        .events
        .iter()
        .map(|event| hour::hour_start(event.occurred_at.as_ref().map(|time| time.seconds).unwrap_or_default()));
    let outcome_hours = batch.outcomes.iter().map(|count| count.hour_start_unix_secs);
    let mut hours: Vec<i64> = event_hours.chain(outcome_hours).collect();
    hours.sort_unstable();
    hours.dedup();
    hours.into_iter().map(|hour_start| CustomerHour { customer_id: customer_id.clone(), hour_start }).collect()
}

/// Consumes the events topic as a member of the configured group until `shutdown` is cancelled, then
/// finishes in-flight writes (at most the drain timeout), marks, commits and leaves the group.
pub async fn run<S: RawStore, Q: JobQueue, L: EventLog>(
    config: IngestorConfig,
    kafka: KafkaConfig,
    raw_store: Arc<S>,
    job_queue: Arc<Q>,
    dead_letter_log: Arc<L>,
    shutdown: CancellationToken,
) -> Result<(), IngestorError> {
    telemetry::describe();
    let consumer: StreamConsumer<HourglassKafkaContext> = kafka
        .consumer_config(&config.group_id, "hourglass-ingestor")?
        .create_with_context(HourglassKafkaContext)
        .map_err(hourglass_kafka::KafkaSetupError::Client)?;
    let events_topic = kafka.topic_name(Topic::Events).to_owned();
    consumer.subscribe(&[&events_topic])?;
    tracing::info!(topic = %events_topic, group = %config.group_id, "ingestor consuming");

    let handler = Arc::new(RecordHandler::from_config(raw_store, dead_letter_log, &config));
    let abandon = CancellationToken::new();
    let mut tracker = OffsetTracker::default();
    let mut pending_hours: HashSet<CustomerHour> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut commit_tick = tokio::time::interval(config.commit_interval());
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_in_flight = config.max_in_flight_records.max(1);
    let max_group = config.max_records_per_write.max(1);
    let mut in_flight_records = 0usize;
    let mut messages = consumer.stream();
    let committer = Committer { consumer: &consumer, topic: &events_topic, job_queue: &*job_queue };

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(results) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_records -= apply_all(&mut tracker, &mut pending_hours, results);
                metrics::gauge!(telemetry::IN_FLIGHT_RECORDS).set(tracker.in_flight() as f64);
            }
            _ = commit_tick.tick() => committer.mark_and_commit(&mut tracker, &mut pending_hours, CommitMode::Async).await,
            message = messages.next(), if in_flight_records < max_in_flight => match message {
                Some(Ok(first)) => {
                    // Take the records already waiting too (up to the group size), so one write can
                    // merge rows that share a partition.
                    let mut group = vec![first.detach()];
                    while group.len() < max_group && in_flight_records + group.len() < max_in_flight {
                        match messages.next().now_or_never() {
                            Some(Some(Ok(message))) => group.push(message.detach()),
                            Some(Some(Err(error))) => {
                                tracing::warn!(%error, "kafka consumer error (retrying)");
                                break;
                            }
                            _ => break,
                        }
                    }
                    for message in &group {
                        tracker.start(message.partition(), message.offset());
                    }
                    in_flight_records += group.len();
                    let handler = Arc::clone(&handler);
                    let abandon = abandon.clone();
                    in_flight.push(async move {
                        let handled = handler.handle(&group, &abandon).await;
                        group.iter().map(|message| (message.partition(), message.offset())).zip(handled).collect::<Vec<_>>()
                    });
                }
                Some(Err(error)) => tracing::warn!(%error, "kafka consumer error (retrying)"),
                None => break,
            },
        }
    }

    tracing::info!(in_flight = in_flight.len(), "ingestor draining");
    let drain_deadline = tokio::time::sleep(Duration::from_secs(config.drain_timeout_secs));
    tokio::pin!(drain_deadline);
    while !in_flight.is_empty() {
        tokio::select! {
            Some(results) = in_flight.next() => {
                apply_all(&mut tracker, &mut pending_hours, results);
            }
            () = &mut drain_deadline, if !abandon.is_cancelled() => {
                tracing::warn!(in_flight = in_flight.len(), "drain timeout: abandoning writes still retrying (they stay uncommitted)");
                abandon.cancel();
            }
        }
    }
    committer.mark_and_commit(&mut tracker, &mut pending_hours, CommitMode::Sync).await;
    drop(messages);
    consumer.unsubscribe();
    tracing::info!("ingestor stopped");
    Ok(())
}

/// Records what became of a group of records; returns how many there were.
fn apply_all(
    tracker: &mut OffsetTracker,
    pending_hours: &mut HashSet<CustomerHour>,
    results: Vec<((i32, i64), Handled)>,
) -> usize {
    let count = results.len();
    for ((partition, offset), handled) in results {
        match handled {
            Handled::Stored { hours } => {
                pending_hours.extend(hours);
                tracker.finish(partition, offset);
            }
            Handled::DeadLettered => tracker.finish(partition, offset),
            Handled::Abandoned => tracker.abandon(partition, offset),
        }
    }
    count
}

struct Committer<'a, Q> {
    consumer: &'a StreamConsumer<HourglassKafkaContext>,
    topic: &'a str,
    job_queue: &'a Q,
}

impl<Q: JobQueue> Committer<'_, Q> {
    /// Marks the finished records' hours dirty, then commits the offsets below every in-flight record.
    /// If marking fails nothing is committed: the records will be redelivered and re-marked.
    async fn mark_and_commit(
        &self,
        tracker: &mut OffsetTracker,
        pending_hours: &mut HashSet<CustomerHour>,
        mode: CommitMode,
    ) {
        let committable = tracker.committable();
        if !pending_hours.is_empty() {
            let hours: Vec<CustomerHour> = pending_hours.iter().cloned().collect();
            if let Err(error) = self.job_queue.mark_dirty(&hours).await {
                metrics::counter!(telemetry::DIRTY_MARK_FAILURES_TOTAL).increment(1);
                tracing::warn!(%error, "cannot mark dirty hours; offsets stay uncommitted until it works");
                return;
            }
            pending_hours.clear();
        }
        if committable.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in &committable {
            if let Err(error) = offsets.add_partition_offset(self.topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(%error, partition, offset, "invalid offset to commit");
                return;
            }
        }
        match self.consumer.commit(&offsets, mode) {
            Ok(()) => {
                metrics::counter!(telemetry::COMMITS_TOTAL, "result" => "ok").increment(1);
                tracker.mark_committed(&committable);
            }
            Err(error) => {
                metrics::counter!(telemetry::COMMITS_TOTAL, "result" => "failed").increment(1);
                tracing::warn!(%error, "offset commit failed; the records may be redelivered (no loss)");
            }
        }
    }
}
