//! The erasure part of the [`RawStore`] contract: `count_user_events` and `erase_user_events` find and
//! delete one person's events of a customer-hour, and nothing else.

use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureSalt, UserHash, UserMatcher};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;

use super::{HOUR, NEXT_HOUR, accepted, at, event, fold_hour, read_hour, record, sorted, unique_customer};

/// Runs every erasure check against `store` (part of the raw store's [`suite`](super::suite)).
pub async fn suite(store: &impl RawStore) {
    one_users_events_are_erased_and_nothing_else(store).await;
}

/// Erasing one user's events of a customer-hour deletes every copy of each id a copy of theirs has and
/// nothing else: other users' and anonymous events, other hours, another customer's events of a user
/// with the same id, and the outcome counts stay; an id resent by its client still reads as its last
/// copy; a second erasure finds nothing.
pub async fn one_users_events_are_erased_and_nothing_else(store: &impl RawStore) {
    let customer = unique_customer("erasure");
    let other_customer = unique_customer("erasure-other");
    let salt = ErasureSalt::new("the conformance suite's salt").expect("a long enough salt");
    let matcher = |customer_id: &str| {
        let customer = CustomerId::new(customer_id).expect("a valid customer id");
        UserMatcher::new(&salt, customer, UserHash::of(&salt, customer_id, "jane"))
    };
    let jane = Some("jane");
    let john = Some("john");
    let first = record(
        &customer,
        "erasure-first",
        vec![
            event("jane-view", "view", at(HOUR, 1), jane),
            event("john-view", "view", at(HOUR, 2), john),
            event("jane-click", "click", at(HOUR, 3), jane),
            event("anonymous", "view", at(HOUR, 4), None),
            event("shared-id", "view", at(HOUR, 5), john),
            event("jane-later", "view", at(NEXT_HOUR, 1), jane),
        ],
        vec![accepted(HOUR, 5), accepted(NEXT_HOUR, 1)],
    );
    // John's client resends his event (the resend is the last copy); a later record's copy of
    // "shared-id" is Jane's.
    let resend = record(
        &customer,
        "erasure-resend",
        vec![event("john-view", "view", at(HOUR, 2), john), event("shared-id", "view", at(HOUR, 5), jane)],
        vec![accepted(HOUR, 2)],
    );
    let only_jane = record(
        &customer,
        "erasure-only-jane",
        vec![event("jane-only", "buy", at(HOUR, 6), jane)],
        vec![accepted(HOUR, 1)],
    );
    let elsewhere = record(
        &other_customer,
        "erasure-elsewhere",
        vec![event("jane-view", "view", at(HOUR, 1), jane), event("john-view", "view", at(HOUR, 2), john)],
        vec![accepted(HOUR, 2)],
    );
    store.write_records(&RecordView::from_records(&[first, resend, only_jane, elsewhere])).await.expect("write");
    let outcomes_before = store.read_outcomes(&customer, HOUR).await.expect("read outcomes");

    assert_eq!(
        store.count_user_events(&matcher(&customer), HOUR).await.expect("count"),
        4,
        "jane-view, jane-click, jane-only and shared-id have a copy of hers"
    );
    assert_eq!(store.count_user_events(&matcher(&customer), NEXT_HOUR).await.expect("count"), 1);
    assert_eq!(store.count_user_events(&matcher(&other_customer), HOUR).await.expect("count"), 1);
    assert_eq!(read_hour(store, &customer, HOUR).await.len(), 6, "counting erases nothing");

    assert_eq!(store.erase_user_events(&matcher(&customer), HOUR).await.expect("erase"), 4);
    let left = read_hour(store, &customer, HOUR).await;
    let left_ids: Vec<&str> = sorted(left.iter().map(|event| event.event_id.as_str()).collect());
    assert_eq!(left_ids, ["anonymous", "john-view"], "only other users' and anonymous events are left");
    let john_view = left.iter().find(|event| event.event_id == "john-view").expect("john-view is left");
    assert_eq!(john_view.batch_id, "erasure-resend", "the last write of an id still wins");
    let folded = fold_hour(store, &customer, HOUR).await;
    assert_eq!(folded.len(), 2, "a fold sees each remaining event once");
    assert!(folded.iter().all(|event| event.user_id.as_deref() != Some("jane")), "{folded:?}");
    for bucket in 0..store.bucket_count() {
        let page = store.read_bucket_page(&customer, HOUR, bucket, "", None, 100).await.expect("read a page");
        assert!(page.iter().all(|event| event.user_id.as_deref() != Some("jane")), "pages: {page:?}");
    }
    assert_eq!(store.read_outcomes(&customer, HOUR).await.expect("read outcomes"), outcomes_before);
    assert_eq!(store.count_user_events(&matcher(&customer), HOUR).await.expect("count"), 0);
    assert_eq!(store.erase_user_events(&matcher(&customer), HOUR).await.expect("erase again"), 0, "idempotent");

    let next_hour = read_hour(store, &customer, NEXT_HOUR).await;
    assert_eq!(next_hour.len(), 1, "another hour is erased only when asked: {next_hour:?}");
    assert_eq!(read_hour(store, &other_customer, HOUR).await.len(), 2, "another customer's jane is untouched");

    // New events after an erasure are stored as before.
    let after =
        record(&customer, "erasure-after", vec![event("john-new", "view", at(HOUR, 7), john)], vec![accepted(HOUR, 1)]);
    store.write_records(&RecordView::from_records(&[after])).await.expect("write after the erasure");
    assert_eq!(read_hour(store, &customer, HOUR).await.len(), 3);
}
