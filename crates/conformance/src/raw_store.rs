//! The [`RawStore`] conformance suite: idempotent by event id, events split into customer-hours by their
//! time and into buckets by [`bucket_of`], outcome counts per batch summed per hour.
//!
//! `read_bucket_page` pages a bucket in event-id order with the same de-duplication as `read_bucket`.
//!
//! `count_user_events` and `erase_user_events` find and delete one person's events of a customer-hour,
//! leaving every other event, hour and customer, the outcome counts and last-write-wins as they were.
//!
//! Copies of an id in several records read as the last received, whether the records were written by
//! one call or several (`copies`).
//!
//! [`suite`] runs every check; each check uses customer ids of its own, so they can share a store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use hourglass_core::raw_store::{EventVisitor, HourOutcomes, PlanCheckKey, RawStore, StoredEvent, bucket_of};
use hourglass_core::record;
use hourglass_core::record_view::RecordView;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount, PlanCheckCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, RejectionReason, property_value};

mod copies;
mod erasure;

/// The hour most checks write to (2025-11-25T13:00:00Z).
const HOUR: i64 = 1_764_075_600;
/// The hour after it.
const NEXT_HOUR: i64 = HOUR + 3600;

/// Runs every check of the suite against `store`.
pub async fn suite(store: &impl RawStore) {
    store_is_ready(store).await;
    redelivered_and_resent_events_are_stored_once(store).await;
    the_idempotency_scope_is_the_customer_hour(store).await;
    a_record_spread_over_two_hours_lands_in_each(store).await;
    buckets_partition_an_hour(store).await;
    properties_round_trip(store).await;
    events_decoded_by_the_ingestor_read_as_decoded_records(store).await;
    outcomes_are_counted_once_per_batch_by_hour_and_reason(store).await;
    customers_are_separate(store).await;
    pages_visit_each_event_of_a_bucket_once_in_id_order(store).await;
    copies::suite(store).await;
    erasure::suite(store).await;
}

/// `check_ready` answers `Ok` and the store has buckets.
pub async fn store_is_ready(store: &impl RawStore) {
    store.check_ready().await.expect("check_ready on a working store");
    assert!(store.bucket_count() > 0, "a store has at least one bucket");
}

/// A record delivered again (in the same call and in a later one) and an event resent by the client
/// in another batch are each stored once; the last write of an id wins: the copy of the record received
/// last, whatever order the records were delivered in.
pub async fn redelivered_and_resent_events_are_stored_once(store: &impl RawStore) {
    let customer = unique_customer("redelivery");
    let first_events: Vec<Event> =
        (0..5).map(|index| event(&format!("e-{index}"), "view", at(HOUR, index), Some("u-1"))).collect();
    let first = record(&customer, "batch-first", first_events.clone(), vec![accepted(HOUR, 5)]);
    // The client resends e-4 (its ack was lost) with one new event.
    let resend = record(
        &customer,
        "batch-resend",
        vec![first_events[4].clone(), event("e-5", "view", at(HOUR, 5), None)],
        vec![accepted(HOUR, 2)],
    );

    store.write_records(&RecordView::from_records(std::slice::from_ref(&first))).await.expect("write the first batch");
    store
        .write_records(&RecordView::from_records(&[first.clone(), resend.clone(), first]))
        .await
        .expect("write with a redelivery");
    store
        .write_records(&RecordView::from_records(std::slice::from_ref(&resend)))
        .await
        .expect("redeliver the resend last");

    let stored = read_hour(store, &customer, HOUR).await;
    let ids: Vec<&str> = stored.iter().map(|event| event.event_id.as_str()).collect();
    assert_eq!(
        sorted(ids.clone()),
        vec!["e-0", "e-1", "e-2", "e-3", "e-4", "e-5"],
        "each distinct event id once, whatever was redelivered"
    );
    let e4 = stored.iter().find(|event| event.event_id == "e-4").expect("e-4 stored");
    assert_eq!(e4.batch_id, "batch-resend", "the last write of an event id wins");
    assert_eq!(fold_hour(store, &customer, HOUR).await.len(), 6, "fold_bucket visits each distinct event once");
    let outcomes = store.read_outcomes(&customer, HOUR).await.expect("read outcomes");
    assert_eq!(outcomes.accepted, 7, "each batch's outcomes count once; a client resend counts again");
}

