//! The query service while its Postgres is down (tier b: a Postgres cluster of the test's own, crashed
//! and restarted; the raw store is the shared Cassandra): health says NOT_SERVING, so a balancer stops
//! sending it queries it cannot answer, and SERVING again once Postgres is back.

mod support;

use std::time::{Duration, Instant};

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::KeyStore;
use hourglass_grpc::server::ServerConfig;
use hourglass_proto::v1::GetHourlyMetricsRequest;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_query::server::QUERY_SERVICE_NAME;
use support::{at, authorized, range};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use hourglass_postgres::testing::FaultCluster;

const NAME: &str = "query_outage";
const PORT: u16 = 5447;

/// Waits until health reports `expected` for the whole server and for the query service.
async fn wait_for_health(channel: &Channel, expected: ServingStatus, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut health = HealthClient::new(channel.clone());
    loop {
        let mut statuses = Vec::new();
        for service in ["", QUERY_SERVICE_NAME] {
            let answer = health.check(HealthCheckRequest { service: service.into() }).await;
            statuses.push(answer.map(|response| response.into_inner().status));
        }
        if statuses.iter().all(|status| status.as_ref().is_ok_and(|status| *status == expected as i32)) {
            return;
        }
        assert!(Instant::now() < deadline, "health did not report {expected:?} within {timeout:?}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_is_not_serving_while_postgres_is_down_and_serving_once_it_is_back() {
    let cluster = FaultCluster::start(NAME, PORT);
    let database_url = format!("postgres://hourglass:hourglass@127.0.0.1:{PORT}/hourglass");
    // The cluster outlives the test: start from an empty schema, whatever an earlier run left.
    let pool = hourglass_postgres::PostgresConfig::for_url(&database_url).connect_lazy().unwrap();
    sqlx::query("DROP SCHEMA public CASCADE").execute(&pool).await.unwrap();
    sqlx::query("CREATE SCHEMA public").execute(&pool).await.unwrap();
    pool.close().await;
    let server = ServerConfig { readiness_interval_ms: 100, ..hourglass_config::defaults() };
    let service = support::start_empty("query_outage", &database_url, hourglass_config::defaults(), server).await;
    let key = service.key_store.create_key(&CustomerId::new("acme").unwrap(), Scope::Query, "reports").await.unwrap();
    let channel = service.channel().await;
    let hour = at("2026-11-02T00:00:00Z");
    let request = || {
        authorized(
            key.expose_secret(),
            GetHourlyMetricsRequest {
                range: range(hour, hour + 3600),
                event_types: vec![],
                group_by_event_type: false,
            },
        )
    };
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(60)).await;

    cluster.run("kill");
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(60)).await;
    // A caller the balancer still sends here is told to retry elsewhere, not that its key is bad: the key
    // was never looked up, so only the store can say whether it is valid.
    let status = QueryServiceClient::new(channel.clone()).get_hourly_metrics(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    cluster.run("start");
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(60)).await;
    QueryServiceClient::new(channel.clone()).get_hourly_metrics(request()).await.expect("served once postgres is back");
    hourglass_cql::testing::drop_test_keyspace(&service.cql).await;
    drop(service);
    drop(cluster);
}
