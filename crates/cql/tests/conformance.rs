//! The conformance suites of `hourglass-conformance` against the CQL raw store, on the test Cassandra
//! (`HOURGLASS_TEST_CQL_NODES`), each test in a keyspace of its own.

use hourglass_cql::testing::{create_test_store, drop_test_keyspace};

#[tokio::test]
async fn cql_raw_store_conforms() {
    let (config, store) = create_test_store("raw_conformance", 8).await;
    hourglass_conformance::raw_store::suite(&store).await;
    drop_test_keyspace(&config).await;
}

#[tokio::test]
async fn cql_raw_store_with_one_bucket_conforms() {
    let (config, store) = create_test_store("raw_conformance_one", 1).await;
    hourglass_conformance::raw_store::suite(&store).await;
    drop_test_keyspace(&config).await;
}
