//! `cargo +nightly run --manifest-path fuzz/Cargo.toml -p hourglass-fuzz-seeds`: rewrites the seed
//! corpora in `fuzz/corpus/<target>/seed-*` (the fuzzers' own finds stay out of git: fuzz/.gitignore).
//! Each seed is an input a crate's tests use, in the target's input format (see each target's doc).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hourglass_core::api_key::ApiKey;
use hourglass_core::raw_block::{compress, push_event};
use hourglass_core::record;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, IngestBatchRequest, PropertyValue, RejectionReason, property_value};
use hourglass_query::page_token::{PageTokens, RawEventsCursor};
use prost::Message;

/// The collector tests' clock; the ingest target moves seed times near it to now.
const SEED_EPOCH_SECS: i64 = 1_764_000_000;

fn event(id: &str, event_type: &str, seconds: i64) -> Event {
    let value = |kind| PropertyValue { kind: Some(kind) };
    Event {
        event_id: id.to_owned(),
        event_type: event_type.to_owned(),
        occurred_at: Some(Timestamp { seconds, nanos: 5 }),
        user_id: Some("u1".to_owned()),
        properties: BTreeMap::from([
            ("path".to_owned(), value(property_value::Kind::StringValue("/".to_owned()))),
            ("price".to_owned(), value(property_value::Kind::NumberValue(9.5))),
            ("trial".to_owned(), value(property_value::Kind::BoolValue(false))),
        ]),
    }
}

fn write(corpus: &Path, target: &str, name: &str, bytes: &[u8]) {
    let directory = corpus.join(target);
    std::fs::create_dir_all(&directory).expect("the corpus directory can be created");
    std::fs::write(directory.join(format!("seed-{name}")), bytes).expect("the seed can be written");
}

