//! How a batch becomes an event-log record, and back.
//!
//! One record per (customer, batch): the accepted events plus the outcome counts of every event the
//! collector saw in the batch (`hourglass.log.v1.EventBatchRecord`). The README explains why one record
//! per batch rather than per event (it costs about a third of the CPU per event).
//!
//! Decoding also drops number properties that are NaN or infinite: the collector refuses them, but a
//! record from an old or buggy collector may carry one, and no store should keep a number that no sum,
//! minimum or maximum can use (see [`numeric`](crate::numeric)).

use hourglass_proto::log::v1::{EventBatchRecord, OutcomeCount};
use hourglass_proto::v1::property_value::Kind;
use prost::Message;

use crate::customer::CustomerId;
use crate::event_log::LogRecord;
use crate::hour;
use crate::record_view::{self, RecordView};

/// The header naming the record's schema version.
pub const SCHEMA_VERSION_HEADER: &str = "hg-schema-version";
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The header naming the payload's content type.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// The content type of an [`EventBatchRecord`] payload.
pub const EVENT_BATCH_CONTENT_TYPE: &str = "application/x-protobuf; messageType=hourglass.log.v1.EventBatchRecord";

/// Why a record could not be decoded. A consumer sends such a record to the dead-letter topic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordDecodeError {
    /// The schema-version header is missing or not a number.
    #[error("missing or unreadable {SCHEMA_VERSION_HEADER} header")]
    MissingSchemaVersion,
    /// A version this build does not know.
    #[error("unknown schema version {0} (this build reads version {SCHEMA_VERSION})")]
    UnknownSchemaVersion(u32),
    /// The payload is not a valid record.
    #[error("undecodable payload: {0}")]
    Payload(String),
    /// The payload names an invalid customer.
    #[error("invalid customer id in record: {0}")]
    Customer(String),
    /// An event time or an outcome hour outside what the stores can hold (see [`crate::hour`]). The
    /// collector never writes one; a record that has one came from a faulty or foreign producer, and
    /// storing it would wedge whatever derives an hour from it.
    #[error("{0}")]
    OutOfRange(String),
}

/// The Kafka key of a customer's batch. Normally the customer id, so one customer's records stay in
/// one partition, in order. A customer configured with a spread `n > 1` is a hot customer: its batches
/// go to `n` keys (`customer#0` … `customer#{n-1}`), chosen by `batch_counter`, so it can use `n`
/// partitions.
pub fn partition_key(customer_id: &CustomerId, spread: u32, batch_counter: u64) -> String {
    if spread <= 1 {
        customer_id.as_str().to_owned()
    } else {
        format!("{}#{}", customer_id, batch_counter % u64::from(spread))
    }
}

/// Encodes a record with its headers.
pub fn encode(key: String, record: &EventBatchRecord) -> LogRecord {
    encode_message(key, record)
}

/// Encodes a record whose events are already encoded (the collector's, which copies each accepted
/// event's bytes as the client sent them), with its headers. The payload is an `EventBatchRecord`
/// byte for byte: [`decode`] reads it.
pub fn encode_wire(key: String, record: &hourglass_proto::wire::log::v1::EventBatchRecord) -> LogRecord {
    encode_message(key, record)
}

fn encode_message(key: String, record: &impl Message) -> LogRecord {
    LogRecord {
        key,
        payload: record.encode_to_vec(),
        headers: vec![
            (SCHEMA_VERSION_HEADER, SCHEMA_VERSION.to_string().into_bytes()),
            (CONTENT_TYPE_HEADER, EVENT_BATCH_CONTENT_TYPE.as_bytes().to_vec()),
        ],
    }
}

/// Decodes a record, given the value of its schema-version header. Number properties that are NaN or
/// infinite are dropped from their events (the rest of each event is kept), with a warning.
pub fn decode(schema_version_header: Option<&[u8]>, payload: &[u8]) -> Result<EventBatchRecord, RecordDecodeError> {
    check_schema_version(schema_version_header)?;
    let mut record =
        EventBatchRecord::decode(payload).map_err(|error| RecordDecodeError::Payload(error.to_string()))?;
    CustomerId::new(&record.customer_id).map_err(|error| RecordDecodeError::Customer(error.to_string()))?;
    let event_times =
        record.events.iter().map(|event| event.occurred_at.as_ref().map(|time| (time.seconds, time.nanos)));
    check_times(event_times, &record.outcomes)?;
    let dropped = drop_non_finite_numbers(&mut record);
    warn_dropped(&record.customer_id, &record.batch_id, &record.collector_id, dropped);
    Ok(record)
}

