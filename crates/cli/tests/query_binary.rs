//! The built `hourglass query` with `--read-database-url`: keys are checked on the primary, reports come
//! from the replica (here a second database whose rollups the primary does not have), and SIGTERM exits
//! cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_store::{EventTypeRollup, HourRollup, RollupStore};
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, PostgresRollupStore, testing};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_proto::v1::{GetHourlyMetricsRequest, TimeRange};
use tonic_health::pb::health_check_response::ServingStatus;

mod support;

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");
const HOUR: i64 = 1_795_600_800;

#[tokio::test]
async fn reports_come_from_the_read_replica_and_keys_from_the_primary() {
    let primary_url = testing::create_test_database("query_primary").await;
    let replica_url = testing::create_test_database("query_replica").await;
    let cql_nodes = std::env::var("HOURGLASS_TEST_CQL_NODES").expect("run with scripts/test.sh");
    // A keyspace of its own, which the service creates (--cql-migrate defaults to true): nothing is
    // assumed to exist on the CQL server.
    let cql = hourglass_cql::testing::test_config("query_replica", &cql_nodes, 4);
    let primary = PostgresConfig::for_url(primary_url.clone()).open().await.unwrap();
    let replica = PostgresConfig::for_url(replica_url.clone()).open().await.unwrap();
    let customer = CustomerId::new("acme").unwrap();
    let key = PostgresKeyStore::new(primary).create_key(&customer, Scope::Query, "replica test").await.unwrap();

    // Only the "replica" has the hour's rollup.
    let customer_hour = CustomerHour { customer_id: customer.clone(), hour_start: HOUR };
    PostgresJobQueue::new(replica.clone()).mark_dirty(std::slice::from_ref(&customer_hour)).await.unwrap();
    let rollups = PostgresRollupStore::new(replica);
    let lease = rollups.lease_hour(&customer_hour, "test", Duration::from_secs(60)).await.unwrap().unwrap();
    let rollup = HourRollup {
        event_types: vec![EventTypeRollup {
            event_type: "view".into(),
            events: 42,
            distinct_users: 7,
            users_sketch: vec![],
        }],
        numeric: vec![],
        events: 42,
        distinct_users: 7,
        users_sketch: vec![],
        outcomes: HourOutcomes { accepted: 42, ..HourOutcomes::default() },
        logic_version: 2,
        is_final: true,
    };
    rollups.complete(&lease, &rollup).await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut query = Command::new(HOURGLASS)
        .args(["query", "--listen-addr", &format!("127.0.0.1:{port}")])
        .env("HOURGLASS_DATABASE_URL", &primary_url)
        .env("HOURGLASS_READ_DATABASE_URL", &replica_url)
        .env("HOURGLASS_CQL_NODES", &cql_nodes)
        .env("HOURGLASS_CQL_KEYSPACE", &cql.keyspace)
        .env("HOURGLASS_READINESS_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let channel =
        support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut query, Duration::from_secs(60)).await;

    let mut request = tonic::Request::new(GetHourlyMetricsRequest {
        range: Some(TimeRange {
            start: Some(Timestamp { seconds: HOUR, nanos: 0 }),
            end: Some(Timestamp { seconds: HOUR + 3600, nanos: 0 }),
        }),
        event_types: vec![],
        group_by_event_type: true,
    });
    request.metadata_mut().insert("authorization", format!("Bearer {}", key.expose_secret()).parse().unwrap());
    let rows = QueryServiceClient::new(channel).get_hourly_metrics(request).await.unwrap().into_inner().rows;
    assert_eq!(rows.len(), 1, "the replica's row: {rows:?}");
    assert_eq!((rows[0].event_type.as_str(), rows[0].events, rows[0].distinct_users), ("view", 42, 7));

    let (status, logs) = support::sigterm_and_wait(&mut query).await;
    assert!(status.success(), "{logs}");
    assert!(logs.contains("reports read from the read replica"), "{logs}");
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
}

/// On a fresh machine the query service once started beside the ingestor, before anything had created
/// the keyspace, and exited. With `--cql-migrate false` (schema left to `hourglass migrate cql`) it must
/// stay up, report NOT_SERVING and say what it waits for, then serve once the keyspace exists.
#[tokio::test]
async fn without_its_keyspace_the_query_service_waits_not_serving_and_serves_once_it_exists() {
    let database_url = testing::create_test_database("query_waits").await;
    let cql_nodes = std::env::var("HOURGLASS_TEST_CQL_NODES").expect("run with scripts/test.sh");
    let cql = hourglass_cql::testing::test_config("query_waits", &cql_nodes, 4);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut query = Command::new(HOURGLASS)
        .args(["query", "--listen-addr", &format!("127.0.0.1:{port}")])
        .env("HOURGLASS_DATABASE_URL", &database_url)
        .env("HOURGLASS_CQL_NODES", &cql_nodes)
        .env("HOURGLASS_CQL_KEYSPACE", &cql.keyspace)
        .env("HOURGLASS_CQL_MIGRATE", "false")
        .env("HOURGLASS_READINESS_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let target = format!("http://127.0.0.1:{port}");
    let logs = support::collect_stderr(&mut query);
    support::wait_for_health(&target, &mut query, ServingStatus::NotServing, Duration::from_secs(60)).await;
    let missing = format!("keyspace {} does not exist", cql.keyspace);
    support::wait_for_log(&logs, &missing, Duration::from_secs(60)).await;
    assert!(query.try_wait().unwrap().is_none(), "still running while the keyspace is missing");
    assert!(logs.lock().unwrap().contains("waiting for the CQL raw store"), "{}", logs.lock().unwrap());

    let session = cql.connect().await.unwrap();
    hourglass_cql::schema::migrate(&session, &cql).await.unwrap();
    support::wait_until_serving(&target, &mut query, Duration::from_secs(60)).await;

    let (status, _) = support::sigterm_and_wait(&mut query).await;
    assert!(status.success(), "{}", logs.lock().unwrap());
    hourglass_cql::testing::drop_test_keyspace(&cql).await;
}
