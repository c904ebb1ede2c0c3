//! The ingestor's form of an event-log record: what the raw stores write, read where it lies.
//!
//! [`record::decode`](crate::record::decode) turns a record into owned structs (a `String` per field, a
//! map of properties per event), which the raw stores then encode again into their blocks. The stores
//! need much less: each event's id (its bucket), its time (its hour), its user (erasure suppression) and
//! its bytes. [`RecordView`] holds the record's header and outcome counts owned, and per event just that,
//! with the event's bytes a slice of the consumed payload, copied into the blocks as they are.
//!
//! An event is copied as it came only in the **plain form**: fields `hourglass.v1.Event` declares, each
//! singular field at most once (also inside its timestamp, map entries and values, a value with at most
//! one kind), distinct property names, every number finite. That is what every protobuf library writes,
//! and what the collector puts into records. Any other event is decoded by prost and encoded again, as
//! every event was before: unknown fields stripped, repeated fields and names resolved as protobuf does
//! (last wins), NaN and infinite numbers dropped (the collector refuses them, but a record from an old or
//! buggy collector may carry one, and no store should keep a number that no sum, minimum or maximum can
//! use, see [`numeric`](crate::numeric)), malformed bytes refused with prost's error. So a block holds
//! what it held when every event was decoded and encoded again, read by the same readers: the walker
//! only needs to be right when it says "plain", and it is tested against prost's decoding.

use std::borrow::Cow;

use hourglass_proto::log::v1::{EventBatchRecord, OutcomeCount, PlanCheckCount};
use hourglass_proto::v1::Event;
use hourglass_proto::v1::property_value::Kind;
use prost::Message;

use crate::hour;

mod walk;

use walk::{LENGTH_DELIMITED, Reader, VARINT, plain_event, utf8};

/// Field numbers of `hourglass.log.v1.EventBatchRecord`.
mod record_field {
    pub const CUSTOMER_ID: u32 = 1;
    pub const RECEIVED_AT_UNIX_MS: u32 = 2;
    pub const BATCH_ID: u32 = 3;
    pub const COLLECTOR_ID: u32 = 4;
    pub const EVENTS: u32 = 5;
    pub const OUTCOMES: u32 = 6;
    pub const PLAN_CHECKS: u32 = 7;
}

/// A batch record as the raw stores write it: the header and counts owned, the events as their bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordView<'a> {
    /// The customer.
    pub customer_id: String,
    /// When the collector received the batch, in milliseconds since the Unix epoch.
    pub received_at_unix_ms: i64,
    /// The batch's id.
    pub batch_id: String,
    /// The collector that received it.
    pub collector_id: String,
    /// The accepted events, in record order.
    pub events: Vec<EventBytes<'a>>,
    /// The outcome counts.
    pub outcomes: Vec<OutcomeCount>,
    /// The tracking-plan counts.
    pub plan_checks: Vec<PlanCheckCount>,
}

/// One event of a [`RecordView`]: what the write path reads of it, and its encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct EventBytes<'a> {
    /// The client's event id.
    pub event_id: Cow<'a, str>,
    /// When it happened, in milliseconds since the Unix epoch (0 without a time).
    pub occurred_at_ms: i64,
    /// The user, if any.
    pub user_id: Option<Cow<'a, str>>,
    /// The encoded `hourglass.v1.Event`: borrowed from the record for an event in the plain form, else
    /// prost's encoding of the decoded event.
    pub encoded: Cow<'a, [u8]>,
}

impl EventBytes<'_> {
    /// The start of the hour it happened in (the hour of 0 without a time).
    pub fn hour_start(&self) -> i64 {
        hour::hour_start(self.occurred_at_ms.div_euclid(1000))
    }
}