/// The stated scope of idempotency (proto/hourglass/v1/event.proto, README "Sending events"): an event
/// id is unique per customer and hour of `occurred_at`. A resend with the same time is stored once; the
/// same id sent again with a time in another hour is another event, stored (and so counted) in each hour;
/// another customer's identical id is its own.
pub async fn the_idempotency_scope_is_the_customer_hour(store: &impl RawStore) {
    let customer = unique_customer("scope");
    let other_customer = unique_customer("scope-other");
    let first =
        record(&customer, "scope-1", vec![event("same-id", "view", at(HOUR, 10), None)], vec![accepted(HOUR, 1)]);
    let same_hour_resend =
        record(&customer, "scope-2", vec![event("same-id", "view", at(HOUR, 20), None)], vec![accepted(HOUR, 1)]);
    let other_hour = record(
        &customer,
        "scope-3",
        vec![event("same-id", "view", at(NEXT_HOUR, 10), None)],
        vec![accepted(NEXT_HOUR, 1)],
    );
    let other_customers =
        record(&other_customer, "scope-4", vec![event("same-id", "view", at(HOUR, 10), None)], vec![accepted(HOUR, 1)]);
    store
        .write_records(&RecordView::from_records(&[first, same_hour_resend, other_hour, other_customers]))
        .await
        .expect("write");

    let in_hour = read_hour(store, &customer, HOUR).await;
    assert_eq!(in_hour.len(), 1, "a resend within the hour is stored once: {in_hour:?}");
    assert_eq!(in_hour[0].occurred_at_ms, at(HOUR, 20), "the last write wins");
    assert_eq!(
        read_hour(store, &customer, NEXT_HOUR).await.len(),
        1,
        "the same id in another hour is stored there too"
    );
    assert_eq!(fold_hour(store, &customer, HOUR).await.len() + fold_hour(store, &customer, NEXT_HOUR).await.len(), 2);
    assert_eq!(read_hour(store, &other_customer, HOUR).await.len(), 1, "ids are per customer");
}

/// A record whose events fall in two hours stores each event in its own hour, with its time.
pub async fn a_record_spread_over_two_hours_lands_in_each(store: &impl RawStore) {
    let customer = unique_customer("two-hours");
    let late_in_hour = event("before", "view", HOUR * 1000 + 3_599_999, None);
    let next_hour = event("after", "view", NEXT_HOUR * 1000, None);
    let spread = record(
        &customer,
        "batch-spread",
        vec![late_in_hour, next_hour],
        vec![accepted(HOUR, 1), accepted(NEXT_HOUR, 1)],
    );
    store.write_records(&RecordView::from_records(&[spread])).await.expect("write a record over two hours");

    let first_hour = read_hour(store, &customer, HOUR).await;
    let second_hour = read_hour(store, &customer, NEXT_HOUR).await;
    let times = |events: &[StoredEvent]| -> Vec<(String, i64)> {
        events.iter().map(|event| (event.event_id.clone(), event.occurred_at_ms)).collect()
    };
    assert_eq!(times(&first_hour), vec![("before".to_owned(), HOUR * 1000 + 3_599_999)]);
    assert_eq!(times(&second_hour), vec![("after".to_owned(), NEXT_HOUR * 1000)]);
    assert!(read_hour(store, &customer, HOUR - 3600).await.is_empty(), "nothing in an hour never written");
    assert_eq!(store.read_outcomes(&customer, HOUR).await.expect("read outcomes").accepted, 1);
    assert_eq!(store.read_outcomes(&customer, NEXT_HOUR).await.expect("read outcomes").accepted, 1);
}

