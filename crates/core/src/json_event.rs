//! Events written as JSON, one per line: the input of `hourglass send --file`.
//!
//! A line is one event; only `event_type` is required:
//! `{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false}}`
//! (camelCase names, as protobuf's JSON mapping writes them, are accepted too, and so is a property in
//! protobuf's JSON form, `{"numberValue": 3}`). A missing `event_id` gets a fresh UUIDv7; a missing
//! `occurred_at` is now. The line comes from whoever wrote the file, so every malformed line is a
//! [`JsonEventError`] naming what is wrong, never a panic (`fuzz/` feeds it arbitrary lines).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};
use serde_json::{Map, Value};

/// Why a line is not an event.
#[derive(Debug, thiserror::Error)]
pub enum JsonEventError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A field that must be a string is something else.
    #[error("{field} must be a string, not {found}")]
    NotString {
        /// The field, by its snake_case name.
        field: &'static str,
        /// What the line has there.
        found: Value,
    },
    /// No `event_type`.
    #[error("event_type is required")]
    MissingEventType,
    /// `occurred_at` is not an RFC 3339 time.
    #[error("occurred_at {time:?} is not an RFC 3339 time")]
    OccurredAt {
        /// The text given.
        time: String,
        /// What the parser said.
        #[source]
        source: chrono::ParseError,
    },
    /// `properties` is not an object.
    #[error("properties must be an object")]
    PropertiesNotObject,
    /// A property whose value is not a string, a number or a boolean.
    #[error("property {name}: expected a string, number or boolean")]
    Property {
        /// The property's name.
        name: String,
    },
}

fn field<'a>(object: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    object.get(snake).or_else(|| object.get(camel))
}

fn text(object: &Map<String, Value>, snake: &'static str, camel: &str) -> Result<Option<String>, JsonEventError> {
    match field(object, snake, camel) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(JsonEventError::NotString { field: snake, found: other.clone() }),
    }
}

/// The event of one JSON line (see the module's documentation for the format).
pub fn parse_line(line: &str) -> Result<Event, JsonEventError> {
    let value: Value = serde_json::from_str(line).map_err(JsonEventError::NotJson)?;
    let object = value.as_object().ok_or(JsonEventError::NotObject)?;
    let event_type = text(object, "event_type", "eventType")?.ok_or(JsonEventError::MissingEventType)?;
    let event_id = text(object, "event_id", "eventId")?.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let occurred_at = match text(object, "occurred_at", "occurredAt")? {
        Some(time) => {
            let parsed = chrono::DateTime::parse_from_rfc3339(&time)
                .map_err(|source| JsonEventError::OccurredAt { time: time.clone(), source })?;
            // A leap second (`23:59:60.5`) comes back as 23:59:59 with 1.5e9 nanoseconds, which is no valid
            // protobuf time (the collector rejects it); protobuf times have no leap seconds, so it is the
            // next second's instant, as a smearing clock would say.
            let subsec_nanos = i64::from(parsed.timestamp_subsec_nanos());
            Timestamp {
                seconds: parsed.timestamp() + subsec_nanos / 1_000_000_000,
                nanos: (subsec_nanos % 1_000_000_000) as i32,
            }
        }
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }
        }
    };
    let mut properties = BTreeMap::new();
    if let Some(given) = object.get("properties") {
        let given = given.as_object().ok_or(JsonEventError::PropertiesNotObject)?;
        for (name, value) in given {
            let kind = property_kind(value).ok_or_else(|| JsonEventError::Property { name: name.clone() })?;
            properties.insert(name.clone(), PropertyValue { kind: Some(kind) });
        }
    }
    Ok(Event {
        event_id,
        event_type,
        occurred_at: Some(occurred_at),
        user_id: text(object, "user_id", "userId")?,
        properties,
    })
}

/// A property's value: a plain string, number or boolean, or protobuf's JSON form of one
/// (`{"stringValue": "..."}` and the like).
fn property_kind(value: &Value) -> Option<property_value::Kind> {
    use property_value::Kind;
    match value {
        Value::String(text) => Some(Kind::StringValue(text.clone())),
        Value::Number(number) => number.as_f64().map(Kind::NumberValue),
        Value::Bool(flag) => Some(Kind::BoolValue(*flag)),
        Value::Object(wrapped) => match wrapped.iter().next() {
            Some((key, Value::String(text))) if key == "stringValue" || key == "string_value" => {
                Some(Kind::StringValue(text.clone()))
            }
            Some((key, Value::Number(number))) if key == "numberValue" || key == "number_value" => {
                number.as_f64().map(Kind::NumberValue)
            }
            Some((key, Value::Bool(flag))) if key == "boolValue" || key == "bool_value" => Some(Kind::BoolValue(*flag)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_accept_plain_and_protobuf_json_forms() {
        let event = parse_line(
            r#"{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00.5Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false, "seats": {"numberValue": 3}}}"#,
        )
        .unwrap();
        assert_eq!((event.event_id.as_str(), event.event_type.as_str()), ("e-1", "click"));
        assert_eq!(event.occurred_at, Some(Timestamp { seconds: 1_795_600_800, nanos: 500_000_000 }));
        assert_eq!(event.user_id.as_deref(), Some("u-7"));
        assert_eq!(event.properties.len(), 4);
        assert_eq!(event.properties["seats"].kind, Some(property_value::Kind::NumberValue(3.0)));
        let camel = parse_line(r#"{"eventType": "view", "userId": "u-1"}"#).unwrap();
        assert_eq!(camel.event_type, "view");
        assert!(!camel.event_id.is_empty(), "a missing id is generated");
    }

    #[test]
    fn a_leap_second_is_a_valid_protobuf_time() {
        // Caught by fuzz/'s send_json_line property (input: fuzz/corpus/send_json_line/regression-leap-second):
        // the time came out with 1.5e9 nanoseconds, so the collector rejected an event the file had right.
        let event = parse_line(r#"{"event_type": "x", "occurred_at": "2016-12-31T23:59:60.5Z"}"#).unwrap();
        assert_eq!(event.occurred_at, Some(Timestamp { seconds: 1_483_228_800, nanos: 500_000_000 }));
        let whole = parse_line(r#"{"event_type": "x", "occurred_at": "2016-12-31T23:59:60Z"}"#).unwrap();
        assert_eq!(whole.occurred_at, Some(Timestamp { seconds: 1_483_228_800, nanos: 0 }));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let error = |line: &str| parse_line(line).unwrap_err().to_string();
        assert!(error("{}").contains("event_type is required"));
        assert!(error("[1]").contains("not a JSON object"));
        assert!(error("{").contains("not JSON"));
        assert!(error(r#"{"event_type": "x", "occurred_at": "yesterday"}"#).contains("RFC 3339"));
        assert!(error(r#"{"event_type": "x", "properties": {"tags": [1]}}"#).contains("property tags"));
        assert!(error(r#"{"event_type": "x", "properties": [1]}"#).contains("properties must be an object"));
        assert!(error(r#"{"event_type": 5}"#).contains("must be a string"));
    }
}
