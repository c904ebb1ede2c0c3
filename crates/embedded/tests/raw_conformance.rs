//! The [`RawStore`] conformance suite against the embedded raw store, and what is particular to it:
//! the bucket count fixed when `raw.db` is created, and data surviving a reopen.

use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use tempfile::TempDir;

#[tokio::test]
async fn sqlite_raw_store_conforms() {
    let data_dir = TempDir::new().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), 8).await.unwrap();
    hourglass_conformance::raw_store::suite(&store).await;
}

#[tokio::test]
async fn sqlite_raw_store_with_one_bucket_conforms() {
    let data_dir = TempDir::new().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), 1).await.unwrap();
    hourglass_conformance::raw_store::suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_raw_store_conforms_on_a_multi_threaded_runtime() {
    let data_dir = TempDir::new().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    hourglass_conformance::raw_store::suite(&store).await;
}

const HOUR: i64 = 1_764_075_600;

fn record(batch_id: &str, event_ids: &[&str]) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: "acme".to_owned(),
        received_at_unix_ms: HOUR * 1000,
        batch_id: batch_id.to_owned(),
        collector_id: "test".to_owned(),
        events: event_ids
            .iter()
            .map(|event_id| Event {
                event_id: (*event_id).to_owned(),
                event_type: "view".to_owned(),
                occurred_at: Some(Timestamp { seconds: HOUR + 10, nanos: 0 }),
                user_id: None,
                properties: Default::default(),
            })
            .collect(),
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: HOUR,
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count: event_ids.len() as u32,
        }],
        plan_checks: Vec::new(),
    }
}

async fn stored_ids(store: &SqliteRawStore) -> Vec<String> {
    let mut ids = Vec::new();
    for bucket in 0..store.bucket_count() {
        ids.extend(store.read_bucket("acme", HOUR, bucket).await.unwrap().into_iter().map(|event| event.event_id));
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn the_bucket_count_is_fixed_when_the_database_is_created() {
    let data_dir = TempDir::new().unwrap();
    let created = SqliteRawStore::open(data_dir.path(), 8).await.unwrap();
    created.write_records(&RecordView::from_records(&[record("batch-1", &["a", "b", "c", "d", "e"])])).await.unwrap();
    drop(created);

    let reopened = SqliteRawStore::open(data_dir.path(), 3).await.unwrap();
    assert_eq!(reopened.bucket_count(), 8, "the stored bucket count wins over the configured one");
    assert_eq!(stored_ids(&reopened).await, ["a", "b", "c", "d", "e"], "written events survive a reopen");
    // A resend after the reopen still finds the bucket of its first copy.
    reopened.write_records(&RecordView::from_records(&[record("batch-2", &["a", "f"])])).await.unwrap();
    assert_eq!(stored_ids(&reopened).await, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(reopened.read_outcomes("acme", HOUR).await.unwrap().accepted, 7);
}

#[tokio::test]
async fn zero_buckets_are_refused() {
    let data_dir = TempDir::new().unwrap();
    assert!(SqliteRawStore::open(data_dir.path(), 0).await.is_err());
}

#[tokio::test]
async fn retention_deletes_only_hours_before_the_cutoff() {
    let data_dir = TempDir::new().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let mut old = record("batch-old", &["a", "b"]);
    for event in &mut old.events {
        event.occurred_at = Some(Timestamp { seconds: HOUR - 3600 + 5, nanos: 0 });
    }
    old.outcomes[0].hour_start_unix_secs = HOUR - 3600;
    store.write_records(&RecordView::from_records(&[old, record("batch-new", &["c", "d", "e"])])).await.unwrap();

    let deleted = store.delete_hours_before(HOUR).await.unwrap();
    assert!(deleted >= 2, "the old hour's events and outcome rows: {deleted}");
    assert_eq!(stored_ids(&store).await, ["c", "d", "e"], "the hour at the cutoff is kept");
    assert_eq!(store.read_outcomes("acme", HOUR).await.unwrap().accepted, 3);
    assert_eq!(store.read_outcomes("acme", HOUR - 3600).await.unwrap().accepted, 0);
    for bucket in 0..store.bucket_count() {
        assert!(store.read_bucket("acme", HOUR - 3600, bucket).await.unwrap().is_empty());
    }
}