/// Every event is in exactly the bucket `bucket_of` names, the buckets together hold the whole hour,
/// and `fold_bucket` visits what `read_bucket` returns.
pub async fn buckets_partition_an_hour(store: &impl RawStore) {
    let customer = unique_customer("buckets");
    let bucket_count = store.bucket_count();
    let events: Vec<Event> = (0..200)
        .map(|index| {
            let mut event =
                event(&format!("id-{index:04}"), ["view", "click"][index % 2], at(HOUR, index as i64), None);
            event.user_id = (index % 3 != 0).then(|| format!("user-{}", index % 7));
            event.properties.insert("index".to_owned(), number(index as f64));
            event.properties.insert("label".to_owned(), text("x"));
            event
        })
        .collect();
    // Over two records, so that a bucket gathers events of several writes.
    let (left, right) = events.split_at(120);
    let records = [
        record(&customer, "batch-left", left.to_vec(), vec![accepted(HOUR, 120)]),
        record(&customer, "batch-right", right.to_vec(), vec![accepted(HOUR, 80)]),
    ];
    store.write_records(&RecordView::from_records(&records)).await.expect("write 200 events");

    let mut all_ids = BTreeSet::new();
    for bucket in 0..bucket_count {
        let stored = store.read_bucket(&customer, HOUR, bucket).await.expect("read a bucket");
        for event in &stored {
            assert_eq!(bucket_of(&event.event_id, bucket_count), bucket, "{} is in its bucket", event.event_id);
            assert!(all_ids.insert(event.event_id.clone()), "{} is in one bucket only, once", event.event_id);
        }
        let folded = store
            .fold_bucket(&customer, HOUR, bucket, CollectingVisitor::default())
            .await
            .expect("fold a bucket")
            .events;
        let read_as_folded: Vec<FoldedEvent> = stored
            .iter()
            .map(|event| FoldedEvent {
                event_type: event.event_type.clone(),
                user_id: event.user_id.clone(),
                numbers: event.number_properties.iter().map(|(name, value)| (name.clone(), *value)).collect(),
            })
            .collect();
        assert_eq!(sorted(folded), sorted(read_as_folded), "fold_bucket and read_bucket agree on bucket {bucket}");
    }
    let expected: BTreeSet<String> = events.iter().map(|event| event.event_id.clone()).collect();
    assert_eq!(all_ids, expected, "the buckets together hold every event of the hour");
}

/// String, number and boolean properties, the user and the time come back as written; a property
/// without a value is dropped.
pub async fn properties_round_trip(store: &impl RawStore) {
    let customer = unique_customer("properties");
    let mut with_everything = event("full", "checkout.completed", HOUR * 1000 + 1234, Some("user-ü"));
    with_everything.properties = [
        ("plan".to_owned(), text("pro – annual")),
        ("amount".to_owned(), number(-1234.5625)),
        ("tiny".to_owned(), number(f64::MIN_POSITIVE)),
        ("first_order".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(true)) }),
        ("gift".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(false)) }),
        ("empty".to_owned(), PropertyValue { kind: None }),
    ]
    .into_iter()
    .collect();
    let bare = event("bare", "ping", HOUR * 1000 + 5, None);
    store
        .write_records(&RecordView::from_records(&[record(
            &customer,
            "batch-properties",
            vec![with_everything, bare],
            vec![accepted(HOUR, 2)],
        )]))
        .await
        .expect("write events with properties");

    let stored = read_hour(store, &customer, HOUR).await;
    let full = stored.iter().find(|event| event.event_id == "full").expect("the full event is stored");
    let expected_full = StoredEvent {
        event_id: "full".to_owned(),
        event_type: "checkout.completed".to_owned(),
        occurred_at_ms: HOUR * 1000 + 1234,
        user_id: Some("user-ü".to_owned()),
        string_properties: BTreeMap::from([("plan".to_owned(), "pro – annual".to_owned())]),
        number_properties: BTreeMap::from([("amount".to_owned(), -1234.5625), ("tiny".to_owned(), f64::MIN_POSITIVE)]),
        bool_properties: BTreeMap::from([("first_order".to_owned(), true), ("gift".to_owned(), false)]),
        batch_id: "batch-properties".to_owned(),
    };
    assert_eq!(full, &expected_full);
    let bare = stored.iter().find(|event| event.event_id == "bare").expect("the bare event is stored");
    let expected_bare = StoredEvent {
        event_id: "bare".to_owned(),
        event_type: "ping".to_owned(),
        occurred_at_ms: HOUR * 1000 + 5,
        user_id: None,
        string_properties: BTreeMap::new(),
        number_properties: BTreeMap::new(),
        bool_properties: BTreeMap::new(),
        batch_id: "batch-properties".to_owned(),
    };
    assert_eq!(bare, &expected_bare);
}

