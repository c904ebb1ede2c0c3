//! The migration path from the old layout (docs/architecture.md, "The raw store's layout"): a keyspace
//! whose `raw_events` table (one row per event) was written by an older build is read through the new
//! store beside its blocks, on the test Cassandra (`HOURGLASS_TEST_CQL_NODES`), in a keyspace of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureSalt, UserHash, UserMatcher};
use hourglass_core::raw_store::{EventVisitor, RawStore};
use hourglass_core::record_view::RecordView;
use hourglass_cql::CqlRawStore;
use hourglass_cql::testing::{create_test_store, drop_test_keyspace};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use scylla::value::CqlTimestamp;

/// 2025-11-25T13:00:00Z.
const HOUR: i64 = 1_764_075_600;

/// The old table as the previous build's `migrate cql` created it.
const OLD_TABLE: &str = "CREATE TABLE {keyspace}.raw_events (
    customer_id text,
    hour_start timestamp,
    bucket int,
    event_id text,
    event_type text,
    occurred_at timestamp,
    user_id text,
    string_properties frozen<map<text, text>>,
    number_properties frozen<map<text, double>>,
    bool_properties frozen<map<text, boolean>>,
    received_at timestamp,
    batch_id text,
    PRIMARY KEY ((customer_id, hour_start, bucket), event_id)
)";

/// The previous build's insert.
const OLD_INSERT: &str = "INSERT INTO {keyspace}.raw_events (customer_id, hour_start, bucket, event_id, event_type, \
     occurred_at, user_id, string_properties, number_properties, bool_properties, received_at, batch_id) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

#[derive(Default)]
struct Counting {
    events: usize,
    amount: f64,
}

impl EventVisitor for Counting {
    fn visit(&mut self, _event_type: &str, _user_id: Option<&str>, numbers: &mut dyn Iterator<Item = (&str, f64)>) {
        self.events += 1;
        self.amount += numbers.filter(|(name, _)| *name == "amount").map(|(_, value)| value).sum::<f64>();
    }
}

