//! The uncompressed encoding of an event block: the bytes of an `EventBatchRecord` holding only its
//! `events` field, so any protobuf reader of the log format reads it. Stores read blocks with the
//! borrowing decoder here rather than with prost, so that folding a bucket allocates nothing per event.

use std::collections::BTreeMap;

use hourglass_proto::v1::Event;
use prost::Message;

use crate::raw_store::StoredEvent;

/// The field number of `EventBatchRecord.events`: a block is a sequence of these fields.
pub(super) const EVENTS_FIELD: u32 = 5;

/// Appends `event` to the uncompressed block `block`.
pub fn push_event(block: &mut Vec<u8>, event: &Event) {
    // The key of field 5, length-delimited (wire type 2), then the event's length and bytes.
    block.push(((EVENTS_FIELD << 3) | 2) as u8);
    // Writing to a Vec only fails when it cannot grow, which aborts anyway.
    event.encode_length_delimited(block).expect("a Vec grows as needed");
}

/// Appends an already encoded event (an item of [`block_events`]) to the uncompressed block `block`.
pub fn push_encoded_event(block: &mut Vec<u8>, encoded_event: &[u8]) {
    block.push(((EVENTS_FIELD << 3) | 2) as u8);
    prost::encoding::encode_varint(encoded_event.len() as u64, block);
    block.extend_from_slice(encoded_event);
}

/// Why a stored block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A field or the block ends early.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint runs past ten bytes or 64 bits.
    #[error("varint longer than 10 bytes or 64 bits")]
    VarintTooLong,
    /// A field key naming field 0 or one past `u32`, which protobuf does not allow.
    #[error("invalid field key {0}")]
    InvalidKey(u64),
    /// A wire type protobuf does not define (or a group).
    #[error("unsupported wire type {0}")]
    WireType(u64),
    /// A known field with another wire type than its declaration's.
    #[error("field {0} has the wrong wire type")]
    FieldType(u32),
    /// A string field that is not UTF-8.
    #[error("invalid UTF-8 in a string field")]
    Utf8,
    /// The block's first byte names a format this build does not know.
    #[error("unknown block format tag {0:#04x}")]
    UnknownFormat(u8),
    /// A compressed block that does not decompress to the length it states.
    #[error("corrupt compressed block: {0}")]
    Decompress(String),
}

/// A protobuf field's value, borrowed from the encoded message.
pub(crate) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> WireValue<'a> {
    pub(crate) fn bytes(self, field: u32) -> Result<&'a [u8], DecodeError> {
        match self {
            WireValue::Bytes(bytes) => Ok(bytes),
            _ => Err(DecodeError::FieldType(field)),
        }
    }

    pub(crate) fn text(self, field: u32) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| DecodeError::Utf8)
    }

    pub(crate) fn varint(self, field: u32) -> Result<u64, DecodeError> {
        match self {
            WireValue::Varint(value) => Ok(value),
            _ => Err(DecodeError::FieldType(field)),
        }
    }
}

/// The fields of an encoded protobuf message, in order, borrowed from it. Blocks are decoded this way
/// rather than with prost so that folding a bucket allocates nothing per event.
pub(crate) struct WireFields<'a> {
    remaining: &'a [u8],
}

impl<'a> WireFields<'a> {
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Self { remaining: message }
    }

    /// Keys and most lengths are below 128, one byte: that case is inlined, the rest is not.
    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        if let Some((&byte, rest)) = self.remaining.split_first()
            && byte < 0x80
        {
            self.remaining = rest;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (index, byte) in self.remaining.iter().enumerate().take(10) {
            // The tenth byte holds the 64th bit only: more is an overflow, which prost refuses too.
            if index == 9 && *byte > 1 {
                return Err(DecodeError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.remaining = &self.remaining[index + 1..];
                return Ok(value);
            }
        }
        Err(if self.remaining.len() < 10 { DecodeError::Truncated } else { DecodeError::VarintTooLong })
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining.len() < length {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.remaining.split_at(length);
        self.remaining = rest;
        Ok(taken)
    }

    #[inline]
    fn field(&mut self) -> Result<(u32, WireValue<'a>), DecodeError> {
        let key = self.varint()?;
        // Field numbers run from 1 to 2^29 - 1, as prost checks: a wider key would alias a field
        // number once cut to `u32`.
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return Err(DecodeError::InvalidKey(key));
        }
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let bytes = self.take(8)?;
                // `take(8)` returned exactly eight bytes.
                WireValue::Fixed64(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
            }
            2 => {
                let length = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                WireValue::Bytes(self.take(length)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed32
            }
            wire_type => return Err(DecodeError::WireType(wire_type)),
        };
        Ok((field, value))
    }
}

impl<'a> Iterator for WireFields<'a> {
    type Item = Result<(u32, WireValue<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a malformed field can be trusted.
            self.remaining = &[];
        }
        Some(field)
    }
}

/// The encoded events of an uncompressed block, in the order they were written.
pub fn block_events(block: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let mut events = Vec::new();
    for field in WireFields::new(block) {
        let (number, value) = field?;
        if number == EVENTS_FIELD {
            events.push(value.bytes(number)?);
        }
    }
    Ok(events)
}