/// A record as the ingestor writes it (its events' bytes taken from the payload as they are, see
/// `hourglass_core::record_view`) reads back, and folds, exactly as the same record decoded into owned
/// structs and written so; an event with a NaN number loses it in both.
pub async fn events_decoded_by_the_ingestor_read_as_decoded_records(store: &impl RawStore) {
    let as_viewed = unique_customer("viewed");
    let as_decoded = unique_customer("decoded");
    let mut events: Vec<Event> = (0..20)
        .map(|index| {
            let mut event = event(&format!("v-{index}"), "checkout", at(HOUR, index), Some("user-ü"));
            event.properties = [
                ("amount".to_owned(), number(f64::from(index as i32) * 1.5)),
                ("plan".to_owned(), text("pro")),
                ("first".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(index % 2 == 0)) }),
            ]
            .into_iter()
            .collect();
            event
        })
        .collect();
    events[3].properties.insert("broken".to_owned(), number(f64::NAN));
    let payload_of = |customer: &str| {
        let written = record(customer, "batch-viewed", events.clone(), vec![accepted(HOUR, 20)]);
        record::encode(customer.to_owned(), &written).payload
    };
    let viewed_payload = payload_of(&as_viewed);
    let viewed = record::decode_view(Some(b"1"), &viewed_payload).expect("the ingestor reads the record");
    let decoded_payload = payload_of(&as_decoded);
    let decoded = record::decode(Some(b"1"), &decoded_payload).expect("the record decodes");
    store.write_records(std::slice::from_ref(&viewed)).await.expect("write the viewed record");
    store.write_records(&[RecordView::from_record(&decoded)]).await.expect("write the decoded record");

    let by_id = |mut events: Vec<StoredEvent>| {
        events.sort_by(|left, right| left.event_id.cmp(&right.event_id));
        events
    };
    let viewed_events = by_id(read_hour(store, &as_viewed, HOUR).await);
    assert_eq!(viewed_events.len(), 20);
    assert_eq!(viewed_events, by_id(read_hour(store, &as_decoded, HOUR).await));
    let broken = viewed_events.iter().find(|event| event.event_id == "v-3").expect("v-3 is stored");
    assert!(!broken.number_properties.contains_key("broken"), "NaN dropped: {broken:?}");
    assert_eq!(broken.number_properties.get("amount"), Some(&4.5), "the rest of the event kept");
    assert_eq!(sorted(fold_hour(store, &as_viewed, HOUR).await), sorted(fold_hour(store, &as_decoded, HOUR).await));
}

