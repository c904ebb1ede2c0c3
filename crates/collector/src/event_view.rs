//! Reading an event where it lies: the collector validates each event from its encoded bytes and copies
//! the accepted ones into the record as they came, instead of decoding every event into owned structs
//! (a `String` per field, a `BTreeMap` of properties) and encoding it again.
//!
//! [`EventView::parse`] walks one encoded `hourglass.v1.Event` without allocating and keeps borrowed
//! fields. It accepts only the **plain form**: fields the collector knows, each singular field at most
//! once (a `PropertyValue` with one of its values, a timestamp and a map entry with each of their fields
//! at most once), distinct property names. That is what every protobuf library writes. Anything else,
//! an event [`ReadEvent::read`] hands to prost as before:
//!
//! - **Unknown fields are stripped**, as decoding and re-encoding always did. Copying them through would
//!   put bytes nobody validated into the event log, where a later schema could give their field numbers
//!   a meaning (and a wire type: a reader that then fails to decode the record would dead-letter a whole
//!   acknowledged batch).
//! - **Repeated singular fields and duplicate property names** are resolved as protobuf does (last wins,
//!   sub-messages merge), so the record never carries what the validated event does not.
//! - **Malformed bytes** are prost's verdict, word for word: the walker says "not plain" on anything it
//!   does not expect, and prost's decode of that event gives the error the call fails with, as it did
//!   when tonic decoded the whole message. So the walker never needs to be right about an error, only
//!   about a success: what it accepts, prost accepts with the same values (tested against prost on
//!   mutated and random bytes).
//!
//! The rules of `validate` and `cardinality` read an event through [`EventFields`], which both the view
//! and the decoded [`Event`] implement, so the rules exist once for both forms.

use bytes::Bytes;
use hourglass_proto::v1::{Event, PropertyValue, property_value};
use prost::Message;

/// What validation and the cardinality limits read of an event.
pub trait EventFields {
    /// `event_id`.
    fn event_id(&self) -> &str;
    /// `event_type`.
    fn event_type(&self) -> &str;
    /// `occurred_at` as (seconds, nanoseconds), if set.
    fn occurred_at(&self) -> Option<(i64, i32)>;
    /// `user_id`, if set.
    fn user_id(&self) -> Option<&str>;
    /// How many properties, each name counted once.
    fn property_count(&self) -> usize;
    /// Each property once, in no particular order.
    fn properties(&self) -> impl Iterator<Item = (&str, PropertyRef<'_>)>;
}

/// A property's value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PropertyRef<'a> {
    /// No value set (a `PropertyValue` without its oneof).
    Missing,
    /// A string.
    String(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

impl<'a> From<&'a PropertyValue> for PropertyRef<'a> {
    fn from(value: &'a PropertyValue) -> Self {
        match &value.kind {
            None => PropertyRef::Missing,
            Some(property_value::Kind::StringValue(text)) => PropertyRef::String(text),
            Some(property_value::Kind::NumberValue(number)) => PropertyRef::Number(*number),
            Some(property_value::Kind::BoolValue(flag)) => PropertyRef::Bool(*flag),
        }
    }
}

impl<'a> From<PropertyRef<'a>> for hourglass_core::tracking_plan::PlanValue<'a> {
    fn from(value: PropertyRef<'a>) -> Self {
        use hourglass_core::tracking_plan::PlanValue;
        match value {
            PropertyRef::Missing => PlanValue::Missing,
            PropertyRef::String(text) => PlanValue::String(text),
            PropertyRef::Number(number) => PlanValue::Number(number),
            PropertyRef::Bool(flag) => PlanValue::Bool(flag),
        }
    }
}

impl EventFields for Event {
    fn event_id(&self) -> &str {
        &self.event_id
    }

    fn event_type(&self) -> &str {
        &self.event_type
    }

    fn occurred_at(&self) -> Option<(i64, i32)> {
        self.occurred_at.as_ref().map(|time| (time.seconds, time.nanos))
    }

    fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    fn property_count(&self) -> usize {
        self.properties.len()
    }

    fn properties(&self) -> impl Iterator<Item = (&str, PropertyRef<'_>)> {
        self.properties.iter().map(|(name, value)| (name.as_str(), PropertyRef::from(value)))
    }
}

