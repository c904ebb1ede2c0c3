//! An ingest batch as a client sends it, through the collector's validation and record building
//! (`Collector::begin_batch`, what every ingest call runs after authentication), into an event log.
//!
//! Input: the first byte picks the form of the rest and a few settings. Even: the rest is an
//! `IngestBatchRequest` as a client encodes it, split into its events' bytes as tonic hands them to the
//! collector (`hourglass_proto::wire`; the committed seeds are such batches, their times shifted from the
//! tests' clock to now); odd: the rest drives `arbitrary` to build the events, which reaches the
//! validation's corners sooner. Properties checked for every batch:
//! - a batch fails as undecodable exactly when one of its events' bytes is not an `Event` to prost, and
//!   then appends nothing;
//! - the ack accounts for every event (accepted + rejected = sent, rejections in order), or refuses the
//!   batch whole only when it is over a batch limit;
//! - every record appended decodes with `record::decode`, as the ingestor decodes it (the collector never
//!   writes a record the ingestor would dead-letter), and belongs to the principal's customer;
//! - the records carry exactly the accepted events, in order, and outcome counts that sum to the batch.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use hourglass_collector::CollectorConfig;
use hourglass_collector::batch::{Collector, ThrottlePolicy};
use hourglass_collector::config::RecordLayout;
use hourglass_collector::error::CollectorError;
use hourglass_core::api_key::ApiKey;
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::Topic;
use hourglass_core::key_store::CustomerLimits;
use hourglass_core::record::{self, SCHEMA_VERSION_HEADER};
use hourglass_fuzz::{NoKeys, NoPlans, captured_log};
use hourglass_grpc::auth::Principal;
use hourglass_proto::log::v1::{Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{BatchStatus, Event, PropertyValue, RejectionReason, property_value};
use hourglass_proto::wire::v1::IngestBatchRequest as WireIngestBatchRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The clock of the tests the seeds come from: an encoded event within 30 days of it is moved by
/// `now - SEED_EPOCH_SECS`, so a seed tests today what it tested when it was written.
const SEED_EPOCH_SECS: i64 = 1_764_000_000;
const SEED_WINDOW_SECS: i64 = 30 * 86_400;

#[derive(Arbitrary, Debug)]
struct ArbitraryEvent {
    event_id: String,
    event_type: String,
    time: ArbitraryTime,
    user_id: Option<String>,
    properties: Vec<(String, ArbitraryValue)>,
}

#[derive(Arbitrary, Debug)]
enum ArbitraryTime {
    Missing,
    /// Seconds from now, folded into ±10 days: around the late-data window and the future skew.
    FromNow {
        seconds: i32,
        nanos: i32,
    },
    Absolute {
        seconds: i64,
        nanos: i32,
    },
}

#[derive(Arbitrary, Debug)]
enum ArbitraryValue {
    None,
    String(String),
    Number(f64),
    Bool(bool),
}

impl ArbitraryEvent {
    fn into_event(self, now_secs: i64) -> Event {
        let occurred_at = match self.time {
            ArbitraryTime::Missing => None,
            ArbitraryTime::FromNow { seconds, nanos } => {
                Some(Timestamp { seconds: now_secs + i64::from(seconds) % (10 * 86_400), nanos })
            }
            ArbitraryTime::Absolute { seconds, nanos } => Some(Timestamp { seconds, nanos }),
        };
        let properties = self
            .properties
            .into_iter()
            .map(|(name, value)| {
                let kind = match value {
                    ArbitraryValue::None => None,
                    ArbitraryValue::String(text) => Some(property_value::Kind::StringValue(text)),
                    ArbitraryValue::Number(number) => Some(property_value::Kind::NumberValue(number)),
                    ArbitraryValue::Bool(flag) => Some(property_value::Kind::BoolValue(flag)),
                };
                (name, PropertyValue { kind })
            })
            .collect();
        Event { event_id: self.event_id, event_type: self.event_type, occurred_at, user_id: self.user_id, properties }
    }
}

/// The batch's events as the collector receives them: each one's bytes.
fn events_of(form: u8, rest: &[u8], now_secs: i64) -> Option<Vec<Bytes>> {
    if form % 2 == 0 {
        // What tonic hands the service: the request split into its events' bytes (which need not decode),
        // or a refused call.
        let events = WireIngestBatchRequest::decode(rest).ok()?.events;
        Some(events.into_iter().map(|bytes| shift_seed_time(bytes, now_secs)).collect())
    } else {
        let arbitrary: Vec<ArbitraryEvent> = Unstructured::new(rest).arbitrary().ok()?;
        Some(arbitrary.into_iter().map(|event| Bytes::from(event.into_event(now_secs).encode_to_vec())).collect())
    }
}

/// An event of a seed, its time moved from the tests' clock to now; any other bytes as they are.
fn shift_seed_time(bytes: Bytes, now_secs: i64) -> Bytes {
    let Ok(mut event) = Event::decode(bytes.as_ref()) else { return bytes };
    match event.occurred_at.as_mut() {
        Some(time) if (time.seconds - SEED_EPOCH_SECS).abs() <= SEED_WINDOW_SECS => {
            time.seconds += now_secs - SEED_EPOCH_SECS;
            Bytes::from(event.encode_to_vec())
        }
        _ => bytes,
    }
}

/// The key the principal authenticated with; generated once, as it costs an OS random read.
static KEY: LazyLock<ApiKey> = LazyLock::new(ApiKey::generate);

fn principal(form: u8) -> Principal {
    let key = &*KEY;
    Principal {
        key_id: key.id(),
        key_hash: key.hash(),
        customer_id: CustomerId::new("acme").expect("a valid customer id"),
        limits: CustomerLimits {
            // No quota: a fuzzer's batches come faster than any budget, and throttling is not what is tested.
            events_per_second: Some(u32::MAX),
            burst_events: Some(u32::MAX),
            kafka_key_spread: (form & 0b100 != 0).then_some(4),
            // Small limits now and then, so the cardinality rejections are reached too.
            max_event_types_per_hour: (form & 0b1000 != 0).then_some(2),
            max_property_names_per_event_type: (form & 0b1_0000 != 0).then_some(3),
        },
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime");
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else { return };
    let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let Some(event_bytes) = events_of(form, rest, now_secs) else { return };

    let mut config = CollectorConfig::with_defaults("127.0.0.1:0".parse().expect("an address"));
    config.record_layout = if form & 0b10 == 0 { RecordLayout::Batch } else { RecordLayout::Event };
    let limits = config.limits.clone();
    let event_log = captured_log();
    // A collector per input: its quota and cardinality state would otherwise make one input's outcome
    // depend on the inputs before it, and a crash would not reproduce alone.
    let collector = Collector::new(config, Arc::new(NoKeys), Arc::new(NoPlans), Arc::clone(&event_log));
    let principal = principal(form);
    let sequence = u64::from(form);
    let begun = RUNTIME.with(|runtime| {
        runtime.block_on(async {
            match collector.begin_batch(&principal, sequence, event_bytes.clone(), ThrottlePolicy::Reject).await {
                Ok(ack) => Ok(ack.await),
                Err(error) => Err(error),
            }
        })
    });
    let decoded: Result<Vec<Event>, _> = event_bytes.iter().map(|bytes| Event::decode(bytes.as_ref())).collect();
    let ack = match (begun, &decoded) {
        (Ok(ack), Ok(_)) => ack,
        (Err(CollectorError::UndecodableEvent { index, .. }), Err(_)) => {
            assert!(Event::decode(event_bytes[index].as_ref()).is_err(), "event {index} decodes, yet was refused");
            assert!(event_log.take().is_empty(), "an undecodable batch appends nothing");
            return;
        }
        (Err(error), Ok(_)) => panic!("every event decodes, yet the batch failed: {error}"),
        (Err(error), Err(_)) => panic!("an undecodable batch failed for another reason: {error}"),
        (Ok(ack), Err(error)) => panic!("an event prost cannot decode ({error}) was taken: {ack:?}"),
    };
    let events = decoded.expect("checked above");
    let appended = event_log.take();

    assert_eq!(ack.sequence, sequence);
    if events.is_empty() {
        assert_eq!(ack.status, BatchStatus::Accepted as i32);
        assert!(appended.is_empty(), "an empty batch appends nothing");
        return;
    }
    let mut stored_events = Vec::new();
    let mut outcomes: Vec<OutcomeCount> = Vec::new();
    for (topic, log_record) in &appended {
        assert_eq!(*topic, Topic::Events);
        let schema_version = log_record.headers.iter().find(|(name, _)| *name == SCHEMA_VERSION_HEADER);
        let decoded = record::decode(schema_version.map(|(_, value)| value.as_slice()), &log_record.payload)
            .unwrap_or_else(|error| panic!("the ingestor cannot decode a record the collector wrote: {error}"));
        assert_eq!(decoded.customer_id, principal.customer_id.as_str());
        stored_events.extend(decoded.events);
        outcomes.extend(decoded.outcomes);
    }
    let counted: u64 = outcomes.iter().map(|count| u64::from(count.count)).sum();
    assert_eq!(counted, events.len() as u64, "every event is counted once in the outcomes: {outcomes:?}");

    match BatchStatus::try_from(ack.status) {
        Ok(BatchStatus::Accepted) => {
            let rejected: Vec<usize> = ack.rejections.iter().map(|rejection| rejection.index as usize).collect();
            assert!(rejected.windows(2).all(|pair| pair[0] < pair[1]), "rejections in order: {rejected:?}");
            assert!(rejected.iter().all(|index| *index < events.len()));
            assert_eq!(ack.accepted_count as usize + rejected.len(), events.len());
            let accepted: Vec<&Event> = events
                .iter()
                .enumerate()
                .filter(|(index, _)| !rejected.contains(index))
                .map(|(_, event)| event)
                .collect();
            assert_eq!(stored_events.iter().collect::<Vec<_>>(), accepted, "the records carry the accepted events");
            let outcome_of = |outcome: Outcome| -> u64 {
                outcomes
                    .iter()
                    .filter(|count| count.outcome == outcome as i32)
                    .map(|count| u64::from(count.count))
                    .sum()
            };
            assert_eq!(outcome_of(Outcome::Accepted), u64::from(ack.accepted_count));
            assert_eq!(outcome_of(Outcome::Rejected), rejected.len() as u64);
        }
        Ok(BatchStatus::Invalid) => {
            assert!(stored_events.is_empty(), "a refused batch stores nothing");
            assert!(outcomes.iter().all(|count| count.reason == RejectionReason::BatchInvalid as i32), "{outcomes:?}");
            // A record holds at most every event, each with its field key and length (under 12 bytes), and
            // the batch's ids and outcomes (far under 1 KiB for a fuzzer's few events).
            // The events are counted as the client's bytes, which may be longer than their canonical encoding.
            let encoded_bytes: usize = event_bytes
                .iter()
                .map(|bytes| bytes.len().max(Event::decode(bytes.as_ref()).map_or(0, |event| event.encoded_len())) + 12)
                .sum::<usize>()
                + 1024;
            assert!(
                events.len() > limits.max_batch_events || encoded_bytes > limits.max_batch_bytes,
                "a batch of {} events, {encoded_bytes} bytes, refused: {}",
                events.len(),
                ack.error_message
            );
        }
        other => panic!("no quota and a log that always confirms, yet the ack is {other:?}: {ack:?}"),
    }
});
