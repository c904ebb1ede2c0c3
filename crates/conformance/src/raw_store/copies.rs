//! Copies of one event id in several records, written together and apart: whatever rows a store makes
//! of the records of one call (a block per record, or one per customer-hour-bucket for all of them),
//! each id reads once, as the copy of the record received last, with that record's batch.

use std::collections::BTreeMap;

use hourglass_core::raw_store::{RawStore, StoredEvent};
use hourglass_core::record_view::RecordView;
use hourglass_proto::v1::Event;

use super::{HOUR, NEXT_HOUR, accepted, at, event, fold_hour, read_hour, record, unique_customer};

/// Runs every check of copies across records against `store` (part of the raw store's
/// [`suite`](super::suite)).
pub async fn suite(store: &impl RawStore) {
    copies_in_several_records_of_one_call_read_as_the_last(store).await;
    copies_across_calls_read_as_the_last(store).await;
}

/// Each id's (type, batch) as read, and as paged: both must say the same.
async fn last_copies(store: &impl RawStore, customer: &str, hour_start: i64) -> BTreeMap<String, (String, String)> {
    let read: BTreeMap<String, (String, String)> = read_hour(store, customer, hour_start)
        .await
        .into_iter()
        .map(|event| (event.event_id, (event.event_type, event.batch_id)))
        .collect();
    let mut paged: Vec<StoredEvent> = Vec::new();
    for bucket in 0..store.bucket_count() {
        paged.extend(store.read_bucket_page(customer, hour_start, bucket, "", None, 1000).await.expect("read a page"));
    }
    let paged: BTreeMap<String, (String, String)> =
        paged.into_iter().map(|event| (event.event_id, (event.event_type, event.batch_id))).collect();
    assert_eq!(paged, read, "pages and read_bucket agree on each id's last copy");
    assert_eq!(fold_hour(store, customer, hour_start).await.len(), read.len(), "a fold visits each id once");
    read
}

fn expected(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, (String, String)> {
    pairs
        .iter()
        .map(|(id, event_type, batch)| ((*id).to_owned(), ((*event_type).to_owned(), (*batch).to_owned())))
        .collect()
}

/// Three records of one call, received one after the other, each with a copy of `x` (and `y` in the
/// first two); another customer's record and another hour's events between them: each id of the hour
/// reads as the copy of the last record holding it, with that record's batch, and every other event with
/// its own batch; the other customer and hour keep theirs.
pub async fn copies_in_several_records_of_one_call_read_as_the_last(store: &impl RawStore) {
    let customer = unique_customer("copies-one-call");
    let other_customer = unique_customer("copies-one-call-other");
    let typed = |id: &str, event_type: &str| event(id, event_type, at(HOUR, 1), Some("u-1"));
    let first = record(
        &customer,
        "call-first",
        vec![
            typed("x", "first"),
            typed("y", "first"),
            typed("only-first", "first"),
            event("x", "next-hour", at(NEXT_HOUR, 1), None),
        ],
        vec![accepted(HOUR, 3), accepted(NEXT_HOUR, 1)],
    );
    let theirs = record(&other_customer, "call-theirs", vec![typed("x", "theirs")], vec![accepted(HOUR, 1)]);
    let second = record(
        &customer,
        "call-second",
        vec![typed("y", "second"), typed("x", "second"), typed("only-second", "second")],
        vec![accepted(HOUR, 3)],
    );
    let third = record(
        &customer,
        "call-third",
        vec![typed("only-third", "third"), typed("x", "third")],
        vec![accepted(HOUR, 2)],
    );
    store
        .write_records(&RecordView::from_records(&[first, theirs, second, third]))
        .await
        .expect("write the records together");

    assert_eq!(
        last_copies(store, &customer, HOUR).await,
        expected(&[
            ("only-first", "first", "call-first"),
            ("only-second", "second", "call-second"),
            ("only-third", "third", "call-third"),
            ("x", "third", "call-third"),
            ("y", "second", "call-second"),
        ])
    );
    assert_eq!(last_copies(store, &customer, NEXT_HOUR).await, expected(&[("x", "next-hour", "call-first")]));
    assert_eq!(last_copies(store, &other_customer, HOUR).await, expected(&[("x", "theirs", "call-theirs")]));
    let outcomes = store.read_outcomes(&customer, HOUR).await.expect("read outcomes");
    assert_eq!(outcomes.accepted, 8, "each record's outcomes count once");
}

/// Records written by three calls in the order they were received, copies of `x` and `y` in several:
/// the copy of the last record holding an id wins across calls as within one; the second call given
/// again in other groupings (each record alone, then with the third call's record) changes nothing.
pub async fn copies_across_calls_read_as_the_last(store: &impl RawStore) {
    let customer = unique_customer("copies-calls");
    let typed = |id: &str, event_type: &str| -> Event { event(id, event_type, at(HOUR, 2), None) };
    let first = record(&customer, "calls-1", vec![typed("x", "one"), typed("y", "one")], vec![accepted(HOUR, 2)]);
    let second = record(&customer, "calls-2", vec![typed("x", "two")], vec![accepted(HOUR, 1)]);
    let third = record(&customer, "calls-3", vec![typed("y", "three"), typed("z", "three")], vec![accepted(HOUR, 2)]);
    let fourth = record(&customer, "calls-4", vec![typed("x", "four"), typed("w", "four")], vec![accepted(HOUR, 2)]);
    let fifth = record(&customer, "calls-5", vec![typed("v", "five")], vec![accepted(HOUR, 1)]);
    store.write_records(&RecordView::from_records(&[first, second])).await.expect("write the first call");
    store.write_records(&RecordView::from_records(&[third.clone(), fourth.clone()])).await.expect("write the second");
    store.write_records(&RecordView::from_records(std::slice::from_ref(&fifth))).await.expect("write the third");
    let after_three_calls = expected(&[
        ("v", "five", "calls-5"),
        ("w", "four", "calls-4"),
        ("x", "four", "calls-4"),
        ("y", "three", "calls-3"),
        ("z", "three", "calls-3"),
    ]);
    assert_eq!(last_copies(store, &customer, HOUR).await, after_three_calls);

    // The second call delivered again, split and regrouped: its copies are the ones already winning.
    store.write_records(&RecordView::from_records(std::slice::from_ref(&third))).await.expect("redeliver alone");
    store.write_records(&RecordView::from_records(&[fourth, fifth])).await.expect("redeliver regrouped");
    assert_eq!(last_copies(store, &customer, HOUR).await, after_three_calls, "redeliveries change no last copy");
    let outcomes = store.read_outcomes(&customer, HOUR).await.expect("read outcomes");
    assert_eq!(outcomes.accepted, 8, "each record's outcomes count once, however often delivered");
}