/// Properties of an event in wrong order past this many are checked for duplicates by prost instead
/// (pairwise comparison is quadratic; encoders that do not sort map keys are the Python and Go
/// libraries, whose events have a handful).
const MAX_UNSORTED_PROPERTIES: usize = 32;

/// One encoded event in the plain form, its fields borrowed from the bytes.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    bytes: &'a [u8],
    event_id: &'a str,
    event_type: &'a str,
    occurred_at: Option<(i64, i32)>,
    user_id: Option<&'a str>,
    property_count: usize,
}

// Field numbers and wire types of `hourglass.v1.Event` and what it embeds (proto/hourglass/v1/event.proto).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const EVENT_ID: u32 = 1;
const EVENT_TYPE: u32 = 2;
const OCCURRED_AT: u32 = 3;
const USER_ID: u32 = 4;
const PROPERTIES: u32 = 5;

impl<'a> EventView<'a> {
    /// The event in `bytes`, or `None` when they are not an event in the plain form (see the module's
    /// doc): then they are for prost to decode or refuse.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut reader = Reader { bytes };
        let mut view =
            EventView { bytes, event_id: "", event_type: "", occurred_at: None, user_id: None, property_count: 0 };
        let mut seen_fields = 0u8;
        let mut previous_name: Option<&str> = None;
        let mut names_ascending = true;
        while !reader.is_empty() {
            let (field, wire_type) = reader.key()?;
            if wire_type != LENGTH_DELIMITED {
                return None;
            }
            let value = reader.length_delimited()?;
            match field {
                EVENT_ID | EVENT_TYPE | OCCURRED_AT | USER_ID => {
                    let bit = 1u8 << field;
                    if seen_fields & bit != 0 {
                        return None;
                    }
                    seen_fields |= bit;
                    match field {
                        EVENT_ID => view.event_id = utf8(value)?,
                        EVENT_TYPE => view.event_type = utf8(value)?,
                        OCCURRED_AT => view.occurred_at = Some(parse_timestamp(value)?),
                        _ => view.user_id = Some(utf8(value)?),
                    }
                }
                PROPERTIES => {
                    let (name, _) = parse_property(value, utf8)?;
                    names_ascending &= previous_name.is_none_or(|previous| previous < name);
                    previous_name = Some(name);
                    view.property_count += 1;
                }
                _ => return None,
            }
        }
        // Sorted names (prost's and every deterministic encoder's order) are distinct; others are
        // compared.
        if !names_ascending && !view.names_distinct() {
            return None;
        }
        Some(view)
    }

    /// Whether no two properties share a name (at most [`MAX_UNSORTED_PROPERTIES`], else `false`).
    fn names_distinct(&self) -> bool {
        if self.property_count > MAX_UNSORTED_PROPERTIES {
            return false;
        }
        let mut names = [""; MAX_UNSORTED_PROPERTIES];
        for (slot, (name, _)) in names.iter_mut().zip(self.properties()) {
            *slot = name;
        }
        let names = &names[..self.property_count];
        names.iter().enumerate().all(|(index, name)| !names[index + 1..].contains(name))
    }
}

impl EventFields for EventView<'_> {
    fn event_id(&self) -> &str {
        self.event_id
    }

    fn event_type(&self) -> &str {
        self.event_type
    }

    fn occurred_at(&self) -> Option<(i64, i32)> {
        self.occurred_at
    }

    fn user_id(&self) -> Option<&str> {
        self.user_id
    }

    fn property_count(&self) -> usize {
        self.property_count
    }

    fn properties(&self) -> impl Iterator<Item = (&str, PropertyRef<'_>)> {
        Properties { reader: Reader { bytes: self.bytes } }
    }
}

// The readers below are `#[inline]`: `Properties::next` is instantiated in the crates that visit the
// properties (the tracking plan's check is generic over them), where a function of this crate is not
// inlined otherwise, and each property would cost calls for its key, its length, its name and value.

/// The properties of a parsed view, read again from its bytes (which [`EventView::parse`] has checked,
/// so reading cannot fail; if it did, the iteration would just end).
struct Properties<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a str, PropertyRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.reader.is_empty() {
            let (field, _) = self.reader.key()?;
            let value = self.reader.length_delimited()?;
            if field == PROPERTIES {
                let property = parse_property(value, utf8_checked_by_parse);
                debug_assert!(property.is_some(), "parse checked every property");
                return property;
            }
        }
        None
    }
}