impl<'a> RecordView<'a> {
    /// The view of a record already decoded (tools and tests build records so): each event encoded by
    /// prost, its id and user borrowed from `record`. Nothing is checked or dropped.
    pub fn from_record(record: &'a EventBatchRecord) -> Self {
        let events = record
            .events
            .iter()
            .map(|event| EventBytes {
                event_id: Cow::Borrowed(event.event_id.as_str()),
                occurred_at_ms: event
                    .occurred_at
                    .as_ref()
                    .map(|time| hour::epoch_millis(time.seconds, time.nanos))
                    .unwrap_or_default(),
                user_id: event.user_id.as_deref().map(Cow::Borrowed),
                encoded: Cow::Owned(event.encode_to_vec()),
            })
            .collect();
        Self {
            customer_id: record.customer_id.clone(),
            received_at_unix_ms: record.received_at_unix_ms,
            batch_id: record.batch_id.clone(),
            collector_id: record.collector_id.clone(),
            events,
            outcomes: record.outcomes.clone(),
            plan_checks: record.plan_checks.clone(),
        }
    }

    /// The views of `records` ([`from_record`](Self::from_record) of each).
    pub fn from_records(records: &'a [EventBatchRecord]) -> Vec<Self> {
        records.iter().map(Self::from_record).collect()
    }
}

/// A decoded view, with the times each event has (for the record's checks) and how many non-finite
/// numbers its events lost.
pub(crate) struct DecodedView<'a> {
    pub view: RecordView<'a>,
    /// Each event's `occurred_at` as (seconds, nanoseconds), `None` when it has none.
    pub occurred_at: Vec<Option<(i64, i32)>>,
    pub dropped_numbers: usize,
}

/// Why a payload could not be read: prost's error, as text.
pub(crate) type ViewError = String;

/// Reads an encoded `EventBatchRecord` (see the module's doc).
pub(crate) fn decode(payload: &[u8]) -> Result<DecodedView<'_>, ViewError> {
    let event_count = count_events(payload);
    let mut view = RecordView {
        customer_id: String::new(),
        received_at_unix_ms: 0,
        batch_id: String::new(),
        collector_id: String::new(),
        events: Vec::with_capacity(event_count),
        outcomes: Vec::new(),
        plan_checks: Vec::new(),
    };
    let mut occurred_at = Vec::with_capacity(event_count);
    let mut dropped_numbers = 0;
    let mut reader = Reader::new(payload);
    while !reader.is_empty() {
        // A field the walker cannot read (or an unknown group, which prost skips): prost's verdict.
        let Some((number, wire_type)) = reader.key() else { return decoded_by_prost(payload) };
        match (number, wire_type) {
            // Singular fields: the last one wins, as prost decodes them.
            (record_field::CUSTOMER_ID, LENGTH_DELIMITED) => match reader.length_delimited().and_then(utf8) {
                Some(text) => view.customer_id = text.to_owned(),
                None => return decoded_by_prost(payload),
            },
            (record_field::RECEIVED_AT_UNIX_MS, VARINT) => match reader.varint() {
                // Two's complement, as protobuf encodes int64.
                Some(value) => view.received_at_unix_ms = value as i64,
                None => return decoded_by_prost(payload),
            },
            (record_field::BATCH_ID, LENGTH_DELIMITED) => match reader.length_delimited().and_then(utf8) {
                Some(text) => view.batch_id = text.to_owned(),
                None => return decoded_by_prost(payload),
            },
            (record_field::COLLECTOR_ID, LENGTH_DELIMITED) => match reader.length_delimited().and_then(utf8) {
                Some(text) => view.collector_id = text.to_owned(),
                None => return decoded_by_prost(payload),
            },
            (record_field::EVENTS, LENGTH_DELIMITED) => {
                let Some(encoded) = reader.length_delimited() else { return decoded_by_prost(payload) };
                let (event, time, dropped) = event_bytes(encoded)?;
                view.events.push(event);
                occurred_at.push(time);
                dropped_numbers += dropped;
            }
            (record_field::OUTCOMES, LENGTH_DELIMITED) => {
                let Some(encoded) = reader.length_delimited() else { return decoded_by_prost(payload) };
                view.outcomes.push(OutcomeCount::decode(encoded).map_err(|error| error.to_string())?);
            }
            (record_field::PLAN_CHECKS, LENGTH_DELIMITED) => {
                let Some(encoded) = reader.length_delimited() else { return decoded_by_prost(payload) };
                view.plan_checks.push(PlanCheckCount::decode(encoded).map_err(|error| error.to_string())?);
            }
            // A known field with another wire type: prost's verdict.
            (record_field::CUSTOMER_ID..=record_field::PLAN_CHECKS, _) => return decoded_by_prost(payload),
            // Unknown fields are skipped, as prost skips them.
            (_, wire_type) => {
                if reader.skip(wire_type).is_none() {
                    return decoded_by_prost(payload);
                }
            }
        }
    }
    Ok(DecodedView { view, occurred_at, dropped_numbers })
}

