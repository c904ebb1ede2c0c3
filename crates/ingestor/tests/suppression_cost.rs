//! What suppression costs the ingest path, per event (ignored: a measurement, run in release):
//! `cargo test --release -p hourglass-ingestor --test suppression_cost -- --ignored --nocapture`.
//!
//! One million events in 100-event records of one customer, through [`drop_suppressed`] as the record
//! handler calls it, with nobody suppressed, with one user of another customer suppressed (a map look-up
//! per record), and with one user of this customer suppressed (an HMAC-SHA256 of every event's user). The
//! suppressed user sends none of these events, so every pass drops nothing and sees the same records.

use std::time::Instant;

use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureSalt, SuppressedUsers, UserHash};
use hourglass_core::record_view::RecordView;
use hourglass_ingestor::suppression::drop_suppressed;
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

const RECORDS: usize = 10_000;
const EVENTS_PER_RECORD: usize = 100;

fn records() -> Vec<EventBatchRecord> {
    (0..RECORDS)
        .map(|record| EventBatchRecord {
            customer_id: "acme".into(),
            batch_id: format!("batch-{record}"),
            events: (0..EVENTS_PER_RECORD)
                .map(|index| Event {
                    event_id: format!("{record}-{index}"),
                    event_type: "view".into(),
                    occurred_at: Some(Timestamp { seconds: 1_764_000_000 + index as i64, nanos: 0 }),
                    // Ids of the length SDKs send (a UUID), 50,000 distinct users.
                    user_id: Some(format!("3f2b8c1e-5d4a-4e7b-9c6d-{:012}", (record * 37 + index) % 50_000)),
                    properties: Default::default(),
                })
                .collect(),
            ..EventBatchRecord::default()
        })
        .collect()
}

fn nanos_per_event(users: &SuppressedUsers, records: &mut [RecordView<'_>]) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        let mut dropped = 0;
        for record in records.iter_mut() {
            dropped += drop_suppressed(users, record);
        }
        assert_eq!(dropped, 0, "the suppressed user sends none of these events");
        best = best.min(started.elapsed().as_nanos() as f64 / (RECORDS * EVENTS_PER_RECORD) as f64);
    }
    best
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn suppression_cost_per_event() {
    let salt = ErasureSalt::new("the suppression cost's salt, long enough").unwrap();
    let owned = records();
    // Views as the ingestor holds them (built outside the timing: the suppressed user sends none of
    // these events, so no pass changes them).
    let mut records = RecordView::from_records(&owned);
    let nobody = SuppressedUsers::none();
    let other_customer = SuppressedUsers::new(
        &salt,
        [(CustomerId::new("globex").unwrap(), UserHash::of(&salt, "globex", "someone-else"))],
    );
    let this_customer =
        SuppressedUsers::new(&salt, [(CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", "someone-else"))]);
    let figures = [
        ("nobody suppressed", nanos_per_event(&nobody, &mut records)),
        ("one user of another customer", nanos_per_event(&other_customer, &mut records)),
        ("one user of this customer", nanos_per_event(&this_customer, &mut records)),
    ];
    // The ingestor's target: ~300,000 events/s per core, 3,333 ns per event.
    for (case, nanos) in figures {
        println!("{case:<32} {nanos:>8.1} ns/event  ({:.1}% of 3,333 ns)", nanos / 3_333.0 * 100.0);
    }
}