/// Outcome counts are summed per hour and reason over batches, each batch counted once however often
/// it is delivered, including a record that carries only outcomes.
pub async fn outcomes_are_counted_once_per_batch_by_hour_and_reason(store: &impl RawStore) {
    let customer = unique_customer("outcomes");
    let too_old = RejectionReason::OccurredAtTooOld as i32;
    let no_type = RejectionReason::EventTypeEmpty as i32;
    let with_events = record(
        &customer,
        "batch-mixed",
        vec![event("a", "view", at(HOUR, 1), None), event("b", "view", at(HOUR, 2), None)],
        // Three accepted, one of them dropped by the ingestor (its user erased and suppressed).
        vec![
            accepted(HOUR, 3),
            outcome(HOUR, Outcome::Erased, 0, 1),
            outcome(HOUR, Outcome::Rejected, too_old, 3),
            outcome(NEXT_HOUR, Outcome::Rejected, no_type, 1),
            outcome(HOUR, Outcome::Throttled, 0, 4),
        ],
    );
    // A fully throttled and partly invalid batch: nothing accepted, so no events, only outcomes.
    let outcomes_only = record(
        &customer,
        "batch-outcomes-only",
        Vec::new(),
        vec![outcome(HOUR, Outcome::Throttled, 0, 10), outcome(HOUR, Outcome::Rejected, too_old, 1)],
    );
    let plan_check = |hour_start, event_type: &str, rule: RejectionReason, rejected, count| PlanCheckCount {
        hour_start_unix_secs: hour_start,
        plan_version: 2,
        event_type: event_type.to_owned(),
        rule: rule as i32,
        rejected,
        count,
    };
    let with_events = EventBatchRecord {
        plan_checks: vec![
            plan_check(HOUR, "", RejectionReason::Unspecified, false, 6),
            plan_check(HOUR, "view", RejectionReason::PropertyTypeMismatch, true, 2),
            plan_check(HOUR, "view", RejectionReason::PropertyUndeclared, false, 1),
            plan_check(NEXT_HOUR, "", RejectionReason::Unspecified, false, 1),
        ],
        ..with_events
    };
    let outcomes_only = EventBatchRecord {
        plan_checks: vec![plan_check(HOUR, "view", RejectionReason::PropertyTypeMismatch, true, 1)],
        ..outcomes_only
    };
    store
        .write_records(&RecordView::from_records(&[with_events.clone(), outcomes_only.clone()]))
        .await
        .expect("write outcomes");
    store
        .write_records(&RecordView::from_records(&[outcomes_only, with_events]))
        .await
        .expect("redeliver both records");

    let hour = store.read_outcomes(&customer, HOUR).await.expect("read outcomes");
    let plan_key = |event_type: &str, rule: RejectionReason, rejected| PlanCheckKey {
        plan_version: 2,
        event_type: event_type.to_owned(),
        rule: rule as i32,
        rejected,
    };
    assert_eq!(
        hour,
        HourOutcomes {
            accepted: 3,
            rejected_by_reason: BTreeMap::from([(too_old, 4)]),
            throttled: 14,
            erased: 1,
            plan_checks: BTreeMap::from([
                (plan_key("", RejectionReason::Unspecified, false), 6),
                (plan_key("view", RejectionReason::PropertyTypeMismatch, true), 3),
                (plan_key("view", RejectionReason::PropertyUndeclared, false), 1),
            ]),
        },
        "outcomes and plan counts of the hour, each batch once"
    );
    assert_eq!(hour.received(), 21, "erased events are among the accepted ones, not received again");
    let next_hour = store.read_outcomes(&customer, NEXT_HOUR).await.expect("read outcomes");
    assert_eq!(
        next_hour,
        HourOutcomes {
            accepted: 0,
            rejected_by_reason: BTreeMap::from([(no_type, 1)]),
            throttled: 0,
            erased: 0,
            plan_checks: BTreeMap::from([(plan_key("", RejectionReason::Unspecified, false), 1)]),
        }
    );
    let empty_hour = store.read_outcomes(&customer, HOUR - 3600).await.expect("read outcomes");
    assert_eq!(empty_hour, HourOutcomes::default(), "an hour without records has no outcomes");
    assert_eq!(read_hour(store, &customer, HOUR).await.len(), 2, "an outcome-only record stores no events");
}

/// Two customers using the same event ids and batch ids in the same hour see only their own events
/// and outcomes.
pub async fn customers_are_separate(store: &impl RawStore) {
    let first_customer = unique_customer("separate-first");
    let second_customer = unique_customer("separate-second");
    let first = record(
        &first_customer,
        "batch-shared",
        vec![event("same-id", "first-type", at(HOUR, 1), None)],
        vec![accepted(HOUR, 1)],
    );
    let second = record(
        &second_customer,
        "batch-shared",
        vec![event("same-id", "second-type", at(HOUR, 2), None), event("other", "second-type", at(HOUR, 3), None)],
        vec![accepted(HOUR, 2)],
    );
    store.write_records(&RecordView::from_records(&[first, second])).await.expect("write two customers");

    let first_events = read_hour(store, &first_customer, HOUR).await;
    let second_events = read_hour(store, &second_customer, HOUR).await;
    let types = |events: &[StoredEvent]| sorted(events.iter().map(|event| event.event_type.clone()).collect());
    assert_eq!(types(&first_events), vec!["first-type"]);
    assert_eq!(types(&second_events), vec!["second-type", "second-type"]);
    assert_eq!(store.read_outcomes(&first_customer, HOUR).await.expect("read outcomes").accepted, 1);
    assert_eq!(store.read_outcomes(&second_customer, HOUR).await.expect("read outcomes").accepted, 2);
}