/// How many events the record holds, to size its lists once (a 100-event record grew each of them
/// eight times, copying it each time): it reads only each top-level field's key and length. It stops
/// at a field it cannot read, where the walk stops too.
fn count_events(payload: &[u8]) -> usize {
    let mut reader = Reader::new(payload);
    let mut events = 0;
    while !reader.is_empty() {
        let Some((number, wire_type)) = reader.key() else { break };
        if reader.skip(wire_type).is_none() {
            break;
        }
        events += usize::from(number == record_field::EVENTS && wire_type == LENGTH_DELIMITED);
    }
    events
}

/// An event read from a record: its view, its `occurred_at` as (seconds, nanos) if set, and how many
/// non-finite numbers it lost.
type ReadEvent<'a> = (EventBytes<'a>, Option<(i64, i32)>, usize);

/// The view of a record the walker could not read: prost's error, or, when prost reads it (an unknown
/// field encoded as a group, which the walker does not skip), its decoding with every event encoded
/// again.
fn decoded_by_prost(payload: &[u8]) -> Result<DecodedView<'static>, ViewError> {
    let record = EventBatchRecord::decode(payload).map_err(|error| error.to_string())?;
    let mut occurred_at = Vec::with_capacity(record.events.len());
    let mut dropped_numbers = 0;
    let mut events = Vec::with_capacity(record.events.len());
    for event in record.events {
        let (event, time, dropped) = encoded_again(event);
        events.push(event);
        occurred_at.push(time);
        dropped_numbers += dropped;
    }
    let view = RecordView {
        customer_id: record.customer_id,
        received_at_unix_ms: record.received_at_unix_ms,
        batch_id: record.batch_id,
        collector_id: record.collector_id,
        events,
        outcomes: record.outcomes,
        plan_checks: record.plan_checks,
    };
    Ok(DecodedView { view, occurred_at, dropped_numbers })
}

/// One event: its bytes as they are when plain, else prost's decoding of it, without its non-finite
/// numbers, encoded again. Also its time and how many numbers it lost.
fn event_bytes(encoded: &[u8]) -> Result<ReadEvent<'_>, ViewError> {
    if let Some(plain) = plain_event(encoded) {
        let event = EventBytes {
            event_id: Cow::Borrowed(plain.event_id),
            occurred_at_ms: time_ms(plain.occurred_at),
            user_id: plain.user_id.map(Cow::Borrowed),
            encoded: Cow::Borrowed(encoded),
        };
        return Ok((event, plain.occurred_at, 0));
    }
    let decoded = Event::decode(encoded).map_err(|error| error.to_string())?;
    Ok(encoded_again(decoded))
}

/// A decoded event without its non-finite numbers, encoded; its time and how many numbers it lost.
fn encoded_again(mut decoded: Event) -> ReadEvent<'static> {
    let properties_before = decoded.properties.len();
    decoded.properties.retain(|_, value| !matches!(value.kind, Some(Kind::NumberValue(number)) if !number.is_finite()));
    let dropped = properties_before - decoded.properties.len();
    let occurred_at = decoded.occurred_at.as_ref().map(|time| (time.seconds, time.nanos));
    let encoded = decoded.encode_to_vec();
    let event = EventBytes {
        event_id: Cow::Owned(decoded.event_id),
        occurred_at_ms: time_ms(occurred_at),
        user_id: decoded.user_id.map(Cow::Owned),
        encoded: Cow::Owned(encoded),
    };
    (event, occurred_at, dropped)
}

fn time_ms(occurred_at: Option<(i64, i32)>) -> i64 {
    occurred_at.map(|(seconds, nanos)| hour::epoch_millis(seconds, nanos)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
