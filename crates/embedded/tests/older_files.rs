//! A data directory written before compression still reads: `raw.db` rows whose blocks have no format
//! byte, and a `log.db` whose table has no `payload_format` column (added when it is opened).

use hourglass_core::event_log::{EventLog, LogRecord, Topic};
use hourglass_core::raw_block;
use hourglass_core::raw_store::RawStore;
use hourglass_core::record_view::RecordView;
use hourglass_embedded::log::SqliteEventLog;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// 2025-11-25T13:00:00Z.
const HOUR: i64 = 1_764_075_600;

fn event(event_id: &str, event_type: &str) -> Event {
    Event {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        occurred_at: Some(Timestamp { seconds: HOUR + 5, nanos: 0 }),
        ..Event::default()
    }
}

#[tokio::test]
async fn uncompressed_blocks_of_an_older_raw_db_read_beside_compressed_ones() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = SqliteRawStore::open(data_dir.path(), 1).await.unwrap();
    // A row as the previous build wrote it: the block's bytes with no format byte.
    let mut old_block = Vec::new();
    for id in ["old-1", "old-2"] {
        raw_block::push_event(&mut old_block, &event(id, "view"));
    }
    let mut connection = SqliteConnectOptions::new().filename(data_dir.path().join("raw.db")).connect().await.unwrap();
    sqlx::query("INSERT INTO event_blocks (customer_id, hour_start, bucket, batch_id, events) VALUES (?, ?, 0, ?, ?)")
        .bind("acme")
        .bind(HOUR)
        .bind("old-batch")
        .bind(old_block.as_slice())
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    // After the upgrade old-2 is resent with another type.
    let record = EventBatchRecord {
        customer_id: "acme".to_owned(),
        batch_id: "new-batch".to_owned(),
        events: vec![event("old-2", "click"), event("new-1", "view")],
        ..EventBatchRecord::default()
    };
    store.write_records(&RecordView::from_records(&[record])).await.unwrap();

    let stored = store.read_bucket("acme", HOUR, 0).await.unwrap();
    let read: Vec<(&str, &str, &str)> = stored
        .iter()
        .map(|event| (event.event_id.as_str(), event.event_type.as_str(), event.batch_id.as_str()))
        .collect();
    assert_eq!(
        read,
        vec![("new-1", "view", "new-batch"), ("old-1", "view", "old-batch"), ("old-2", "click", "new-batch")]
    );
}

#[tokio::test]
async fn an_older_log_db_gains_the_payload_format_and_reads_its_rows_as_they_were() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut connection = SqliteConnectOptions::new()
        .filename(data_dir.path().join("log.db"))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    // The previous build's table, with one record and no headers.
    sqlx::raw_sql(
        "CREATE TABLE log_records (
            log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
            topic INTEGER NOT NULL,
            record_key TEXT NOT NULL,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            appended_at_ms INTEGER NOT NULL
        );
        INSERT INTO log_records (topic, record_key, payload, headers, appended_at_ms)
        VALUES (0, 'acme', x'01020304', x'', 0);",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();

    let log = SqliteEventLog::open(data_dir.path()).await.unwrap();
    // A payload that starts like a compressed frame: only the column tells them apart.
    let new_payload = [1u8, 2, 3, 4].repeat(64);
    log.append(Topic::Events, LogRecord { key: "acme".to_owned(), payload: new_payload.clone(), headers: Vec::new() })
        .await
        .unwrap();
    let records = log.read_after(Topic::Events, 0, 10).await.unwrap();
    let payloads: Vec<&[u8]> = records.iter().map(|record| record.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&[1u8, 2, 3, 4][..], new_payload.as_slice()]);
    drop(log);

    let mut connection = SqliteConnectOptions::new().filename(data_dir.path().join("log.db")).connect().await.unwrap();
    let stored: Vec<(i64, i64)> =
        sqlx::query_as("SELECT payload_format, length(payload) FROM log_records ORDER BY log_offset")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(stored[0], (0, 4), "the old row as it was");
    assert_eq!(stored[1].0, 1, "the new row compressed");
    assert!(stored[1].1 < new_payload.len() as i64, "and smaller: {stored:?}");
}