/// Decodes a record as [`decode`] does, with the same checks and the same verdicts, into the form the
/// raw stores write: each event's bytes borrowed from `payload` rather than decoded into owned structs
/// (see [`record_view`](crate::record_view)). An event with NaN or infinite numbers is encoded again
/// without them, with a warning.
pub fn decode_view<'a>(
    schema_version_header: Option<&[u8]>,
    payload: &'a [u8],
) -> Result<RecordView<'a>, RecordDecodeError> {
    check_schema_version(schema_version_header)?;
    let decoded = record_view::decode(payload).map_err(RecordDecodeError::Payload)?;
    let record = decoded.view;
    CustomerId::new(&record.customer_id).map_err(|error| RecordDecodeError::Customer(error.to_string()))?;
    check_times(decoded.occurred_at.iter().copied(), &record.outcomes)?;
    warn_dropped(&record.customer_id, &record.batch_id, &record.collector_id, decoded.dropped_numbers);
    Ok(record)
}

fn check_schema_version(schema_version_header: Option<&[u8]>) -> Result<(), RecordDecodeError> {
    let version = schema_version_header
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .and_then(|text| text.parse::<u32>().ok())
        .ok_or(RecordDecodeError::MissingSchemaVersion)?;
    if version != SCHEMA_VERSION {
        return Err(RecordDecodeError::UnknownSchemaVersion(version));
    }
    Ok(())
}

fn warn_dropped(customer_id: &str, batch_id: &str, collector_id: &str, dropped: usize) {
    if dropped > 0 {
        tracing::warn!(
            customer_id,
            batch_id,
            collector_id,
            dropped,
            "record carries NaN or infinite number properties, which collectors refuse; dropped them"
        );
    }
}

/// Checks every time a consumer derives an hour from: each event's `occurred_at` (seconds, nanos) and
/// each outcome count's hour must lie in the supported range, so no later stage computes an hour from
/// an unchecked client value.
fn check_times(
    event_times: impl Iterator<Item = Option<(i64, i32)>>,
    outcomes: &[OutcomeCount],
) -> Result<(), RecordDecodeError> {
    for (index, occurred_at) in event_times.enumerate() {
        let Some((seconds, nanos)) = occurred_at else {
            return Err(RecordDecodeError::OutOfRange(format!("event {index} has no occurred_at")));
        };
        if !hour::is_supported(seconds) || !(0..1_000_000_000).contains(&nanos) {
            return Err(RecordDecodeError::OutOfRange(format!(
                "event {index} occurred_at {seconds}s {nanos}ns is outside the supported range ({}..={} s)",
                hour::EARLIEST_SUPPORTED_SECS,
                hour::LATEST_SUPPORTED_SECS
            )));
        }
    }
    for count in outcomes {
        if !hour::is_supported_hour(count.hour_start_unix_secs) {
            return Err(RecordDecodeError::OutOfRange(format!(
                "outcome count for hour {} is not the start of a supported hour",
                count.hour_start_unix_secs
            )));
        }
    }
    Ok(())
}