fn prefixed(prefix: &[u8], bytes: &[u8]) -> Vec<u8> {
    [prefix, bytes].concat()
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus");

    let valid = IngestBatchRequest {
        events: vec![event("e1", "page_view", SEED_EPOCH_SECS - 10), event("e2", "click", SEED_EPOCH_SECS - 4000)],
    };
    let mut mixed = valid.clone();
    mixed.events.push(Event { event_id: String::new(), ..event("e3", "click", SEED_EPOCH_SECS) });
    mixed.events.push(Event { occurred_at: None, ..event("e4", "click", SEED_EPOCH_SECS) });
    mixed.events.push(event("e5", "click", SEED_EPOCH_SECS - 8 * 86_400));
    mixed.events.push(event("e6", "click", SEED_EPOCH_SECS + 3600));
    let mut not_finite = event("e7", "buy", SEED_EPOCH_SECS);
    not_finite
        .properties
        .insert("amount".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(f64::INFINITY)) });
    mixed.events.push(not_finite);
    write(&corpus, "ingest_batch", "valid", &prefixed(&[0], &valid.encode_to_vec()));
    write(&corpus, "ingest_batch", "valid-per-event-layout", &prefixed(&[2], &valid.encode_to_vec()));
    write(&corpus, "ingest_batch", "mixed", &prefixed(&[0], &mixed.encode_to_vec()));
    write(&corpus, "ingest_batch", "mixed-small-limits", &prefixed(&[0b11100], &mixed.encode_to_vec()));
    write(
        &corpus,
        "ingest_batch",
        "arbitrary",
        &prefixed(&[1], b"\x03e1\x09page_view\x01\x00\x10\x00\x00\x05\x00\x00\x00u1\x01"),
    );

    let hour = SEED_EPOCH_SECS / 3600 * 3600;
    let batch_record = EventBatchRecord {
        customer_id: "acme".to_owned(),
        received_at_unix_ms: SEED_EPOCH_SECS * 1000,
        batch_id: "0193a8f2-batch".to_owned(),
        collector_id: "collector-1".to_owned(),
        events: valid.events.clone(),
        outcomes: vec![
            OutcomeCount { hour_start_unix_secs: hour, outcome: Outcome::Accepted.into(), reason: 0, count: 1 },
            OutcomeCount {
                hour_start_unix_secs: hour - 3600,
                outcome: Outcome::Rejected.into(),
                reason: RejectionReason::EventIdEmpty.into(),
                count: 2,
            },
        ],
        plan_checks: Vec::new(),
    };
    let payload = record::encode("acme".to_owned(), &batch_record).payload;
    write(&corpus, "log_record", "record", &prefixed(&[1], &payload));
    write(&corpus, "log_record", "no-header", &prefixed(&[0], &payload));
    write(&corpus, "log_record", "version-2", &prefixed(&[2, 1, b'2'], &payload));
    let outcome_only = EventBatchRecord { events: Vec::new(), ..batch_record.clone() };
    write(&corpus, "log_record", "outcome-only", &prefixed(&[1], &outcome_only.encode_to_vec()));

    let mut block = Vec::new();
    for event in &valid.events {
        push_event(&mut block, event);
    }
    write(&corpus, "raw_block", "compressed", &compress(&block));
    write(&corpus, "raw_block", "uncompressed", &block);
    write(&corpus, "raw_block", "empty-frame", &compress(&[]));

    let tokens = PageTokens::new(b"fuzz seed secret");
    let cursor = RawEventsCursor {
        customer_id: "acme".to_owned(),
        hour_start: 3600 * 490_000,
        event_type: "click".to_owned(),
        bucket: 3,
        after_event_id: "evt-17".to_owned(),
    };
    // The target's input is `arbitrary`'s: its strings are length-prefixed from the end, so a token's text
    // at the start is something the fuzzer mutates from, not a parsed field.
    write(&corpus, "page_token", "token", tokens.encode(&cursor).as_bytes());
    write(
        &corpus,
        "page_token",
        "cursor-fields",
        b"fuzz seed secret\x10acme\x00\x00\x00\x00\x00\x00\x00\x00click\x03evt-17",
    );

    for (index, key) in (0..3).map(|_| ApiKey::generate()).enumerate() {
        write(&corpus, "api_key", &format!("key-{index}"), key.expose_secret().as_bytes());
    }
    write(&corpus, "api_key", "key-id", ApiKey::generate().id().as_str().as_bytes());

    let lines = [
        r#"{"event_id": "e-1", "event_type": "click", "occurred_at": "2026-11-25T10:00:00.5Z", "user_id": "u-7", "properties": {"plan": "pro", "price": 9.5, "trial": false, "seats": {"numberValue": 3}}}"#,
        r#"{"eventType": "view", "userId": "u-1"}"#,
        r#"{"event_type": "x", "occurred_at": "2026-11-25T10:00:00+05:30", "properties": {"tags": {"stringValue": "a"}, "ok": {"bool_value": true}}}"#,
        r#"{"event_type": "x", "properties": {"tags": [1]}}"#,
    ];
    for (index, line) in lines.iter().enumerate() {
        write(&corpus, "send_json_line", &format!("line-{index}"), line.as_bytes());
    }

    let files: [(u8, &str, &str); 4] = [
        (
            0,
            "collector",
            "max-batch-events = 500\nkey-cache-ttl-secs = 5\n\n[collector]\nlisten-addr = \"0.0.0.0:50051\"\nmax-in-flight-bytes = 1048576\nrecord-layout = \"event\"\n",
        ),
        (1, "ingestor", "[ingestor]\ningestor-group = \"g\"\n"),
        (2, "aggregator", "aggregator-concurrency = 8\n[aggregator]\naggregator-lease-secs = 60\n"),
        (3, "query", "[query]\npage-token-secret = \"s3cret\"\n"),
    ];
    for (role, name, text) in files {
        write(&corpus, "config_file", name, &prefixed(&[role], text.as_bytes()));
    }

    // Tracking plans: the documented examples, padded with spaces to the target's 8-byte length unit,
    // then a few events (type, property count, then per property its pick, kind, length and text).
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/tracking-plans");
    let events: &[u8] = &[0, 2, 0, 1, 3, b'a', b'b', b'c', 1, 2, 2, 0, 3, 4, 1, 0];
    for name in ["minimal", "shop"] {
        let mut text = std::fs::read(examples.join(format!("{name}.json"))).expect("the example plan can be read");
        text.resize(text.len().div_ceil(8) * 8, b' ');
        let units = u8::try_from(text.len() / 8).expect("an example plan under 2 KiB");
        write(&corpus, "tracking_plan", name, &[&[units][..], &text, events].concat());
    }
}
