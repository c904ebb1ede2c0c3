//! The walk over a record's bytes that [`decode`](super::decode) does: a reader of protobuf's wire
//! format and the plain-form check of one event (see the parent module's doc).
//!
//! It reads each byte of an event once, in one pass over the event and its nested messages, with the
//! common case inlined: nearly every key and length inside an event fits in one byte, and nearly every
//! string is ASCII. On the generic field iterator the block readers use, the walk was about a fifth of
//! the ingestor's CPU samples; this way it is under a tenth (README: Performance). Anything it does not
//! expect makes it answer `None`, and then prost decides: it must never accept what prost refuses, and
//! only what it reads as prost does, which the tests check against prost on damaged payloads (and
//! fuzz/'s `log_record`).

/// Wire types of protobuf's encoding.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LENGTH_DELIMITED: u8 = 2;
pub(super) const FIXED32: u8 = 5;

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

/// Reads protobuf's wire format from a slice, refusing what prost refuses: a varint past ten bytes or
/// 64 bits, a key naming field 0 or past `u32`, a length past the end. Every method answers `None` on
/// anything malformed.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    #[inline(always)]
    pub(super) fn varint(&mut self) -> Option<u64> {
        match self.bytes.split_first() {
            Some((&byte, rest)) if byte < 0x80 => {
                self.bytes = rest;
                Some(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    /// A varint of more than one byte (or none at all).
    #[inline(never)]
    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (index, &byte) in self.bytes.iter().enumerate().take(10) {
            // The tenth byte holds the 64th bit only: more is an overflow, which prost refuses too.
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[index + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A field's key: its number and wire type.
    #[inline(always)]
    pub(super) fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        // Field numbers run from 1 to 2^29 - 1, as prost checks: a wider key would alias a field
        // number once cut to `u32`.
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return None;
        }
        Some(((key >> 3) as u32, (key & 7) as u8))
    }

    #[inline(always)]
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        if length > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Some(taken)
    }

    /// A length-delimited value's bytes.
    #[inline(always)]
    pub(super) fn length_delimited(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.varint()?).ok()?;
        self.take(length)
    }

    #[inline]
    pub(super) fn fixed64(&mut self) -> Option<u64> {
        let bytes = self.take(8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Passes over a value of `wire_type` (groups are not read: the walker leaves them to prost).
    #[inline]
    pub(super) fn skip(&mut self, wire_type: u8) -> Option<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LENGTH_DELIMITED => self.length_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }
}

/// `bytes` as text if they are UTF-8, as prost requires of a string field.
#[inline(always)]
pub(super) fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is UTF-8. The names, ids and values Hourglass sees are
        // nearly all ASCII, and `is_ascii` checks a word at a time where `from_utf8` goes byte by byte
        // through a string this short.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

/// The fields the write path reads of an event in the plain form.
pub(super) struct PlainEvent<'a> {
    pub(super) event_id: &'a str,
    pub(super) occurred_at: Option<(i64, i32)>,
    pub(super) user_id: Option<&'a str>,
}

/// Which singular fields of a message were met, to find one met twice.
#[derive(Default)]
struct FieldsSeen(u32);

impl FieldsSeen {
    /// `Some` the first time field `number` (below 32) is met, `None` the second.
    #[inline(always)]
    fn once(&mut self, number: u32) -> Option<()> {
        let bit = 1u32 << number;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

/// The event's fields if it is in the plain form (see the parent module's doc), else `None`: then
/// prost decides what it holds, or that it is malformed.
pub(super) fn plain_event(encoded: &[u8]) -> Option<PlainEvent<'_>> {
    let mut event = PlainEvent { event_id: "", occurred_at: None, user_id: None };
    let mut seen = FieldsSeen::default();
    let mut previous_name: Option<&str> = None;
    let mut sorted = true;
    let mut properties = 0usize;
    let mut reader = Reader::new(encoded);
    while !reader.is_empty() {
        let (number, wire_type) = reader.key()?;
        // Every field of an event is length-delimited; another wire type is prost's to judge.
        if wire_type != LENGTH_DELIMITED {
            return None;
        }
        let value = reader.length_delimited()?;
        match number {
            event_field::EVENT_ID => {
                seen.once(number)?;
                event.event_id = utf8(value)?;
            }
            event_field::EVENT_TYPE => {
                seen.once(number)?;
                utf8(value)?;
            }
            event_field::OCCURRED_AT => {
                seen.once(number)?;
                event.occurred_at = Some(plain_timestamp(value)?);
            }
            event_field::USER_ID => {
                seen.once(number)?;
                event.user_id = Some(utf8(value)?);
            }
            event_field::PROPERTIES => {
                let name = plain_property(value)?;
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

/// A `google.protobuf.Timestamp` in the plain form: (seconds, nanos).
#[inline]
fn plain_timestamp(encoded: &[u8]) -> Option<(i64, i32)> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut seen = FieldsSeen::default();
    let mut reader = Reader::new(encoded);
    while !reader.is_empty() {
        match reader.key()? {
            // Two's complement, as protobuf encodes int64 and int32.
            (1, VARINT) => {
                seen.once(1)?;
                seconds = reader.varint()? as i64;
            }
            (2, VARINT) => {
                seen.once(2)?;
                nanos = reader.varint()? as i32;
            }
            _ => return None,
        }
    }
    Some((seconds, nanos))
}

/// A property map entry in the plain form, its value finite if a number: its name.
#[inline]
fn plain_property(entry: &[u8]) -> Option<&str> {
    let mut name = "";
    let mut seen = FieldsSeen::default();
    let mut reader = Reader::new(entry);
    while !reader.is_empty() {
        let (number, wire_type) = reader.key()?;
        if wire_type != LENGTH_DELIMITED {
            return None;
        }
        let value = reader.length_delimited()?;
        match number {
            1 => {
                seen.once(number)?;
                name = utf8(value)?;
            }
            2 => {
                seen.once(number)?;
                plain_property_value(value)?;
            }
            _ => return None,
        }
    }
    Some(name)
}

/// A `PropertyValue` with at most one kind, a finite number if one.
#[inline]
fn plain_property_value(encoded: &[u8]) -> Option<()> {
    let mut reader = Reader::new(encoded);
    if reader.is_empty() {
        return Some(());
    }
    match reader.key()? {
        (1, LENGTH_DELIMITED) => {
            utf8(reader.length_delimited()?)?;
        }
        (2, FIXED64) => {
            if !f64::from_bits(reader.fixed64()?).is_finite() {
                return None;
            }
        }
        (3, VARINT) => {
            reader.varint()?;
        }
        _ => return None,
    }
    // A second kind (or the same one twice): prost's oneof keeps the last.
    reader.is_empty().then_some(())
}

/// Whether two properties of an event (already walked as plain) share a name.
fn has_duplicate_names(encoded: &[u8]) -> bool {
    let names = || {
        let mut reader = Reader::new(encoded);
        std::iter::from_fn(move || {
            while !reader.is_empty() {
                // The event was walked as plain: every field is length-delimited and well formed.
                let (number, _) = reader.key()?;
                let value = reader.length_delimited()?;
                if number == event_field::PROPERTIES {
                    return plain_property(value);
                }
            }
            None
        })
    };
    names().enumerate().any(|(index, name)| names().take(index).any(|earlier| earlier == name))
}