/// A `google.protobuf.Timestamp`: (seconds, nanos), each at most once, nothing else.
fn parse_timestamp(bytes: &[u8]) -> Option<(i64, i32)> {
    let mut reader = Reader { bytes };
    let (mut seconds, mut nanos) = (None, None);
    while !reader.is_empty() {
        match reader.key()? {
            // int64 and int32 are varints cut to their width, as prost reads them.
            (1, VARINT) if seconds.is_none() => seconds = Some(reader.varint()? as i64),
            (2, VARINT) if nanos.is_none() => nanos = Some(reader.varint()? as i32),
            _ => return None,
        }
    }
    Some((seconds.unwrap_or(0), nanos.unwrap_or(0)))
}

/// One entry of the properties map: (name, value), each at most once, nothing else; a missing name is
/// empty and a missing value has no kind, as protobuf reads them.
/// `text` reads a string's bytes: [`utf8`], or [`utf8_checked_by_parse`] when reading again what
/// [`EventView::parse`] has read.
#[inline]
fn parse_property<'a>(bytes: &'a [u8], text: fn(&'a [u8]) -> Option<&'a str>) -> Option<(&'a str, PropertyRef<'a>)> {
    let mut reader = Reader { bytes };
    let (mut name, mut value) = (None, None);
    while !reader.is_empty() {
        match reader.key()? {
            (1, LENGTH_DELIMITED) if name.is_none() => name = Some(text(reader.length_delimited()?)?),
            (2, LENGTH_DELIMITED) if value.is_none() => {
                value = Some(parse_value(reader.length_delimited()?, text)?);
            }
            _ => return None,
        }
    }
    Some((name.unwrap_or(""), value.unwrap_or(PropertyRef::Missing)))
}

/// A `PropertyValue`: at most one of its oneof's fields, once.
#[inline]
fn parse_value<'a>(bytes: &'a [u8], text: fn(&'a [u8]) -> Option<&'a str>) -> Option<PropertyRef<'a>> {
    let mut reader = Reader { bytes };
    if reader.is_empty() {
        return Some(PropertyRef::Missing);
    }
    let value = match reader.key()? {
        (1, LENGTH_DELIMITED) => PropertyRef::String(text(reader.length_delimited()?)?),
        (2, FIXED64) => PropertyRef::Number(f64::from_le_bytes(reader.take(8)?.try_into().ok()?)),
        (3, VARINT) => PropertyRef::Bool(reader.varint()? != 0),
        _ => return None,
    };
    reader.is_empty().then_some(value)
}

fn utf8(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A property's name or string value that [`EventView::parse`] has already found to be UTF-8: the
/// properties are read again from the view's bytes by every rule that visits them (validation, the
/// cardinality limits, the tracking plan), and checking the same bytes again each time was a tenth of
/// the tracking plan's cost per event (README: Tracking plans).
#[inline]
fn utf8_checked_by_parse(bytes: &[u8]) -> Option<&str> {
    debug_assert!(std::str::from_utf8(bytes).is_ok(), "parse checked every property's strings");
    // SAFETY: only `Properties` calls this, on the view's own bytes, which `EventView::parse` walked
    // with the same reader, reaching the same slices, and accepted only after `utf8` found each of these
    // strings valid; the bytes are borrowed immutably for the view's lifetime, so they have not changed.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Reads protobuf's wire format from a slice; every method returns `None` on anything malformed.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    #[inline]
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        if length > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Some(taken)
    }

    /// A base-128 varint of at most 10 bytes whose value fits 64 bits (prost's rule).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // Keys, lengths and flags are one byte nearly always.
        if let Some((&byte, rest)) = self.bytes.split_first()
            && byte < 0x80
        {
            self.bytes = rest;
            return Some(u64::from(byte));
        }
        let mut value = 0u64;
        for (index, &byte) in self.bytes.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                if index == 9 && byte > 1 {
                    return None;
                }
                self.bytes = &self.bytes[index + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A field's key: (field number, wire type). Field 0 and keys past 32 bits are refused, as prost
    /// refuses them.
    #[inline]
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = u32::try_from(self.varint()?).ok()?;
        let field = key >> 3;
        (field != 0).then_some((field, (key & 0x07) as u8))
    }

    #[inline]
    fn length_delimited(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.varint()?).ok()?;
        self.take(length)
    }
}