/// Removes every number property that is NaN or infinite from the record's events; returns how many.
fn drop_non_finite_numbers(record: &mut EventBatchRecord) -> usize {
    let mut dropped = 0;
    for event in &mut record.events {
        event.properties.retain(|_, value| {
            let finite = !matches!(value.kind, Some(Kind::NumberValue(number)) if !number.is_finite());
            dropped += usize::from(!finite);
            finite
        });
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(record: &'a LogRecord, name: &str) -> Option<&'a [u8]> {
        record.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_slice())
    }

    #[test]
    fn round_trips() {
        let record = EventBatchRecord { customer_id: "acme".into(), batch_id: "b1".into(), ..Default::default() };
        let encoded = encode("acme".into(), &record);
        let decoded = decode(header(&encoded, SCHEMA_VERSION_HEADER), &encoded.payload).unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert_eq!(decode(None, b""), Err(RecordDecodeError::MissingSchemaVersion));
        assert_eq!(decode(Some(b"x"), b""), Err(RecordDecodeError::MissingSchemaVersion));
        assert_eq!(decode(Some(b"2"), b""), Err(RecordDecodeError::UnknownSchemaVersion(2)));
        assert!(matches!(decode(Some(b"1"), b"\xff\xff\xff"), Err(RecordDecodeError::Payload(_))));
        let bad_customer = EventBatchRecord { customer_id: "Not Valid".into(), ..Default::default() };
        assert!(matches!(decode(Some(b"1"), &bad_customer.encode_to_vec()), Err(RecordDecodeError::Customer(_))));
    }

    #[test]
    fn refuses_records_whose_times_no_store_can_hold() {
        use hourglass_proto::log::v1::OutcomeCount;
        use hourglass_proto::prost_types::Timestamp;
        use hourglass_proto::v1::Event;
        let event_at = |seconds: i64, nanos: i32| Event {
            event_id: "e".into(),
            event_type: "t".into(),
            occurred_at: Some(Timestamp { seconds, nanos }),
            ..Default::default()
        };
        let record_with = |events: Vec<Event>, outcome_hour: i64| EventBatchRecord {
            customer_id: "acme".into(),
            events,
            outcomes: vec![OutcomeCount { hour_start_unix_secs: outcome_hour, outcome: 1, reason: 0, count: 1 }],
            ..Default::default()
        };
        let decode_record = |record: &EventBatchRecord| decode(Some(b"1"), &record.encode_to_vec());
        assert!(decode_record(&record_with(vec![event_at(1_764_000_000, 0)], 1_763_996_400)).is_ok());
        for bad in [
            record_with(vec![event_at(9_000_000_000_000_000, 0)], 0),
            record_with(vec![event_at(i64::MIN, 0)], 0),
            record_with(vec![event_at(-1, 0)], 0),
            record_with(vec![event_at(1_764_000_000, -5)], 0),
            record_with(vec![Event { occurred_at: None, ..event_at(0, 0) }], 0),
            record_with(vec![], 9_000_000_000_000_000 / 3600 * 3600),
            record_with(vec![], 1800),
            record_with(vec![], i64::MIN),
        ] {
            assert!(matches!(decode_record(&bad), Err(RecordDecodeError::OutOfRange(_))), "{bad:?}");
        }
    }

    #[test]
    fn decoding_drops_non_finite_numbers_and_keeps_the_rest() {
        use hourglass_proto::v1::{Event, PropertyValue};
        let value = |kind: Kind| PropertyValue { kind: Some(kind) };
        let event = Event {
            event_id: "e1".into(),
            event_type: "buy".into(),
            occurred_at: Some(hourglass_proto::prost_types::Timestamp { seconds: 1_764_000_000, nanos: 0 }),
            properties: [
                ("nan".to_owned(), value(Kind::NumberValue(f64::NAN))),
                ("plus".to_owned(), value(Kind::NumberValue(f64::INFINITY))),
                ("minus".to_owned(), value(Kind::NumberValue(f64::NEG_INFINITY))),
                ("huge".to_owned(), value(Kind::NumberValue(f64::MAX))),
                ("name".to_owned(), value(Kind::StringValue("x".into()))),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let record = EventBatchRecord { customer_id: "acme".into(), events: vec![event], ..Default::default() };
        let decoded = decode(Some(b"1"), &record.encode_to_vec()).unwrap();
        let names: Vec<&str> = decoded.events[0].properties.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["huge", "name"]);
        assert_eq!(decoded.events[0].event_id, "e1");
    }

    #[test]
    fn spreads_hot_customers() {
        let customer = CustomerId::new("acme").unwrap();
        assert_eq!(partition_key(&customer, 1, 7), "acme");
        assert_eq!(partition_key(&customer, 0, 7), "acme");
        assert_eq!(partition_key(&customer, 4, 7), "acme#3");
    }
}
