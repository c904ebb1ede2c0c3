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
    create_test_store_with(test_config(test_name, &test_nodes(), buckets)).await
}

/// Creates the keyspace of `config` (from [`test_config`], other settings changed as a test needs) and
/// returns a store on it.
pub async fn create_test_store_with(config: CqlConfig) -> (CqlConfig, CqlRawStore) {
    let session = config.connect().await.expect("connect to the test CQL server");
    schema::migrate(&session, &config).await.expect("migrate the test keyspace");
    let store = CqlRawStore::with_session(std::sync::Arc::new(session), &config).await.expect("prepare statements");
    (config, store)
}

/// Removes events behind the store's back, for tests of what the ledger shows when raw data is lost:
/// every block of their buckets in `hour_start` is rewritten without them (deleted when emptied), as an
/// erasure rewrites blocks.
pub async fn delete_events(config: &CqlConfig, customer_id: &str, hour_start: i64, event_ids: &[&str]) {
    use std::collections::HashSet;

    let store = CqlRawStore::connect(config).await.expect("open the test keyspace");
    let mut buckets: Vec<u32> = event_ids.iter().map(|id| store.bucket_of(id) as u32).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let ids: HashSet<String> = event_ids.iter().map(|id| (*id).to_owned()).collect();
    for bucket in buckets {
        store.erase_in_bucket(customer_id, hour_start, bucket, &ids).await.expect("rewrite the bucket's blocks");
    }
}
