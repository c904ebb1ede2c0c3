//! The conformance suites of `hourglass-conformance` against the CQL raw store, on the test Cassandra
//! (`HOURGLASS_TEST_CQL_NODES`), each test in a keyspace of its own.

use hourglass_cql::testing::{create_test_store, create_test_store_with, drop_test_keyspace, test_config, test_nodes};

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

/// With `--cql-max-block-bytes 0` every record's blocks are its own, as builds before grouping wrote
/// them: the same contract.
#[tokio::test]
async fn cql_raw_store_with_a_block_per_record_conforms() {
    let mut config = test_config("raw_conformance_per_record", &test_nodes(), 8);
    config.max_block_bytes = 0;
    let (config, store) = create_test_store_with(config).await;
    hourglass_conformance::raw_store::suite(&store).await;
    drop_test_keyspace(&config).await;
}

/// With blocks cut past a few events' bytes, a bucket of one call is several blocks of several records:
/// the same contract.
#[tokio::test]
async fn cql_raw_store_with_small_blocks_conforms() {
    let mut config = test_config("raw_conformance_small", &test_nodes(), 2);
    config.max_block_bytes = 200;
    let (config, store) = create_test_store_with(config).await;
    hourglass_conformance::raw_store::suite(&store).await;
    drop_test_keyspace(&config).await;
}
