//! The [`KeyStore`] contract: what the collector, the query service and `hourglass keys` rely on.
//!
//! Run [`suite`] on an empty store. It covers: a created key is found by its hash with its customer and
//! scope, unrevoked; an unknown hash is not found; revoking shows in look-ups and listings, a second
//! revocation succeeds but keeps the first instant, an unknown key id is not revoked; listings are oldest
//! first (creation instant, then key id), of all customers or of one; limits are all unset until set, then
//! read back as set and replaced whole; the store reports ready.

use hourglass_core::api_key::{ApiKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};

fn customer(name: &str) -> CustomerId {
    CustomerId::new(name).unwrap_or_else(|error| panic!("test customer id {name:?} is valid: {error}"))
}

/// Runs the whole key store contract against `store`, which must be empty.
pub async fn suite(store: &impl KeyStore) {
    readiness(store).await;
    keys_are_found_by_hash(store).await;
    keys_are_listed_oldest_first(store).await;
    revocation_is_visible_and_keeps_its_first_instant(store).await;
    customer_limits_default_to_unset_and_are_replaced_whole(store).await;
}

/// An `admin` key (erasure requests) is created, found and listed with its scope. Separate from
/// [`suite`] so a store made before the scope existed can be checked once upgraded.
pub async fn admin_keys(store: &impl KeyStore) {
    let acme = customer("admin-acme");
    let key = store.create_key(&acme, Scope::Admin, "privacy team").await.expect("create an admin key");
    let grant = store.find_key(key.hash()).await.expect("find a key").expect("an admin key is found by hash");
    assert_eq!((grant.scope, grant.customer_id), (Scope::Admin, acme.clone()));
    let listed = store.list_keys(Some(&acme)).await.expect("list keys");
    assert_eq!(listed.iter().map(|listing| listing.scope).collect::<Vec<_>>(), [Scope::Admin]);
}

async fn readiness(store: &impl KeyStore) {
    store.check_ready().await.expect("a fresh, migrated key store reports ready");
}

async fn keys_are_found_by_hash(store: &impl KeyStore) {
    let acme = customer("lookup-acme");
    let ingest_key = store.create_key(&acme, Scope::Ingest, "web").await.expect("create an ingest key");
    let query_key = store.create_key(&acme, Scope::Query, "").await.expect("create a query key");

    let grant = store.find_key(ingest_key.hash()).await.expect("find a key").expect("a created key is found by hash");
    assert_eq!(grant.key_id, ingest_key.id(), "the grant names the key found");
    assert_eq!(grant.customer_id, acme, "the grant carries the key's customer");
    assert_eq!(grant.scope, Scope::Ingest, "the grant carries the key's scope");
    assert!(!grant.revoked, "a new key is not revoked");
    let query_grant = store.find_key(query_key.hash()).await.expect("find a key").expect("the second key is found");
    assert_eq!(query_grant.scope, Scope::Query, "each key keeps its own scope");
    assert_eq!(query_grant.key_id, query_key.id());

    let unknown = store.find_key(ApiKey::generate().hash()).await.expect("look up an unknown hash");
    assert_eq!(unknown, None, "a hash no key has finds nothing");
}

async fn keys_are_listed_oldest_first(store: &impl KeyStore) {
    let globex = customer("listing-globex");
    let initech = customer("listing-initech");
    let before = store.list_keys(None).await.expect("list every key").len();
    let first = store.create_key(&globex, Scope::Ingest, "first").await.expect("create a key");
    let second = store.create_key(&initech, Scope::Query, "second").await.expect("create a key");
    let third = store.create_key(&globex, Scope::Query, "third").await.expect("create a key");

    let globex_keys = store.list_keys(Some(&globex)).await.expect("list one customer's keys");
    let globex_ids: Vec<_> = globex_keys.iter().map(|listing| listing.key_id.clone()).collect();
    assert_eq!(globex_ids, [first.id(), third.id()], "one customer's keys, oldest first, and only theirs");
    let listing = &globex_keys[0];
    assert_eq!(listing.customer_id, globex);
    assert_eq!(listing.scope, Scope::Ingest);
    assert_eq!(listing.name, "first", "the listing shows the name given at creation");
    assert_eq!(listing.revoked_at, None, "a new key has no revocation instant");
    assert!(globex_keys[0].created_at <= globex_keys[1].created_at, "creation instants follow creation order");

    let every_key = store.list_keys(None).await.expect("list every key");
    assert_eq!(every_key.len(), before + 3, "listing all customers shows every key");
    let newest: Vec<_> = every_key[before..].iter().map(|listing| listing.key_id.clone()).collect();
    assert_eq!(newest, [first.id(), second.id(), third.id()], "all keys, oldest first, across customers");
    assert!(
        every_key.windows(2).all(|pair| pair[0].created_at <= pair[1].created_at),
        "the listing is ordered by creation instant"
    );

    let nobody = customer("listing-nobody");
    assert!(store.list_keys(Some(&nobody)).await.expect("list keys").is_empty(), "a customer without keys has none");
}

