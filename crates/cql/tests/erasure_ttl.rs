//! An erasure rewrites a block in place with the time to live it had left, so a rewritten block expires
//! when the original would have, not a whole retention later (on the test Cassandra, in a keyspace of its
//! own).

use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureSalt, UserHash, UserMatcher};
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_cql::testing::{create_test_store, drop_test_keyspace};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

const HOUR: i64 = 1_764_075_600;

#[tokio::test]
async fn a_rewritten_block_keeps_the_time_to_live_it_had_left() {
    let (config, store) = create_test_store("erasure_ttl", 1).await;
    let event = |id: &str, user: &str| Event {
        event_id: id.into(),
        event_type: "view".into(),
        occurred_at: Some(Timestamp { seconds: HOUR + 1, nanos: 0 }),
        user_id: Some(user.into()),
        properties: Default::default(),
    };
    let record = EventBatchRecord {
        customer_id: "acme".into(),
        received_at_unix_ms: HOUR * 1000,
        batch_id: "batch".into(),
        events: vec![event("a", "jane"), event("b", "john")],
        ..EventBatchRecord::default()
    };
    store.write_records(&RecordView::from_records(&[record])).await.unwrap();
    let session = config.connect().await.unwrap();
    let ttl_query = format!("SELECT TTL(events) FROM {}.raw_event_blocks", config.keyspace);
    let ttl = || async {
        let rows = session.query_unpaged(ttl_query.as_str(), ()).await.unwrap().into_rows_result().unwrap();
        rows.rows::<(Option<i32>,)>().unwrap().map(|row| row.unwrap().0).collect::<Vec<_>>()
    };
    let before = ttl().await;
    let retention_secs = i32::try_from(u64::from(config.ttl_days) * 86_400).unwrap();
    assert!(matches!(before.as_slice(), [Some(left)] if *left <= retention_secs), "{before:?}");

    // The table's default changes after the write: a rewrite taking the default would live longer than
    // the original had left.
    let alter =
        format!("ALTER TABLE {}.raw_event_blocks WITH default_time_to_live = {}", config.keyspace, retention_secs * 2);
    session.query_unpaged(alter, ()).await.unwrap();
    session.await_schema_agreement().await.unwrap();

    let salt = ErasureSalt::new("the ttl test's salt, long enough").unwrap();
    let matcher = UserMatcher::new(&salt, CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", "jane"));
    assert_eq!(store.erase_user_events(&matcher, HOUR).await.unwrap(), 1);
    let after = ttl().await;
    let (Some(left_before), [Some(left_after)]) = (before[0], after.as_slice()) else {
        panic!("one block with a time to live: {after:?}")
    };
    assert!(
        *left_after > 0 && *left_after <= left_before,
        "the rewrite keeps what was left: {left_after} vs {left_before}"
    );
    let left: Vec<String> = store.read_bucket("acme", HOUR, 0).await.unwrap().into_iter().map(|e| e.event_id).collect();
    assert_eq!(left, ["b"]);
    drop_test_keyspace(&config).await;
}
