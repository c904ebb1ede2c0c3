//! An event-log record as the ingestor reads it from Kafka or `log.db`: `record::decode` of its
//! schema-version header and payload, then the raw store's blocks built from it and read back.
//!
//! Input: the first byte picks the header (0: none, 1: "1", 2: the next `byte % 8` bytes, anything
//! else: "1"); the rest is the payload. Properties:
//! - decoding arbitrary bytes returns a record or a typed error, never panics;
//! - a record that decodes re-encodes (`record::encode`) to one that decodes to itself;
//! - `record::decode_view`, the ingestor's path, accepts exactly the records `decode` accepts;
//! - the blocks built from that view (`raw_block::record_blocks`) hold each event exactly once, in the
//!   block of its hour and bucket, and reading a block back (`Decompressor`, `EventView`, as both raw
//!   stores do) gives the event's fields and properties as `decode` read them.

#![no_main]

use std::collections::BTreeMap;

use hourglass_core::hour;
use hourglass_core::raw_block::{Decompressor, EventView, record_blocks};
use hourglass_core::raw_store::{StoredEvent, bucket_of};
use hourglass_core::record::{self, SCHEMA_VERSION_HEADER};
use hourglass_proto::v1::{Event, property_value};
use libfuzzer_sys::fuzz_target;

/// What a raw store must give back for `event`: its fields, and its properties that have a value.
fn expected(event: &Event, batch_id: &str) -> StoredEvent {
    let time = event.occurred_at.as_ref().expect("decode refuses events without a time");
    let mut stored = StoredEvent {
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        occurred_at_ms: time.seconds * 1000 + i64::from(time.nanos) / 1_000_000,
        user_id: event.user_id.clone(),
        string_properties: BTreeMap::new(),
        number_properties: BTreeMap::new(),
        bool_properties: BTreeMap::new(),
        batch_id: batch_id.to_owned(),
    };
    for (name, value) in &event.properties {
        match &value.kind {
            Some(property_value::Kind::StringValue(text)) => {
                stored.string_properties.insert(name.clone(), text.clone());
            }
            Some(property_value::Kind::NumberValue(number)) => {
                stored.number_properties.insert(name.clone(), *number);
            }
            Some(property_value::Kind::BoolValue(flag)) => {
                stored.bool_properties.insert(name.clone(), *flag);
            }
            None => {}
        }
    }
    stored
}

fuzz_target!(|data: &[u8]| {
    let Some((&header_form, rest)) = data.split_first() else { return };
    let (header, payload): (Option<&[u8]>, &[u8]) = match header_form {
        0 => (None, rest),
        2 => {
            let Some((&length, rest)) = rest.split_first() else { return };
            let (header, payload) = rest.split_at(usize::from(length % 8).min(rest.len()));
            (Some(header), payload)
        }
        _ => (Some(b"1"), rest),
    };
    let decoded = match record::decode(header, payload) {
        Ok(decoded) => decoded,
        Err(_) => {
            assert!(record::decode_view(header, payload).is_err(), "decode_view accepts what decode refuses");
            return;
        }
    };
    let view = record::decode_view(header, payload).expect("decode_view accepts what decode accepts");
    assert_eq!(view.events.len(), decoded.events.len(), "decode_view keeps the events decode keeps");

    let encoded = record::encode(decoded.customer_id.clone(), &decoded);
    let version = encoded.headers.iter().find(|(name, _)| *name == SCHEMA_VERSION_HEADER).map(|(_, value)| value);
    let again = record::decode(version.map(Vec::as_slice), &encoded.payload).expect("a decoded record decodes again");
    assert_eq!(again, decoded, "decode(encode(record)) is the record");

    for bucket_count in [1, 16] {
        let blocks = record_blocks(&view, bucket_count);
        let mut decompressor = Decompressor::new();
        let mut read_back = Vec::new();
        for block in &blocks {
            assert!(hour::is_supported_hour(block.hour_start), "block hour {}", block.hour_start);
            let events = decompressor.events(&block.block).expect("a block the ingestor wrote reads back");
            assert!(!events.is_empty(), "no empty block");
            for encoded_event in events {
                let view = EventView::parse(encoded_event).expect("an event the ingestor wrote parses");
                assert_eq!(bucket_of(view.event_id, bucket_count), block.bucket);
                assert_eq!(hour::hour_start(view.occurred_at_ms.div_euclid(1000)), block.hour_start);
                read_back.push(view.to_stored(&decoded.batch_id));
            }
        }
        // Blocks are in order of first touch and each keeps record order, so sorting by the position
        // in the record compares them with the record's events.
        let mut expected_events: Vec<StoredEvent> =
            decoded.events.iter().map(|event| expected(event, &decoded.batch_id)).collect();
        assert_eq!(read_back.len(), expected_events.len(), "every event in exactly one block");
        let position = |stored: &StoredEvent, candidates: &[StoredEvent]| candidates.iter().position(|c| c == stored);
        for stored in &read_back {
            let index = position(stored, &expected_events)
                .unwrap_or_else(|| panic!("a block holds {stored:?}, which is not an event of the record"));
            expected_events.remove(index);
        }
    }
});