/// One event of a batch, read in place when it is in the plain form, decoded by prost otherwise.
pub enum ReadEvent<'a> {
    /// Read in place: copied into the record as it came.
    View(EventView<'a>),
    /// Decoded (unknown fields, repeated fields, duplicate names): encoded again if accepted, as every
    /// event was before.
    Decoded(Event),
}

impl<'a> ReadEvent<'a> {
    /// Reads one event; an error is prost's, for bytes that are no `hourglass.v1.Event`.
    pub fn read(bytes: &'a [u8]) -> Result<Self, prost::DecodeError> {
        match EventView::parse(bytes) {
            Some(view) => Ok(ReadEvent::View(view)),
            None => Event::decode(bytes).map(ReadEvent::Decoded),
        }
    }

    /// The bytes the record carries for this event: `bytes` (what it was read from) itself when read in
    /// place, the decoded event encoded again otherwise.
    pub fn record_bytes(&self, bytes: &Bytes) -> Bytes {
        match self {
            ReadEvent::View(_) => bytes.clone(),
            ReadEvent::Decoded(event) => Bytes::from(event.encode_to_vec()),
        }
    }
}

impl EventFields for ReadEvent<'_> {
    fn event_id(&self) -> &str {
        match self {
            ReadEvent::View(view) => view.event_id(),
            ReadEvent::Decoded(event) => EventFields::event_id(event),
        }
    }

    fn event_type(&self) -> &str {
        match self {
            ReadEvent::View(view) => view.event_type(),
            ReadEvent::Decoded(event) => EventFields::event_type(event),
        }
    }

    fn occurred_at(&self) -> Option<(i64, i32)> {
        match self {
            ReadEvent::View(view) => view.occurred_at(),
            ReadEvent::Decoded(event) => EventFields::occurred_at(event),
        }
    }

    fn user_id(&self) -> Option<&str> {
        match self {
            ReadEvent::View(view) => view.user_id(),
            ReadEvent::Decoded(event) => EventFields::user_id(event),
        }
    }

    fn property_count(&self) -> usize {
        match self {
            ReadEvent::View(view) => view.property_count(),
            ReadEvent::Decoded(event) => EventFields::property_count(event),
        }
    }

    fn properties(&self) -> impl Iterator<Item = (&str, PropertyRef<'_>)> {
        let (view, decoded) = match self {
            ReadEvent::View(view) => (Some(view.properties()), None),
            ReadEvent::Decoded(event) => (None, Some(EventFields::properties(event))),
        };
        view.into_iter().flatten().chain(decoded.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hourglass_proto::prost_types::Timestamp;

    use super::*;

    /// A property's value, owned and comparable (a number by its bits, so NaN equals itself).
    #[derive(Debug, PartialEq)]
    enum OwnedValue {
        Missing,
        String(String),
        Number(u64),
        Bool(bool),
    }

    /// Everything [`EventFields`] says of an event, owned, to compare a view with prost's decoding.
    #[derive(Debug, PartialEq)]
    struct Fields {
        event_id: String,
        event_type: String,
        occurred_at: Option<(i64, i32)>,
        user_id: Option<String>,
        property_count: usize,
        properties: BTreeMap<String, OwnedValue>,
    }

    fn fields(event: &impl EventFields) -> Fields {
        let properties: BTreeMap<String, OwnedValue> = event
            .properties()
            .map(|(name, value)| {
                let value = match value {
                    PropertyRef::Missing => OwnedValue::Missing,
                    PropertyRef::String(text) => OwnedValue::String(text.to_owned()),
                    PropertyRef::Number(number) => OwnedValue::Number(number.to_bits()),
                    PropertyRef::Bool(flag) => OwnedValue::Bool(flag),
                };
                (name.to_owned(), value)
            })
            .collect();
        Fields {
            event_id: event.event_id().to_owned(),
            event_type: event.event_type().to_owned(),
            occurred_at: event.occurred_at(),
            user_id: event.user_id().map(str::to_owned),
            property_count: event.property_count(),
            properties,
        }
    }

    fn value(kind: property_value::Kind) -> PropertyValue {
        PropertyValue { kind: Some(kind) }
    }

    fn sample_events() -> Vec<Event> {
        use property_value::Kind;
        vec![
            Event {
                event_id: "e1".into(),
                event_type: "page_view".into(),
                occurred_at: Some(Timestamp { seconds: 1_764_000_000, nanos: 123 }),
                user_id: Some("u1".into()),
                properties: [
                    ("path".to_owned(), value(Kind::StringValue("/".into()))),
                    ("amount".to_owned(), value(Kind::NumberValue(12.5))),
                    ("first".to_owned(), value(Kind::BoolValue(true))),
                    ("nan".to_owned(), value(Kind::NumberValue(f64::NAN))),
                    ("unset".to_owned(), PropertyValue { kind: None }),
                    (String::new(), value(Kind::StringValue(String::new()))),
                ]
                .into_iter()
                .collect(),
            },
            Event::default(),
            Event { user_id: Some(String::new()), occurred_at: Some(Timestamp::default()), ..Event::default() },
            Event {
                event_id: "é".repeat(200),
                event_type: "t".into(),
                occurred_at: Some(Timestamp { seconds: -5, nanos: -1 }),
                user_id: None,
                properties: (0..40).map(|index| (format!("p{index:02}"), value(Kind::BoolValue(false)))).collect(),
            },
        ]
    }

    /// protobuf's encoding of one field, for hand-made events.
    fn field(number: u32, wire_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(u64::from(number << 3 | u32::from(wire_type)), &mut bytes);
        if wire_type == LENGTH_DELIMITED {
            prost::encoding::encode_varint(payload.len() as u64, &mut bytes);
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    fn entry(name: &str, value: &PropertyValue) -> Vec<u8> {
        let mut payload = field(1, LENGTH_DELIMITED, name.as_bytes());
        payload.extend(field(2, LENGTH_DELIMITED, &value.encode_to_vec()));
        field(PROPERTIES, LENGTH_DELIMITED, &payload)
    }

    fn base_fields() -> Vec<u8> {
        let mut bytes = field(EVENT_ID, LENGTH_DELIMITED, b"e1");
        bytes.extend(field(EVENT_TYPE, LENGTH_DELIMITED, b"view"));
        let time = Timestamp { seconds: 1_764_000_000, nanos: 0 };
        bytes.extend(field(OCCURRED_AT, LENGTH_DELIMITED, &time.encode_to_vec()));
        bytes
    }

    #[test]
    fn a_prost_encoded_event_is_read_in_place_with_prosts_values() {
        for event in sample_events() {
            let bytes = Bytes::from(event.encode_to_vec());
            let view = EventView::parse(&bytes).unwrap_or_else(|| panic!("plain: {event:?}"));
            assert_eq!(fields(&view), fields(&event));
            let read = ReadEvent::read(&bytes).unwrap();
            assert!(matches!(read, ReadEvent::View(_)));
            assert_eq!(read.record_bytes(&bytes), bytes, "copied as it came");
        }
    }

    #[test]
    fn names_in_any_order_are_read_in_place_when_distinct() {
        use property_value::Kind;
        let mut bytes = base_fields();
        bytes.extend(entry("zeta", &value(Kind::BoolValue(true))));
        bytes.extend(entry("alpha", &value(Kind::NumberValue(1.0))));
        bytes.extend(entry("mid", &value(Kind::StringValue("x".into()))));
        let view = EventView::parse(&bytes).expect("distinct names in any order are plain");
        assert_eq!(fields(&view), fields(&Event::decode(bytes.as_slice()).unwrap()));
    }

    #[test]
    fn unknown_repeated_and_duplicate_fields_are_decoded_and_encoded_again_as_before() {
        use property_value::Kind;
        let mut unknown_top = base_fields();
        unknown_top.extend(field(6, VARINT, &[7]));
        let mut unknown_in_value = base_fields();
        let mut odd_value = value(Kind::BoolValue(true)).encode_to_vec();
        odd_value.extend(field(9, LENGTH_DELIMITED, b"future"));
        unknown_in_value.extend(field(
            PROPERTIES,
            LENGTH_DELIMITED,
            &[field(1, LENGTH_DELIMITED, b"flag"), field(2, LENGTH_DELIMITED, &odd_value)].concat(),
        ));
        let mut repeated_id = base_fields();
        repeated_id.extend(field(EVENT_ID, LENGTH_DELIMITED, b"e2"));
        let mut duplicate_names = base_fields();
        duplicate_names.extend(entry("a", &value(Kind::NumberValue(f64::NAN))));
        duplicate_names.extend(entry("b", &value(Kind::BoolValue(true))));
        duplicate_names.extend(entry("a", &value(Kind::NumberValue(1.0))));
        let mut two_values = base_fields();
        let both =
            [value(Kind::BoolValue(true)).encode_to_vec(), value(Kind::NumberValue(2.0)).encode_to_vec()].concat();
        two_values.extend(field(
            PROPERTIES,
            LENGTH_DELIMITED,
            &[field(1, LENGTH_DELIMITED, b"n"), field(2, LENGTH_DELIMITED, &both)].concat(),
        ));
        let mut split_time = base_fields();
        split_time.extend(field(OCCURRED_AT, LENGTH_DELIMITED, &field(2, VARINT, &[5])));

        for bytes in [unknown_top, unknown_in_value, repeated_id, duplicate_names, two_values, split_time] {
            assert!(EventView::parse(&bytes).is_none(), "{bytes:?} is not plain");
            let decoded = Event::decode(bytes.as_slice()).unwrap();
            let read = ReadEvent::read(&bytes).unwrap();
            assert_eq!(fields(&read), fields(&decoded));
            let record_bytes = read.record_bytes(&Bytes::copy_from_slice(&bytes));
            assert_eq!(record_bytes, decoded.encode_to_vec(), "encoded again: unknown fields gone, last wins");
        }
        let mut duplicate_names = base_fields();
        duplicate_names.extend(entry("a", &value(Kind::NumberValue(f64::NAN))));
        duplicate_names.extend(entry("a", &value(Kind::NumberValue(1.0))));
        let read = ReadEvent::read(&duplicate_names).unwrap();
        assert_eq!(read.property_count(), 1);
        assert_eq!(read.properties().collect::<Vec<_>>(), vec![("a", PropertyRef::Number(1.0))]);
    }

    #[test]
    fn malformed_bytes_get_prosts_error() {
        let valid = sample_events()[0].encode_to_vec();
        let mut bad_utf8 = field(EVENT_ID, LENGTH_DELIMITED, &[0xff, 0xfe]);
        bad_utf8.extend(base_fields());
        for bytes in [&valid[..valid.len() - 1], &bad_utf8[..], &[0x0a, 0x05, b'x'][..], &[0x00][..], &[0xff; 11][..]] {
            let expected = Event::decode(bytes).unwrap_err();
            let error = ReadEvent::read(bytes).err().unwrap_or_else(|| panic!("{bytes:?} is malformed"));
            assert_eq!(error, expected);
        }
    }

    /// SplitMix64, so the mutations are the same on every run.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            mixed ^ (mixed >> 31)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }
    }

    #[test]
    fn what_the_walker_reads_in_place_prost_decodes_to_the_same_values() {
        let originals: Vec<Vec<u8>> = sample_events().iter().map(Message::encode_to_vec).collect();
        let mut random = Random(24);
        let (mut in_place, mut by_prost, mut malformed) = (0, 0, 0);
        for round in 0..200_000 {
            let mut bytes = originals[round % originals.len()].clone();
            for _ in 0..=random.below(3) {
                let position = random.below(bytes.len());
                match random.below(5) {
                    0 if !bytes.is_empty() => bytes[position] ^= 1 << random.below(8),
                    1 if !bytes.is_empty() => bytes[position] = random.next() as u8,
                    2 => bytes.insert(position, random.next() as u8),
                    3 if !bytes.is_empty() => {
                        bytes.remove(position);
                    }
                    _ => bytes.truncate(position),
                }
            }
            let decoded = Event::decode(bytes.as_slice());
            if let Some(view) = EventView::parse(&bytes) {
                let decoded =
                    decoded.as_ref().unwrap_or_else(|error| panic!("{bytes:?} read in place, prost: {error}"));
                assert_eq!(fields(&view), fields(decoded), "{bytes:?}");
                in_place += 1;
            }
            match (ReadEvent::read(&bytes), decoded) {
                (Ok(read), Ok(decoded)) => {
                    assert_eq!(fields(&read), fields(&decoded), "{bytes:?}");
                    by_prost += usize::from(matches!(read, ReadEvent::Decoded(_)));
                }
                (Err(error), Err(expected)) => {
                    assert_eq!(error, expected);
                    malformed += 1;
                }
                (read, decoded) => panic!("{bytes:?}: read {:?}, prost {decoded:?}", read.err()),
            }
        }
        // Each kind of outcome is exercised, so no branch of the comparison is vacuous.
        assert!(in_place > 1000 && by_prost > 100 && malformed > 1000, "{in_place} {by_prost} {malformed}");
    }
}
