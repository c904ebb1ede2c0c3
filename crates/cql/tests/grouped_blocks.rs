//! Blocks of several records (docs/architecture.md, "The raw store's layout"), on the test Cassandra
//! (`HOURGLASS_TEST_CQL_NODES`), each test in a keyspace of its own: one row per customer-hour-bucket
//! per call, each event read with its own batch; a table made before grouping gets its `batches`
//! column from `migrate` and its old rows read as they were.

use std::sync::Arc;

use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_cql::testing::{create_test_store, drop_test_keyspace};
use hourglass_cql::{CqlRawStore, schema};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use scylla::value::CqlTimestamp;

/// 2025-11-25T13:00:00Z.
const HOUR: i64 = 1_764_075_600;

fn record(customer_id: &str, batch_id: &str, received_at_unix_ms: i64, ids: &[&str]) -> EventBatchRecord {
    let events = ids
        .iter()
        .map(|id| Event {
            event_id: (*id).into(),
            event_type: format!("from-{batch_id}"),
            occurred_at: Some(Timestamp { seconds: HOUR + 1, nanos: 0 }),
            ..Event::default()
        })
        .collect();
    EventBatchRecord {
        customer_id: customer_id.into(),
        received_at_unix_ms,
        batch_id: batch_id.into(),
        events,
        ..EventBatchRecord::default()
    }
}

async fn block_rows(session: &scylla::client::session::Session, keyspace: &str) -> usize {
    let rows = session
        .query_unpaged(format!("SELECT batch_id FROM {keyspace}.{}", schema::BLOCKS_TABLE), ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    rows.rows_num()
}

#[tokio::test]
async fn the_records_of_one_call_share_a_row_per_bucket_and_keep_their_batches() {
    let (config, store) = create_test_store("grouped_rows", 4).await;
    let session = config.connect().await.unwrap();
    let ids: Vec<String> = (0..40).map(|index| format!("event-{index}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let records: Vec<EventBatchRecord> = ids
        .chunks(10)
        .enumerate()
        .map(|(index, chunk)| record("acme", &format!("batch-{index}"), HOUR * 1000 + index as i64, chunk))
        .collect();
    store.write_records(&RecordView::from_records(&records)).await.unwrap();
    let buckets_touched = {
        let mut buckets: Vec<i32> = ids.iter().map(|id| store.bucket_of(id)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        buckets.len()
    };
    assert_eq!(block_rows(&session, &config.keyspace).await, buckets_touched, "one row per bucket for 4 records");

    let stored = store.read_hour("acme", HOUR).await.unwrap();
    assert_eq!(stored.len(), 40);
    for event in &stored {
        let index: usize = event.event_id["event-".len()..].parse().unwrap();
        assert_eq!(event.batch_id, format!("batch-{}", index / 10), "{} names its own batch", event.event_id);
    }

    // The same call again (a redelivered poll) rewrites the same rows.
    store.write_records(&RecordView::from_records(&records)).await.unwrap();
    assert_eq!(block_rows(&session, &config.keyspace).await, buckets_touched, "a redelivered poll adds no row");
    drop_test_keyspace(&config).await;
}

#[tokio::test]
async fn a_table_from_before_grouping_gets_its_column_and_its_rows_read_as_before() {
    let (config, _) = create_test_store("grouped_upgrade", 1).await;
    let session = Arc::new(config.connect().await.unwrap());
    let keyspace = config.keyspace.as_str();
    // The table as builds before grouping created it: no `batches`.
    session.query_unpaged(format!("DROP TABLE {keyspace}.{}", schema::BLOCKS_TABLE), ()).await.unwrap();
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {keyspace}.{} (customer_id text, hour_start timestamp, bucket int, \
                 received_at timestamp, batch_id text, events blob, \
                 PRIMARY KEY ((customer_id, hour_start, bucket), received_at, batch_id)) \
                 WITH CLUSTERING ORDER BY (received_at DESC, batch_id DESC)",
                schema::BLOCKS_TABLE
            ),
            (),
        )
        .await
        .unwrap();
    session.await_schema_agreement().await.unwrap();
    assert!(!schema::has_column(&session, keyspace, schema::BLOCKS_TABLE, schema::BATCHES_COLUMN).await.unwrap());
    // A block an older build wrote: one record's events.
    let old = record("acme", "old-batch", HOUR * 1000, &["a", "b"]);
    let old_view = RecordView::from_record(&old);
    let old_block = hourglass_core::raw_block::record_blocks(&old_view, 1).remove(0);
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.{} (customer_id, hour_start, bucket, received_at, batch_id, events) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                schema::BLOCKS_TABLE
            ),
            ("acme", CqlTimestamp(HOUR * 1000), 0i32, CqlTimestamp(HOUR * 1000), "old-batch", old_block.block),
        )
        .await
        .unwrap();

    schema::migrate(&session, &config).await.unwrap();
    assert!(schema::has_column(&session, keyspace, schema::BLOCKS_TABLE, schema::BATCHES_COLUMN).await.unwrap());
    let store = CqlRawStore::with_session(Arc::clone(&session), &config).await.unwrap();
    let newer =
        [record("acme", "new-1", HOUR * 1000 + 1, &["b", "c"]), record("acme", "new-2", HOUR * 1000 + 2, &["d"])];
    store.write_records(&RecordView::from_records(&newer)).await.unwrap();
    let read: Vec<(String, String)> = store
        .read_hour("acme", HOUR)
        .await
        .unwrap()
        .into_iter()
        .map(|event| (event.event_id, event.batch_id))
        .collect();
    let expected = [("a", "old-batch"), ("b", "new-1"), ("c", "new-1"), ("d", "new-2")];
    assert_eq!(read, expected.map(|(id, batch)| (id.to_owned(), batch.to_owned())));
    drop_test_keyspace(&config).await;
}
