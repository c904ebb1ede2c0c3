//! The Postgres key store against a real Postgres (tier b): `scripts/test.sh` starts it.

use hourglass_core::api_key::{ApiKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};
use hourglass_postgres::{PostgresConfig, PostgresKeyStore, migrate, testing};

async fn store(test_name: &str) -> PostgresKeyStore {
    let url = testing::create_test_database(test_name).await;
    let pool = PostgresConfig::for_url(url).connect_lazy().unwrap();
    migrate::run(&pool).await.unwrap();
    migrate::run(&pool).await.expect("migrating twice is a no-op");
    PostgresKeyStore::new(pool)
}

#[tokio::test]
async fn keys_are_found_by_hash_listed_and_revoked() {
    let store = store("keys_lifecycle").await;
    store.check_ready().await.unwrap();
    let acme = CustomerId::new("acme").unwrap();
    let globex = CustomerId::new("globex").unwrap();
    let ingest_key = store.create_key(&acme, Scope::Ingest, "web").await.unwrap();
    let query_key = store.create_key(&acme, Scope::Query, "").await.unwrap();
    store.create_key(&globex, Scope::Ingest, "").await.unwrap();

    let grant = store.find_key(ingest_key.hash()).await.unwrap().unwrap();
    assert_eq!(grant.customer_id, acme);
    assert_eq!(grant.scope, Scope::Ingest);
    assert_eq!(grant.key_id, ingest_key.id());
    assert!(!grant.revoked);
    assert_eq!(store.find_key(query_key.hash()).await.unwrap().unwrap().scope, Scope::Query);
    assert_eq!(store.find_key(ApiKey::generate().hash()).await.unwrap(), None);

    let acme_keys = store.list_keys(Some(&acme)).await.unwrap();
    assert_eq!(acme_keys.len(), 2);
    assert_eq!(acme_keys[0].name, "web");
    assert_eq!(store.list_keys(None).await.unwrap().len(), 3);

    assert!(store.revoke_key(&ingest_key.id()).await.unwrap());
    let revoked = store.find_key(ingest_key.hash()).await.unwrap().unwrap();
    assert!(revoked.revoked);
    let first_revocation = store.list_keys(Some(&acme)).await.unwrap()[0].revoked_at.unwrap();
    assert!(store.revoke_key(&ingest_key.id()).await.unwrap());
    assert_eq!(store.list_keys(Some(&acme)).await.unwrap()[0].revoked_at.unwrap(), first_revocation);
    assert!(!store.revoke_key(&ApiKey::generate().id()).await.unwrap());
}

#[tokio::test]
async fn customer_limits_default_to_unset_and_can_be_replaced() {
    let store = store("customer_limits").await;
    let acme = CustomerId::new("acme").unwrap();
    assert_eq!(store.customer_limits(&acme).await.unwrap(), CustomerLimits::default());
    let limits = CustomerLimits { events_per_second: Some(500), kafka_key_spread: Some(4), ..Default::default() };
    store.set_customer_limits(&acme, limits).await.unwrap();
    assert_eq!(store.customer_limits(&acme).await.unwrap(), limits);
    let relaxed = CustomerLimits { events_per_second: None, ..limits };
    store.set_customer_limits(&acme, relaxed).await.unwrap();
    assert_eq!(store.customer_limits(&acme).await.unwrap(), relaxed);
}

#[tokio::test]
async fn an_unmigrated_database_is_not_ready() {
    let url = testing::create_test_database("unmigrated").await;
    let store = PostgresKeyStore::new(PostgresConfig::for_url(url).connect_lazy().unwrap());
    assert!(store.check_ready().await.is_err());
}