/// Paging a bucket with `read_bucket_page` (pages of 1, of 7 and of more than the bucket holds, with and
/// without a type filter) returns every event of the bucket exactly once, in ascending id order, as
/// `read_bucket` returns it: an id written by two records shows once, as the later copy, and the type
/// filter applies to that copy (an id resent with another type leaves the old type's pages).
pub async fn pages_visit_each_event_of_a_bucket_once_in_id_order(store: &impl RawStore) {
    let customer = unique_customer("pages");
    let bucket_count = store.bucket_count();
    let types = ["view", "click", "buy"];
    let events: Vec<Event> = (0..60)
        .map(|index| event(&format!("page-{index:02}"), types[index % 3], at(HOUR, index as i64), Some("u-1")))
        .collect();
    // Every fifth event resent later in another batch, with the next type and another user.
    let resent: Vec<Event> = events
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 5 == 0)
        .map(|(index, original)| {
            let mut copy = event(&original.event_id, types[(index + 1) % 3], at(HOUR, 100 + index as i64), Some("u-2"));
            copy.properties
                .insert("resent".to_owned(), PropertyValue { kind: Some(property_value::Kind::BoolValue(true)) });
            copy
        })
        .collect();
    let first_records: Vec<EventBatchRecord> = events
        .chunks(20)
        .enumerate()
        .map(|(index, chunk)| record(&customer, &format!("batch-{index}"), chunk.to_vec(), vec![accepted(HOUR, 20)]))
        .collect();
    store.write_records(&RecordView::from_records(&first_records)).await.expect("write the first copies");
    let resend_count = resent.len() as u32;
    let resend = record(&customer, "batch-resend", resent.clone(), vec![accepted(HOUR, resend_count)]);
    store.write_records(&RecordView::from_records(&[resend])).await.expect("write the resent copies");

    // What the store must hold: each id's last copy, its type and batch.
    let mut last_copies: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (batch_id, copies) in
        first_records.iter().map(|record| (record.batch_id.as_str(), &record.events)).chain([("batch-resend", &resent)])
    {
        for copy in copies {
            last_copies.insert(copy.event_id.clone(), (copy.event_type.clone(), batch_id.to_owned()));
        }
    }

    let mut paged_ids = BTreeSet::new();
    for bucket in 0..bucket_count {
        let whole_bucket = store.read_bucket(&customer, HOUR, bucket).await.expect("read a bucket");
        for event_type in [None, Some("view"), Some("click")] {
            let expected: Vec<StoredEvent> = whole_bucket
                .iter()
                .filter(|event| event_type.is_none_or(|wanted| event.event_type == wanted))
                .cloned()
                .collect();
            let expected_ids_and_batches: Vec<(String, String)> = last_copies
                .iter()
                .filter(|(event_id, (stored_type, _))| {
                    bucket_of(event_id, bucket_count) == bucket && event_type.is_none_or(|wanted| stored_type == wanted)
                })
                .map(|(event_id, (_, batch_id))| (event_id.clone(), batch_id.clone()))
                .collect();
            for limit in [1, 7, events.len() + 1] {
                let paged = page_through(store, &customer, bucket, event_type, limit).await;
                let context = format!("bucket {bucket}, type {event_type:?}, pages of {limit}");
                let paged_ids_and_batches: Vec<(String, String)> =
                    paged.iter().map(|event| (event.event_id.clone(), event.batch_id.clone())).collect();
                assert_eq!(paged_ids_and_batches, expected_ids_and_batches, "{context}: each id once, its last copy");
                assert_eq!(paged, expected, "{context}: the events read_bucket returns, in id order");
                if event_type.is_none() {
                    paged_ids.extend(paged.into_iter().map(|event| event.event_id));
                }
            }
        }
    }
    let all_ids: BTreeSet<String> = last_copies.keys().cloned().collect();
    assert_eq!(paged_ids, all_ids, "the buckets' pages together hold every event");

    let last_id = all_ids.last().expect("events were written").as_str();
    for bucket in 0..bucket_count {
        let after_everything =
            store.read_bucket_page(&customer, HOUR, bucket, last_id, None, 10).await.expect("read a page");
        assert!(after_everything.is_empty(), "nothing after the largest id");
        let unwritten_hour =
            store.read_bucket_page(&customer, HOUR - 3600, bucket, "", None, 10).await.expect("read a page");
        assert!(unwritten_hour.is_empty(), "nothing in an hour never written");
    }
}

