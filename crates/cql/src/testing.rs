//! Support for tests against a real CQL server: each test gets a keyspace of its own.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{CqlConfig, CqlRawStore, schema};

/// The environment variable naming the CQL nodes the tests use (`scripts/test.sh` sets it).
pub const TEST_CQL_NODES_ENV: &str = "HOURGLASS_TEST_CQL_NODES";

/// The test CQL nodes, or a panic telling how to start them.
pub fn test_nodes() -> String {
    std::env::var(TEST_CQL_NODES_ENV).unwrap_or_else(|_| {
        panic!("{TEST_CQL_NODES_ENV} is not set: run the tests with scripts/test.sh, which starts Cassandra")
    })
}

/// A configuration with a fresh keyspace name for one test on `nodes` (not yet created).
pub fn test_config(test_name: &str, nodes: &str, buckets: u32) -> CqlConfig {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let sanitized: String = test_name
        .chars()
        .map(|character| if character.is_ascii_alphanumeric() { character.to_ascii_lowercase() } else { '_' })
        .take(20)
        .collect();
    let keyspace = format!("test_{sanitized}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut config = CqlConfig::for_nodes(nodes, &keyspace);
    config.buckets = buckets;
    config
}

/// Drops a test's keyspace (call it at the end of a test; a failed test leaves its keyspace behind).
pub async fn drop_test_keyspace(config: &CqlConfig) {
    let keyspace = config.checked_keyspace().expect("test keyspace name");
    assert!(keyspace.starts_with("test_"), "refusing to drop non-test keyspace {keyspace}");
    let session = config.connect().await.expect("connect to the test CQL server");
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await.expect("drop test keyspace");
}

/// Creates a fresh keyspace for one test on the test nodes and returns a store on it.
pub async fn create_test_store(test_name: &str, buckets: u32) -> (CqlConfig, CqlRawStore) {
    let config = test_config(test_name, &test_nodes(), buckets);
    let session = config.connect().await.expect("connect to the test CQL server");
    schema::migrate(&session, &config).await.expect("migrate the test keyspace");
    let store = CqlRawStore::with_session(std::sync::Arc::new(session), &config).await.expect("prepare statements");
    (config, store)
}

/// Removes events behind the store's back, for tests of what the ledger shows when raw data is lost:
/// every block of their buckets in `hour_start` is rewritten without them (deleted when emptied).
pub async fn delete_events(config: &CqlConfig, customer_id: &str, hour_start: i64, event_ids: &[&str]) {
    use hourglass_core::raw_block::{self, Decompressor, EventView};
    use scylla::value::CqlTimestamp;

    let keyspace = config.checked_keyspace().expect("test keyspace name");
    let session = config.connect().await.expect("connect to the test CQL server");
    let bucket_count = schema::bucket_count(&session, keyspace).await.expect("the keyspace's bucket count");
    let mut buckets: Vec<u32> =
        event_ids.iter().map(|id| hourglass_core::raw_store::bucket_of(id, bucket_count)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let table = schema::BLOCKS_TABLE;
    let hour = CqlTimestamp(hour_start * 1000);
    for bucket in buckets {
        let rows: Vec<(CqlTimestamp, String, Vec<u8>)> = session
            .query_unpaged(
                format!(
                    "SELECT received_at, batch_id, events FROM {keyspace}.{table} \
                     WHERE customer_id = ? AND hour_start = ? AND bucket = ?"
                ),
                (customer_id, hour, bucket as i32),
            )
            .await
            .expect("read the bucket's blocks")
            .into_rows_result()
            .expect("rows")
            .rows::<(CqlTimestamp, String, Vec<u8>)>()
            .expect("typed rows")
            .collect::<Result<_, _>>()
            .expect("decode rows");
        for (received_at, batch_id, stored) in rows {
            let mut decompressor = Decompressor::new();
            let events = decompressor.events(&stored).expect("a readable block");
            let mut kept = Vec::new();
            let mut kept_count = 0;
            for encoded in &events {
                let event = EventView::parse(encoded).expect("a readable event");
                if !event_ids.contains(&event.event_id) {
                    raw_block::push_encoded_event(&mut kept, encoded);
                    kept_count += 1;
                }
            }
            if kept_count == events.len() {
                continue;
            }
            let key = (customer_id, hour, bucket as i32, received_at, batch_id.as_str());
            if kept_count == 0 {
                session
                    .query_unpaged(
                        format!(
                            "DELETE FROM {keyspace}.{table} WHERE customer_id = ? AND hour_start = ? AND bucket = ? \
                             AND received_at = ? AND batch_id = ?"
                        ),
                        key,
                    )
                    .await
                    .expect("delete an emptied block");
            } else {
                let (customer_id, hour, bucket, received_at, batch_id) = key;
                session
                    .query_unpaged(
                        format!(
                            "INSERT INTO {keyspace}.{table} (customer_id, hour_start, bucket, received_at, batch_id, \
                             events) VALUES (?, ?, ?, ?, ?, ?)"
                        ),
                        (customer_id, hour, bucket, received_at, batch_id, raw_block::compress(&kept)),
                    )
                    .await
                    .expect("rewrite a block");
            }
        }
    }
}
