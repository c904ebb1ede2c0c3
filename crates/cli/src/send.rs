//! `hourglass send` (alias `loadgen`): streams generated events, or events from a JSON-lines file, to any
//! collector (distributed or standalone) over `IngestStream`, many batches in flight, with a progress bar
//! and a summary. Throttled and unavailable batches are resent after their retry-after with the same
//! event ids, so every event is acknowledged once the command succeeds.
//!
//! A line of the file is one event; only `event_type` is required:
//! `{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false}}`
//! (camelCase names, as protobuf's JSON mapping writes them, are accepted too). A missing `event_id` gets
//! a fresh UUIDv7; a missing `occurred_at` is now.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::loadgen::{self, EventSource, LoadPlan};

/// Flags of `hourglass send`.
#[derive(clap::Args)]
pub struct SendArgs {
    /// The collector's (or standalone's) gRPC address.
    #[arg(long, env = "HOURGLASS_TARGET", default_value = "http://127.0.0.1:50051", hide_env_values = true)]
    target: String,
    /// An ingest API key (`hgk_…`).
    #[arg(long, env = "HOURGLASS_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Generate this many events (20 event types, 100k users, the current time).
    #[arg(long, default_value_t = 10_000, conflicts_with = "file")]
    events: u64,
    /// Send the events of this JSON-lines file instead (`-` reads standard input).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Streams per connection.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Unacknowledged batches per stream.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Report throttled and unavailable batches instead of resending them.
    #[arg(long)]
    no_retry: bool,
}

fn string_field<'a>(object: &'a serde_json::Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    object.get(snake).or_else(|| object.get(camel))
}

/// One event from one JSON line.
fn parse_event(line: &str) -> anyhow::Result<Event> {
    let value: Value = serde_json::from_str(line).context("not JSON")?;
    let object = value.as_object().context("not a JSON object")?;
    let text = |snake: &str, camel: &str| -> anyhow::Result<Option<String>> {
        match string_field(object, snake, camel) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => bail!("{snake} must be a string, not {other}"),
        }
    };
    let event_type = text("event_type", "eventType")?.context("event_type is required")?;
    let event_id = text("event_id", "eventId")?.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let occurred_at = match text("occurred_at", "occurredAt")? {
        Some(time) => {
            let time = chrono::DateTime::parse_from_rfc3339(&time)
                .with_context(|| format!("occurred_at {time:?} is not an RFC 3339 time"))?;
            Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
        }
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
            Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }
        }
    };
    let mut properties = BTreeMap::new();
    if let Some(given) = object.get("properties") {
        let given = given.as_object().context("properties must be an object")?;
        for (name, value) in given {
            let kind = match value {
                Value::String(text) => property_value::Kind::StringValue(text.clone()),
                Value::Number(number) => {
                    property_value::Kind::NumberValue(number.as_f64().context("number out of range")?)
                }
                Value::Bool(flag) => property_value::Kind::BoolValue(*flag),
                // The protobuf JSON form: {"stringValue": "..."} and the like.
                Value::Object(wrapped) => match wrapped.iter().next() {
                    Some((key, Value::String(text))) if key == "stringValue" || key == "string_value" => {
                        property_value::Kind::StringValue(text.clone())
                    }
                    Some((key, Value::Number(number))) if key == "numberValue" || key == "number_value" => {
                        property_value::Kind::NumberValue(number.as_f64().context("number out of range")?)
                    }
                    Some((key, Value::Bool(flag))) if key == "boolValue" || key == "bool_value" => {
                        property_value::Kind::BoolValue(*flag)
                    }
                    _ => bail!("property {name}: expected a string, number or boolean"),
                },
                _ => bail!("property {name}: expected a string, number or boolean"),
            };
            properties.insert(name.clone(), PropertyValue { kind: Some(kind) });
        }
    }
    Ok(Event { event_id, event_type, occurred_at: Some(occurred_at), user_id: text("user_id", "userId")?, properties })
}

fn read_events(path: &PathBuf) -> anyhow::Result<Vec<Event>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(parse_event(&line).with_context(|| format!("{} line {}", path.display(), index + 1))?);
    }
    Ok(events)
}

/// Sends the events and prints the summary; fails unless every event was acknowledged.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let source = match &args.file {
        Some(path) => EventSource::Given(Arc::new(read_events(path)?)),
        None => EventSource::Generated {
            count: args.events,
            run_id: format!("send-{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()),
        },
    };
    let total = source.len();
    let plan = LoadPlan {
        target: args.target.clone(),
        api_key: args.api_key.clone(),
        source,
        batch_size: args.batch_size,
        connections: args.connections,
        streams_per_connection: args.streams,
        in_flight_per_stream: args.in_flight,
        retry: !args.no_retry,
    };
    let progress = ProgressBar::new(total).with_style(ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} events acked  {per_sec}  eta {eta}",
    )?);
    let started = Instant::now();
    let report = loadgen::run(&plan, &progress).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let acked = report.accepted + report.rejected();
    println!("sent {total} events to {} in {seconds:.2} s ({:.0} events/s)", args.target, acked as f64 / seconds);
    println!("  accepted   {}", report.accepted);
    println!("  rejected   {}", report.rejected());
    for (reason, count) in &report.rejected_by_reason {
        println!("    {reason:<24} {count}");
    }
    println!(
        "  throttled  {} (events in throttled acks{})",
        report.throttled,
        if plan.retry { ", all resent" } else { ", not resent" }
    );
    println!(
        "  unavailable {} (events in unavailable acks{})",
        report.unavailable,
        if plan.retry { ", all resent" } else { "" }
    );
    if report.invalid > 0 {
        println!("  invalid    {} (batches refused whole: see the warnings above)", report.invalid);
    }
    println!("  batches    {} acks, {} resent", report.batches, report.resent_batches);
    if plan.retry && acked + report.invalid != total {
        bail!("{} of {total} events were not acknowledged", total - acked - report.invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_accept_plain_and_protobuf_json_forms() {
        let event = parse_event(
            r#"{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00.5Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false, "seats": {"numberValue": 3}}}"#,
        )
        .unwrap();
        assert_eq!((event.event_id.as_str(), event.event_type.as_str()), ("e-1", "click"));
        assert_eq!(event.occurred_at, Some(Timestamp { seconds: 1_795_600_800, nanos: 500_000_000 }));
        assert_eq!(event.user_id.as_deref(), Some("u-7"));
        assert_eq!(event.properties.len(), 4);
        assert_eq!(event.properties["seats"].kind, Some(property_value::Kind::NumberValue(3.0)));
        let camel = parse_event(r#"{"eventType": "view", "userId": "u-1"}"#).unwrap();
        assert_eq!(camel.event_type, "view");
        assert!(!camel.event_id.is_empty(), "a missing id is generated");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let error = |line: &str| format!("{:#}", parse_event(line).unwrap_err());
        assert!(error("{}").contains("event_type is required"));
        assert!(error("[1]").contains("not a JSON object"));
        assert!(error(r#"{"event_type": "x", "occurred_at": "yesterday"}"#).contains("RFC 3339"));
        assert!(error(r#"{"event_type": "x", "properties": {"tags": [1]}}"#).contains("property tags"));
        assert!(error(r#"{"event_type": 5}"#).contains("must be a string"));
    }
}