async fn revocation_is_visible_and_keeps_its_first_instant(store: &impl KeyStore) {
    let hooli = customer("revoke-hooli");
    let revoked_key = store.create_key(&hooli, Scope::Ingest, "revoked").await.expect("create a key");
    let kept_key = store.create_key(&hooli, Scope::Ingest, "kept").await.expect("create a key");

    assert!(store.revoke_key(&revoked_key.id()).await.expect("revoke a key"), "revoking an existing key succeeds");
    let grant = store.find_key(revoked_key.hash()).await.expect("find a key").expect("a revoked key is still found");
    assert!(grant.revoked, "a look-up shows the revocation");
    assert_eq!(grant.customer_id, hooli);
    let kept = store.find_key(kept_key.hash()).await.expect("find a key").expect("the other key is found");
    assert!(!kept.revoked, "revoking one key leaves the customer's other keys alone");

    let listings = store.list_keys(Some(&hooli)).await.expect("list keys");
    let first_revocation = listings[0].revoked_at.expect("the listing shows when the key was revoked");
    assert_eq!(listings[1].revoked_at, None);
    assert!(first_revocation >= listings[0].created_at, "a key is revoked after it was created");

    assert!(store.revoke_key(&revoked_key.id()).await.expect("revoke again"), "revoking twice still finds the key");
    let listings = store.list_keys(Some(&hooli)).await.expect("list keys");
    assert_eq!(listings[0].revoked_at, Some(first_revocation), "a second revocation keeps the first instant");

    let unknown = ApiKey::generate().id();
    assert!(!store.revoke_key(&unknown).await.expect("revoke an unknown key"), "no key has an unknown id");
}

async fn customer_limits_default_to_unset_and_are_replaced_whole(store: &impl KeyStore) {
    let acme = customer("limits-acme");
    let other = customer("limits-other");
    assert_eq!(
        store.customer_limits(&acme).await.expect("read limits"),
        CustomerLimits::default(),
        "a customer never given limits has none (all defaults)"
    );

    let limits = CustomerLimits {
        events_per_second: Some(500),
        kafka_key_spread: Some(4),
        max_event_types_per_hour: Some(50),
        ..Default::default()
    };
    store.set_customer_limits(&acme, limits).await.expect("set limits");
    assert_eq!(store.customer_limits(&acme).await.expect("read limits"), limits, "limits read back as set");
    assert_eq!(
        store.customer_limits(&other).await.expect("read limits"),
        CustomerLimits::default(),
        "one customer's limits are not another's"
    );

    let replaced = CustomerLimits {
        burst_events: Some(2_000),
        kafka_key_spread: Some(1),
        max_property_names_per_event_type: Some(30),
        ..Default::default()
    };
    store.set_customer_limits(&acme, replaced).await.expect("replace limits");
    assert_eq!(
        store.customer_limits(&acme).await.expect("read limits"),
        replaced,
        "setting limits replaces every field, unset ones included"
    );

    // Limits may be set for a customer that has no key yet (the operator configures it first).
    let newcomer = customer("limits-newcomer");
    let newcomer_limits = CustomerLimits { events_per_second: Some(10), burst_events: Some(20), ..Default::default() };
    store.set_customer_limits(&newcomer, newcomer_limits).await.expect("set limits of a customer without keys");
    assert_eq!(store.customer_limits(&newcomer).await.expect("read limits"), newcomer_limits);
}