#[tokio::test]
async fn rows_of_the_old_layout_are_read_beside_the_blocks_until_the_table_is_dropped() {
    let (config, fresh_store) = create_test_store("legacy_layout", 2).await;
    assert!(!fresh_store.reads_legacy_table(), "a new keyspace has no old table");
    let session = Arc::new(config.connect().await.unwrap());
    let keyspace = config.keyspace.as_str();
    session.query_unpaged(OLD_TABLE.replace("{keyspace}", keyspace), ()).await.unwrap();
    session.await_schema_agreement().await.unwrap();
    let insert = session.prepare(OLD_INSERT.replace("{keyspace}", keyspace)).await.unwrap();
    for index in 0..10i64 {
        let event_id = format!("old-{index}");
        let bucket = fresh_store.bucket_of(&event_id);
        let strings = BTreeMap::from([("plan", "pro")]);
        let numbers = BTreeMap::from([("amount", index as f64)]);
        let bools: BTreeMap<&str, bool> = BTreeMap::new();
        session
            .execute_unpaged(
                &insert,
                (
                    "acme",
                    CqlTimestamp(HOUR * 1000),
                    bucket,
                    event_id.as_str(),
                    "view",
                    CqlTimestamp(HOUR * 1000 + index),
                    Some("user-1"),
                    strings,
                    numbers,
                    bools,
                    CqlTimestamp(HOUR * 1000),
                    "old-batch",
                ),
            )
            .await
            .unwrap();
    }

    // A store opened now (a role restarted on the new build) reads both tables.
    let store = CqlRawStore::with_session(Arc::clone(&session), &config).await.unwrap();
    assert!(store.reads_legacy_table());
    // After the upgrade, a client resends old-3 with another type and amount, and sends new-0.
    let resent = |event_id: &str, amount: f64| {
        let mut event = Event {
            event_id: event_id.to_owned(),
            event_type: "click".to_owned(),
            occurred_at: Some(Timestamp { seconds: HOUR + 60, nanos: 0 }),
            ..Event::default()
        };
        event.properties.insert(
            "amount".to_owned(),
            hourglass_proto::v1::PropertyValue {
                kind: Some(hourglass_proto::v1::property_value::Kind::NumberValue(amount)),
            },
        );
        event
    };
    let record = EventBatchRecord {
        customer_id: "acme".to_owned(),
        received_at_unix_ms: HOUR * 1000 + 120_000,
        batch_id: "new-batch".to_owned(),
        events: vec![resent("old-3", 100.0), resent("new-0", 1000.0)],
        ..EventBatchRecord::default()
    };
    store.write_records(&RecordView::from_records(&[record])).await.unwrap();

    let mut read = Vec::new();
    let mut folded = Counting::default();
    let mut paged = Vec::new();
    for bucket in 0..store.bucket_count() {
        read.extend(store.read_bucket("acme", HOUR, bucket).await.unwrap());
        folded = store.fold_bucket("acme", HOUR, bucket, folded).await.unwrap();
        let mut after = String::new();
        loop {
            let page = store.read_bucket_page("acme", HOUR, bucket, &after, None, 3).await.unwrap();
            let full = page.len() == 3;
            after = page.last().map(|event| event.event_id.clone()).unwrap_or(after);
            paged.extend(page);
            if !full {
                break;
            }
        }
    }
    read.sort_by(|left, right| left.event_id.cmp(&right.event_id));
    paged.sort_by(|left, right| left.event_id.cmp(&right.event_id));
    assert_eq!(read.len(), 11, "ten old events (old-3 once) and one new: {read:?}");
    assert_eq!(read, paged, "pages return what read_bucket does");
    let old_3 = read.iter().find(|event| event.event_id == "old-3").unwrap();
    assert_eq!((old_3.event_type.as_str(), old_3.batch_id.as_str()), ("click", "new-batch"), "the new copy wins");
    let old_4 = read.iter().find(|event| event.event_id == "old-4").unwrap();
    assert_eq!(old_4.string_properties.get("plan").map(String::as_str), Some("pro"));
    assert_eq!((old_4.user_id.as_deref(), old_4.occurred_at_ms), (Some("user-1"), HOUR * 1000 + 4));
    assert_eq!(folded.events, 11);
    // 0..9 without the old copy of old-3, plus its new copy and new-0.
    assert_eq!(folded.amount, (45.0 - 3.0) + 100.0 + 1000.0);
    let clicks = store.read_bucket_page("acme", HOUR, store.bucket_of("old-3") as u32, "", Some("view"), 20);
    assert!(
        clicks.await.unwrap().iter().all(|event| event.event_id != "old-3"),
        "the type filter applies to the new copy"
    );

    // Erasing user-1, whose every old row is: their old rows go, and old-3's new (anonymous) copy with
    // them, as an id with a copy of theirs is erased whole.
    let salt = ErasureSalt::new("the legacy layout test's salt").unwrap();
    let matcher = UserMatcher::new(&salt, CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", "user-1"));
    assert_eq!(store.count_user_events(&matcher, HOUR).await.unwrap(), 10);
    assert_eq!(store.erase_user_events(&matcher, HOUR).await.unwrap(), 10);
    let mut left = Vec::new();
    for bucket in 0..store.bucket_count() {
        left.extend(store.read_bucket("acme", HOUR, bucket).await.unwrap().into_iter().map(|event| event.event_id));
    }
    assert_eq!(left, ["new-0"], "only the event that was never user-1's is left");
    assert_eq!(store.count_user_events(&matcher, HOUR).await.unwrap(), 0);

    // Once the old rows have aged out the operator drops the table; restarted roles read blocks only.
    session.query_unpaged(format!("DROP TABLE {keyspace}.raw_events"), ()).await.unwrap();
    session.await_schema_agreement().await.unwrap();
    let after_drop = CqlRawStore::with_session(Arc::clone(&session), &config).await.unwrap();
    assert!(!after_drop.reads_legacy_table());
    let mut remaining = 0;
    for bucket in 0..after_drop.bucket_count() {
        remaining += after_drop.read_bucket("acme", HOUR, bucket).await.unwrap().len();
    }
    assert_eq!(remaining, 1, "the blocks written since the upgrade, less the erased copy of old-3");
    drop_test_keyspace(&config).await;
}