/// Every event of a bucket, read in pages of `limit`, checking each page on the way.
async fn page_through(
    store: &impl RawStore,
    customer_id: &str,
    bucket: u32,
    event_type: Option<&str>,
    limit: usize,
) -> Vec<StoredEvent> {
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut after_event_id = String::new();
    loop {
        let page = store
            .read_bucket_page(customer_id, HOUR, bucket, &after_event_id, event_type, limit)
            .await
            .expect("read a page");
        assert!(page.len() <= limit, "a page holds at most its limit");
        let mut previous_id = after_event_id.as_str();
        for event in &page {
            assert!(event.event_id.as_str() > previous_id, "ids ascend past the cursor: {}", event.event_id);
            previous_id = &event.event_id;
        }
        let page_is_full = page.len() == limit;
        after_event_id = page.last().map(|event| event.event_id.clone()).unwrap_or(after_event_id);
        events.extend(page);
        if !page_is_full {
            return events;
        }
    }
}

/// What `fold_bucket` passes a visitor for one event, owned.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
struct FoldedEvent {
    event_type: String,
    user_id: Option<String>,
    numbers: BTreeMap<String, f64>,
}

#[derive(Default)]
struct CollectingVisitor {
    events: Vec<FoldedEvent>,
}

impl EventVisitor for CollectingVisitor {
    fn visit(&mut self, event_type: &str, user_id: Option<&str>, numbers: &mut dyn Iterator<Item = (&str, f64)>) {
        self.events.push(FoldedEvent {
            event_type: event_type.to_owned(),
            user_id: user_id.map(str::to_owned),
            numbers: numbers.map(|(name, value)| (name.to_owned(), value)).collect(),
        });
    }
}

/// A customer id no other check or run uses.
fn unique_customer(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("conformance-{check}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

async fn read_hour(store: &impl RawStore, customer_id: &str, hour_start: i64) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    for bucket in 0..store.bucket_count() {
        events.extend(store.read_bucket(customer_id, hour_start, bucket).await.expect("read a bucket"));
    }
    events
}

async fn fold_hour(store: &impl RawStore, customer_id: &str, hour_start: i64) -> Vec<FoldedEvent> {
    let mut events = Vec::new();
    for bucket in 0..store.bucket_count() {
        let visitor = store
            .fold_bucket(customer_id, hour_start, bucket, CollectingVisitor::default())
            .await
            .expect("fold a bucket");
        events.extend(visitor.events);
    }
    events
}

/// `values` in order; `PartialOrd` suffices as no test value is NaN.
fn sorted<T: PartialOrd>(mut values: Vec<T>) -> Vec<T> {
    values.sort_by(|left, right| left.partial_cmp(right).expect("no NaN in test values"));
    values
}

/// `offset_seconds` into the hour starting at `hour_start`, in milliseconds.
fn at(hour_start: i64, offset_seconds: i64) -> i64 {
    (hour_start + offset_seconds) * 1000
}

fn event(event_id: &str, event_type: &str, occurred_at_ms: i64, user_id: Option<&str>) -> Event {
    Event {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        occurred_at: Some(Timestamp {
            seconds: occurred_at_ms.div_euclid(1000),
            nanos: (occurred_at_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        user_id: user_id.map(str::to_owned),
        properties: Default::default(),
    }
}

fn text(value: &str) -> PropertyValue {
    PropertyValue { kind: Some(property_value::Kind::StringValue(value.to_owned())) }
}

fn number(value: f64) -> PropertyValue {
    PropertyValue { kind: Some(property_value::Kind::NumberValue(value)) }
}

/// A record received after every record made before it: a client's resend reaches a collector later
/// than the batch it repeats, and that is the order in which the last copy of an event id wins.
fn record(customer_id: &str, batch_id: &str, events: Vec<Event>, outcomes: Vec<OutcomeCount>) -> EventBatchRecord {
    static RECEIVED: AtomicU64 = AtomicU64::new(0);
    let received_after_the_hour_ms = RECEIVED.fetch_add(1, Ordering::Relaxed) as i64;
    EventBatchRecord {
        customer_id: customer_id.to_owned(),
        received_at_unix_ms: HOUR * 1000 + 3_000_000 + received_after_the_hour_ms,
        batch_id: batch_id.to_owned(),
        collector_id: "conformance".to_owned(),
        events,
        outcomes,
        plan_checks: Vec::new(),
    }
}

fn outcome(hour_start: i64, outcome: Outcome, reason: i32, count: u32) -> OutcomeCount {
    OutcomeCount { hour_start_unix_secs: hour_start, outcome: outcome as i32, reason, count }
}

fn accepted(hour_start: i64, count: u32) -> OutcomeCount {
    outcome(hour_start, Outcome::Accepted, 0, count)
}
