//! The JSON-lines input of `hourglass send --file` (`hourglass_core::json_event::parse_line`): whatever a
//! user's file holds.
//!
//! Input: the bytes as one line. Properties: a line gives an event or a typed error, never a panic; an
//! event has a valid protobuf time (nanoseconds within 0..1e9, as the collector requires: a line the
//! parser accepts must not become an event the collector rejects for its encoding), every property has
//! a value and every number is finite.

#![no_main]

use hourglass_core::json_event::parse_line;
use hourglass_proto::v1::property_value::Kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(event) = parse_line(line) else { return };
    assert!(!event.event_id.is_empty() || line.contains("event_id") || line.contains("eventId"));
    let time = event.occurred_at.expect("a parsed event has a time");
    assert!((0..1_000_000_000).contains(&time.nanos), "{line:?} gave occurred_at {time:?}");
    for (name, value) in &event.properties {
        match &value.kind {
            None => panic!("property {name:?} has no value"),
            Some(Kind::NumberValue(number)) => assert!(number.is_finite(), "property {name:?} is {number}"),
            Some(Kind::StringValue(_) | Kind::BoolValue(_)) => {}
        }
    }
});
