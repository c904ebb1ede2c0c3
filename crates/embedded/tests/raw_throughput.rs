//! Throughput of the embedded raw store on the standalone ingest path: writing records (the ingestor's
//! side) and folding every bucket of the hour (the aggregator's side). A measurement, not a check:
//!
//! ```sh
//! cargo test --release -p hourglass-embedded --test raw_throughput -- --ignored --nocapture
//! ```

use std::time::Instant;

use hourglass_core::raw_store::{EventVisitor, RawStore};
use hourglass_core::record_view::RecordView;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};

const EVENTS: usize = 1_000_000;
const EVENTS_PER_RECORD: usize = 100;
/// Records per `write_records` call, as the ingest loop batches what it consumed.
const RECORDS_PER_WRITE: usize = 20;
const CUSTOMERS: usize = 4;
const BUCKETS: u32 = 8;
const HOUR: i64 = 1_764_075_600;

fn record(index: usize) -> EventBatchRecord {
    let customer = index % CUSTOMERS;
    let events = (0..EVENTS_PER_RECORD)
        .map(|position| {
            let sequence = index * EVENTS_PER_RECORD + position;
            Event {
                event_id: format!("0190a7c2-{sequence:012x}-7000-8000-{:012x}", sequence * 7919),
                event_type: ["page_view", "click", "checkout.completed"][sequence % 3].to_owned(),
                occurred_at: Some(Timestamp { seconds: HOUR + (sequence % 3600) as i64, nanos: 0 }),
                user_id: Some(format!("user-{}", sequence % 5000)),
                properties: [
                    ("path".to_owned(), PropertyValue { kind: Some(property_value::Kind::StringValue("/a/b".into())) }),
                    ("amount".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(1.5)) }),
                    ("items".to_owned(), PropertyValue { kind: Some(property_value::Kind::NumberValue(3.0)) }),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect();
    EventBatchRecord {
        customer_id: format!("customer-{customer}"),
        received_at_unix_ms: HOUR * 1000,
        batch_id: format!("batch-{index}"),
        collector_id: "bench".to_owned(),
        events,
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: HOUR,
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count: EVENTS_PER_RECORD as u32,
        }],
        plan_checks: Vec::new(),
    }
}

/// What a rollup touches: the type, the user and each number.
#[derive(Default)]
struct Tally {
    events: u64,
    user_bytes: usize,
    sum: f64,
}

impl EventVisitor for Tally {
    fn visit(&mut self, event_type: &str, user_id: Option<&str>, numbers: &mut dyn Iterator<Item = (&str, f64)>) {
        self.events += 1;
        self.user_bytes += event_type.len() + user_id.map_or(0, str::len);
        self.sum += numbers.map(|(_, value)| value).sum::<f64>();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn write_then_fold_a_million_events() {
    let data_dir = tempfile::TempDir::new().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), BUCKETS).await.unwrap();
    let records: Vec<EventBatchRecord> = (0..EVENTS / EVENTS_PER_RECORD).map(record).collect();

    let started = Instant::now();
    for chunk in records.chunks(RECORDS_PER_WRITE) {
        store.write_records(&RecordView::from_records(chunk)).await.unwrap();
    }
    let write_secs = started.elapsed().as_secs_f64();
    println!("write: {EVENTS} events in {write_secs:.2} s = {:.0} events/s", EVENTS as f64 / write_secs);

    let started = Instant::now();
    let mut folded = 0;
    for customer in 0..CUSTOMERS {
        for bucket in 0..BUCKETS {
            let tally =
                store.fold_bucket(&format!("customer-{customer}"), HOUR, bucket, Tally::default()).await.unwrap();
            folded += tally.events;
        }
    }
    let fold_secs = started.elapsed().as_secs_f64();
    println!("fold: {folded} events in {fold_secs:.2} s = {:.0} events/s", folded as f64 / fold_secs);
    assert_eq!(folded, EVENTS as u64);
}
