//! A query key revoked while the service has it cached (tier b: real Postgres and CQL): the service
//! trusts a cached key for `--key-cache-ttl-secs`, and not one call longer.

mod support;

use std::time::{Duration, Instant};

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::KeyStore;
use hourglass_grpc::auth::KeyCacheConfig;
use hourglass_grpc::server::ServerConfig;
use hourglass_proto::v1::GetHourlyMetricsRequest;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use support::{at, authorized, range};
use tonic::Code;

#[tokio::test]
async fn a_key_revoked_while_cached_is_refused_once_the_cache_ttl_has_passed() {
    let ttl = Duration::from_secs(1);
    let key_cache = KeyCacheConfig { ttl_secs: ttl.as_secs(), ..hourglass_config::defaults() };
    let database_url = hourglass_postgres::testing::create_test_database("query_revoke").await;
    let service =
        support::start_empty("query_revoke", &database_url, key_cache, hourglass_config::defaults::<ServerConfig>())
            .await;
    let key = service.key_store.create_key(&CustomerId::new("acme").unwrap(), Scope::Query, "reports").await.unwrap();
    let mut client = QueryServiceClient::new(service.channel().await);
    let hour = at("2026-11-02T00:00:00Z");
    let request = || {
        authorized(
            key.expose_secret(),
            GetHourlyMetricsRequest { range: range(hour, hour + 3600), event_types: vec![], group_by_event_type: true },
        )
    };

    // The call that puts the key in the cache.
    client.get_hourly_metrics(request()).await.expect("a valid key is served");
    assert!(service.key_store.revoke_key(&key.id()).await.unwrap());
    let revoked_at = Instant::now();

    // Calls right after the revocation may still be served from the cache, but only while the entry,
    // made before the revocation, is fresh: a call that starts a TTL after the revocation finds it
    // expired and asks the store. This bound holds on any machine, however slow, so it is no timing
    // assertion. The deadline only keeps a broken cache from hanging the test; a loaded machine may
    // need several TTLs for the polling calls themselves.
    let deadline = revoked_at + 10 * ttl;
    let refusal = loop {
        let started = Instant::now();
        match client.get_hourly_metrics(request()).await {
            Ok(_) => assert!(
                started.duration_since(revoked_at) < ttl,
                "a call started {:?} after the revocation was served: the key was trusted past the {ttl:?} cache TTL",
                started.duration_since(revoked_at)
            ),
            Err(status) => break status,
        }
        assert!(Instant::now() < deadline, "the revoked key was still served {:?} after its revocation", 10 * ttl);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    assert!(refusal.message().contains("revoked"), "{}", refusal.message());

    // And it stays refused: the refusal is cached as a revocation, not served once and forgotten.
    let again = client.get_hourly_metrics(request()).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "{again:?}");
    hourglass_cql::testing::drop_test_keyspace(&service.cql).await;
}
