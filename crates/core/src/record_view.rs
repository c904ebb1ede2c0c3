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
use crate::raw_block::{WireFields, WireValue};

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

/// Field numbers of `hourglass.v1.Event`.
mod event_field {
    pub const EVENT_ID: u32 = 1;
    pub const EVENT_TYPE: u32 = 2;
    pub const OCCURRED_AT: u32 = 3;
    pub const USER_ID: u32 = 4;
    pub const PROPERTIES: u32 = 5;
}

/// Unsorted properties past this many are checked for duplicates by prost instead: the check without
/// allocating is pairwise, so quadratic (encoders that do not sort map keys, Python's and Go's, are used
/// with a handful).
const MAX_UNSORTED_PROPERTIES: usize = 32;

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
    let mut view = RecordView {
        customer_id: String::new(),
        received_at_unix_ms: 0,
        batch_id: String::new(),
        collector_id: String::new(),
        events: Vec::new(),
        outcomes: Vec::new(),
        plan_checks: Vec::new(),
    };
    let mut occurred_at = Vec::new();
    let mut dropped_numbers = 0;
    for field in WireFields::new(payload) {
        // A field the walker cannot read (or an unknown group, which prost skips): prost's verdict.
        let Ok((number, value)) = field else { return decoded_by_prost(payload) };
        match number {
            // Singular fields: the last one wins, as prost decodes them.
            record_field::CUSTOMER_ID => match value.text(number) {
                Ok(text) => view.customer_id = text.to_owned(),
                Err(_) => return decoded_by_prost(payload),
            },
            record_field::RECEIVED_AT_UNIX_MS => match value.varint(number) {
                // Two's complement, as protobuf encodes int64.
                Ok(value) => view.received_at_unix_ms = value as i64,
                Err(_) => return decoded_by_prost(payload),
            },
            record_field::BATCH_ID => match value.text(number) {
                Ok(text) => view.batch_id = text.to_owned(),
                Err(_) => return decoded_by_prost(payload),
            },
            record_field::COLLECTOR_ID => match value.text(number) {
                Ok(text) => view.collector_id = text.to_owned(),
                Err(_) => return decoded_by_prost(payload),
            },
            record_field::EVENTS => {
                let Ok(encoded) = value.bytes(number) else { return decoded_by_prost(payload) };
                let (event, time, dropped) = event_bytes(encoded)?;
                view.events.push(event);
                occurred_at.push(time);
                dropped_numbers += dropped;
            }
            record_field::OUTCOMES => {
                let Ok(encoded) = value.bytes(number) else { return decoded_by_prost(payload) };
                view.outcomes.push(OutcomeCount::decode(encoded).map_err(|error| error.to_string())?);
            }
            record_field::PLAN_CHECKS => {
                let Ok(encoded) = value.bytes(number) else { return decoded_by_prost(payload) };
                view.plan_checks.push(PlanCheckCount::decode(encoded).map_err(|error| error.to_string())?);
            }
            // Unknown fields are skipped, as prost skips them.
            _ => {}
        }
    }
    Ok(DecodedView { view, occurred_at, dropped_numbers })
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
    if let Some(plain) = PlainEvent::walk(encoded) {
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

/// The fields the write path reads of an event in the plain form.
struct PlainEvent<'a> {
    event_id: &'a str,
    occurred_at: Option<(i64, i32)>,
    user_id: Option<&'a str>,
}

impl<'a> PlainEvent<'a> {
    /// The event's fields if it is in the plain form (see the module's doc), else `None`: then prost
    /// decides what it holds, or that it is malformed.
    fn walk(encoded: &'a [u8]) -> Option<Self> {
        let mut event = PlainEvent { event_id: "", occurred_at: None, user_id: None };
        let mut seen = FieldsSeen::default();
        let mut previous_name: Option<&str> = None;
        let mut sorted = true;
        let mut properties = 0usize;
        for field in WireFields::new(encoded) {
            let (number, value) = field.ok()?;
            match number {
                event_field::EVENT_ID => event.event_id = seen.once(number, value)?.text(number).ok()?,
                event_field::EVENT_TYPE => {
                    seen.once(number, value)?.text(number).ok()?;
                }
                event_field::OCCURRED_AT => {
                    event.occurred_at = Some(plain_timestamp(seen.once(number, value)?.bytes(number).ok()?)?);
                }
                event_field::USER_ID => event.user_id = Some(seen.once(number, value)?.text(number).ok()?),
                event_field::PROPERTIES => {
                    let name = plain_property(value.bytes(number).ok()?)?;
                    sorted &= previous_name.is_none_or(|previous| previous < name);
                    previous_name = Some(name);
                    properties += 1;
                }
                // An unknown field: prost's encoding strips it.
                _ => return None,
            }
        }
        if !sorted && (properties > MAX_UNSORTED_PROPERTIES || has_duplicate_names(encoded)) {
            return None;
        }
        Some(event)
    }
}

/// Which singular fields of a message were met, to find one met twice.
#[derive(Default)]
struct FieldsSeen(u32);

impl FieldsSeen {
    /// `value` the first time field `number` (below 32) is met, `None` the second.
    fn once<'a>(&mut self, number: u32, value: WireValue<'a>) -> Option<WireValue<'a>> {
        let bit = 1u32 << number;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(value)
    }
}

/// A `google.protobuf.Timestamp` in the plain form: (seconds, nanos).
fn plain_timestamp(encoded: &[u8]) -> Option<(i64, i32)> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut seen = FieldsSeen::default();
    for field in WireFields::new(encoded) {
        let (number, value) = field.ok()?;
        match number {
            // Two's complement, as protobuf encodes int64 and int32.
            1 => seconds = seen.once(number, value)?.varint(number).ok()? as i64,
            2 => nanos = seen.once(number, value)?.varint(number).ok()? as i32,
            _ => return None,
        }
    }
    Some((seconds, nanos))
}

/// A property map entry in the plain form, its value finite if a number: its name.
fn plain_property(entry: &[u8]) -> Option<&str> {
    let mut name = "";
    let mut seen = FieldsSeen::default();
    for field in WireFields::new(entry) {
        let (number, value) = field.ok()?;
        match number {
            1 => name = seen.once(number, value)?.text(number).ok()?,
            2 => plain_property_value(seen.once(number, value)?.bytes(number).ok()?)?,
            _ => return None,
        }
    }
    Some(name)
}

/// A `PropertyValue` with at most one kind, a finite number if one.
fn plain_property_value(encoded: &[u8]) -> Option<()> {
    let mut kinds = 0;
    for field in WireFields::new(encoded) {
        let (number, value) = field.ok()?;
        match (number, value) {
            (1, value) => {
                value.text(number).ok()?;
            }
            (2, WireValue::Fixed64(bits)) if f64::from_bits(bits).is_finite() => {}
            (3, value) => {
                value.varint(number).ok()?;
            }
            _ => return None,
        }
        kinds += 1;
    }
    (kinds <= 1).then_some(())
}

/// Whether two properties of an event (already walked as plain) share a name.
fn has_duplicate_names(encoded: &[u8]) -> bool {
    let names = || {
        WireFields::new(encoded).filter_map(|field| match field {
            Ok((event_field::PROPERTIES, WireValue::Bytes(entry))) => plain_property(entry),
            _ => None,
        })
    };
    names().enumerate().any(|(index, name)| names().take(index).any(|earlier| earlier == name))
}

#[cfg(test)]
mod tests;