/// A property value, borrowed from the encoded event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PropertyRef<'a> {
    /// A string value.
    String(&'a str),
    /// A number value.
    Number(f64),
    /// A boolean value.
    Bool(bool),
}

/// A `hourglass.v1.Event`, borrowed from its encoding. Parsing checks every field, properties
/// included, so iterating them later cannot fail.
pub struct EventView<'a> {
    /// The client's event id.
    pub event_id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// When it happened, in milliseconds since the Unix epoch (0 without a time).
    pub occurred_at_ms: i64,
    /// The user, if any.
    pub user_id: Option<&'a str>,
    /// The whole encoded event, which [`properties`](Self::properties) reads again.
    encoded: &'a [u8],
    /// The first number properties, in order, kept while parsing so that a fold visits them without
    /// walking the event a second time (its hottest loop).
    kept_numbers: [(&'a str, f64); KEPT_NUMBERS],
    /// The event's number properties; past [`KEPT_NUMBERS`], [`numbers`](Self::numbers) walks it again.
    number_count: usize,
}

/// Number properties an [`EventView`] keeps from parsing (most events have fewer).
const KEPT_NUMBERS: usize = 4;

impl<'a> EventView<'a> {
    /// Parses one encoded event (an item of [`block_events`]).
    pub fn parse(encoded: &'a [u8]) -> Result<Self, DecodeError> {
        let mut event = EventView {
            event_id: "",
            event_type: "",
            occurred_at_ms: 0,
            user_id: None,
            encoded,
            kept_numbers: [("", 0.0); KEPT_NUMBERS],
            number_count: 0,
        };
        for field in WireFields::new(encoded) {
            match field? {
                (1, value) => event.event_id = value.text(1)?,
                (2, value) => event.event_type = value.text(2)?,
                (3, value) => event.occurred_at_ms = parse_timestamp_ms(value.bytes(3)?)?,
                (4, value) => event.user_id = Some(value.text(4)?),
                (5, value) => {
                    if let Some((name, PropertyRef::Number(number))) = parse_property(value.bytes(5)?)? {
                        if let Some(kept) = event.kept_numbers.get_mut(event.number_count) {
                            *kept = (name, number);
                        }
                        event.number_count += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }

    /// An owned copy, as stored by the batch `batch_id`.
    pub fn to_stored(&self, batch_id: &str) -> StoredEvent {
        let mut stored = StoredEvent {
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            occurred_at_ms: self.occurred_at_ms,
            user_id: self.user_id.map(str::to_owned),
            string_properties: BTreeMap::new(),
            number_properties: BTreeMap::new(),
            bool_properties: BTreeMap::new(),
            batch_id: batch_id.to_owned(),
        };
        for (name, value) in self.properties() {
            match value {
                PropertyRef::String(text) => {
                    stored.string_properties.insert(name.to_owned(), text.to_owned());
                }
                PropertyRef::Number(number) => {
                    stored.number_properties.insert(name.to_owned(), number);
                }
                PropertyRef::Bool(flag) => {
                    stored.bool_properties.insert(name.to_owned(), flag);
                }
            }
        }
        stored
    }

    /// The numeric properties, as [`EventVisitor::visit`](crate::raw_store::EventVisitor::visit) takes them.
    pub fn numbers(&self) -> impl Iterator<Item = (&'a str, f64)> + use<'a> {
        // The same pairs in the same order either way: those kept, or those of a second walk.
        let all_kept = self.number_count <= KEPT_NUMBERS;
        let kept = all_kept.then_some(self.kept_numbers.into_iter().take(self.number_count));
        let walked = (!all_kept).then(|| {
            self.properties().filter_map(|(name, value)| match value {
                PropertyRef::Number(number) => Some((name, number)),
                PropertyRef::String(_) | PropertyRef::Bool(_) => None,
            })
        });
        kept.into_iter().flatten().chain(walked.into_iter().flatten())
    }

    /// The properties that have a value (as the CQL store, it drops one without).
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, PropertyRef<'a>)> + use<'a> {
        WireFields::new(self.encoded).filter_map(|field| match field {
            Ok((5, WireValue::Bytes(entry))) => parse_property(entry).ok().flatten(),
            _ => None,
        })
    }
}

/// `google.protobuf.Timestamp` in milliseconds since the Unix epoch.
fn parse_timestamp_ms(encoded: &[u8]) -> Result<i64, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    for field in WireFields::new(encoded) {
        match field? {
            // Two's complement, as protobuf encodes int64 and int32.
            (1, value) => seconds = value.varint(1)? as i64,
            (2, value) => nanos = value.varint(2)? as i32,
            _ => {}
        }
    }
    // Saturating, as in every store: a stored absurd time must not panic a reader.
    Ok(crate::hour::epoch_millis(seconds, nanos))
}

/// A `map<string, PropertyValue>` entry: its name and value, `None` for a value with no kind.
fn parse_property(entry: &[u8]) -> Result<Option<(&str, PropertyRef<'_>)>, DecodeError> {
    let mut name = "";
    let mut value = None;
    for field in WireFields::new(entry) {
        match field? {
            (1, key) => name = key.text(1)?,
            (2, property_value) => {
                // A oneof: the last kind present wins, as prost decodes it.
                value = None;
                for kind in WireFields::new(property_value.bytes(2)?) {
                    match kind? {
                        (1, text) => value = Some(PropertyRef::String(text.text(1)?)),
                        (2, WireValue::Fixed64(bits)) => value = Some(PropertyRef::Number(f64::from_bits(bits))),
                        (2, _) => return Err(DecodeError::FieldType(2)),
                        (3, flag) => value = Some(PropertyRef::Bool(flag.varint(3)? != 0)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(value.map(|value| (name, value)))
}

#[cfg(test)]
mod tests {
    use hourglass_proto::log::v1::EventBatchRecord;
    use hourglass_proto::v1::{PropertyValue, property_value};

    use super::*;

    fn property(kind: property_value::Kind) -> PropertyValue {
        PropertyValue { kind: Some(kind) }
    }

    #[test]
    fn a_block_decodes_as_an_event_batch_record_and_as_views() {
        let event = Event {
            event_id: "e-1".into(),
            event_type: "checkout".into(),
            occurred_at: Some(hourglass_proto::prost_types::Timestamp { seconds: -5, nanos: 250_000_000 }),
            user_id: Some(String::new()),
            properties: [
                ("plan".to_owned(), property(property_value::Kind::StringValue("pro".into()))),
                ("amount".to_owned(), property(property_value::Kind::NumberValue(-12.5))),
                ("first".to_owned(), property(property_value::Kind::BoolValue(true))),
                ("empty".to_owned(), PropertyValue { kind: None }),
            ]
            .into_iter()
            .collect(),
        };
        let bare = Event { event_id: "e-2".into(), ..Event::default() };
        let mut block = Vec::new();
        for event in [&event, &bare] {
            block.push(((EVENTS_FIELD << 3) | 2) as u8);
            event.encode_length_delimited(&mut block).unwrap();
        }

        let record = EventBatchRecord::decode(block.as_slice()).unwrap();
        assert_eq!(record.events, vec![event.clone(), bare]);

        let encoded = block_events(&block).unwrap();
        assert_eq!(encoded.len(), 2);
        let view = EventView::parse(encoded[0]).unwrap();
        assert_eq!((view.event_id, view.event_type, view.user_id), ("e-1", "checkout", Some("")));
        assert_eq!(view.occurred_at_ms, -4750);
        let mut properties: Vec<_> = view.properties().collect();
        properties.sort_by(|left, right| left.0.cmp(right.0));
        assert_eq!(
            properties,
            vec![
                ("amount", PropertyRef::Number(-12.5)),
                ("first", PropertyRef::Bool(true)),
                ("plan", PropertyRef::String("pro")),
            ]
        );
        let bare_view = EventView::parse(encoded[1]).unwrap();
        assert_eq!((bare_view.event_id, bare_view.event_type, bare_view.user_id), ("e-2", "", None));
        assert_eq!(bare_view.occurred_at_ms, 0);
        assert_eq!(bare_view.properties().count(), 0);
    }

    #[test]
    fn numbers_kept_from_parsing_are_those_a_second_walk_finds() {
        // Below, at and past the numbers an EventView keeps, and a name twice (two map entries on the
        // wire, both visited, as a walk visits them).
        for numbers in [0, 1, 4, 5, 9] {
            let mut encoded = Event { event_id: "e".into(), ..Event::default() }.encode_to_vec();
            for index in 0..numbers {
                let mut entry = Event::default();
                let name = if index == 3 { "n0".to_owned() } else { format!("n{index}") };
                entry.properties.insert(name, property(property_value::Kind::NumberValue(index as f64 - 0.5)));
                entry.properties.insert(format!("s{index}"), property(property_value::Kind::StringValue("x".into())));
                encoded.extend(entry.encode_to_vec());
            }
            let view = EventView::parse(&encoded).unwrap();
            let walked: Vec<(&str, f64)> = view
                .properties()
                .filter_map(|(name, value)| match value {
                    PropertyRef::Number(number) => Some((name, number)),
                    _ => None,
                })
                .collect();
            assert_eq!(walked.len(), numbers);
            assert_eq!(view.numbers().collect::<Vec<_>>(), walked, "{numbers} number properties");
        }
    }

    #[test]
    fn a_truncated_block_is_an_error() {
        let event = Event { event_id: "e-1".into(), event_type: "view".into(), ..Event::default() };
        let mut block = vec![((EVENTS_FIELD << 3) | 2) as u8];
        event.encode_length_delimited(&mut block).unwrap();
        block.pop();
        assert!(matches!(block_events(&block), Err(DecodeError::Truncated)));
        assert!(matches!(EventView::parse(&[0x0a, 0x05, b'a']), Err(DecodeError::Truncated)));
        assert!(matches!(EventView::parse(&[0x0a, 0x01, 0xff]), Err(DecodeError::Utf8)));
    }
}
