//! The API-key cache of `hourglass-grpc` ([`Authenticator`]) over the embedded key store, in a data
//! directory of the test's own: how often the store is asked, what a full cache evicts, and what a
//! concurrent look-up may write.
//!
//! The tests live here rather than in `hourglass-grpc` because `hourglass-embedded` depends on
//! `hourglass-grpc` (through `hourglass-ingestor`): the embedded store as a dev-dependency of
//! `hourglass-grpc` would be a cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hourglass_core::api_key::{ApiKey, KeyHash, KeyId, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyGrant, KeyListing, KeyStore, KeyStoreError};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_grpc::auth::{AuthError, Authenticator, KeyCacheConfig};
use tempfile::TempDir;
use tokio::sync::Notify;
use tonic::metadata::MetadataMap;

/// Callers started together in the concurrency tests.
const CONCURRENT_CALLERS: usize = 8;

/// The embedded key store, with what a test needs to see and steer its look-ups: it counts `find_key`
/// calls, can hold one look-up (after the store answered) until the test releases it, and can fail
/// look-ups as a store that is down does. Every answer it gives comes from the real store.
struct ObservedKeyStore {
    store: SqliteMetaStore,
    find_key_calls: AtomicUsize,
    hold_next_find_key: AtomicBool,
    /// Notified when a held look-up has its answer and waits for `release`.
    held: Notify,
    release: Notify,
    down: AtomicBool,
}

impl ObservedKeyStore {
    fn find_key_calls(&self) -> usize {
        self.find_key_calls.load(Ordering::SeqCst)
    }

    /// Makes the next `find_key` wait, once it has the store's answer, until `release` is notified.
    fn hold_next_find_key(&self) {
        self.hold_next_find_key.store(true, Ordering::SeqCst);
    }
}

impl KeyStore for ObservedKeyStore {
    async fn find_key(&self, hash: KeyHash) -> Result<Option<KeyGrant>, KeyStoreError> {
        self.find_key_calls.fetch_add(1, Ordering::SeqCst);
        let hold = self.hold_next_find_key.swap(false, Ordering::SeqCst);
        let answer = if self.down.load(Ordering::SeqCst) {
            Err(KeyStoreError::Unavailable("switched off by the test".into()))
        } else {
            self.store.find_key(hash).await
        };
        if hold {
            self.held.notify_one();
            self.release.notified().await;
        }
        answer
    }

    async fn create_key(&self, customer_id: &CustomerId, scope: Scope, name: &str) -> Result<ApiKey, KeyStoreError> {
        self.store.create_key(customer_id, scope, name).await
    }

    async fn revoke_key(&self, key_id: &KeyId) -> Result<bool, KeyStoreError> {
        self.store.revoke_key(key_id).await
    }

    async fn list_keys(&self, customer_id: Option<&CustomerId>) -> Result<Vec<KeyListing>, KeyStoreError> {
        self.store.list_keys(customer_id).await
    }

    async fn customer_limits(&self, customer_id: &CustomerId) -> Result<CustomerLimits, KeyStoreError> {
        self.store.customer_limits(customer_id).await
    }

    async fn set_customer_limits(&self, customer_id: &CustomerId, limits: CustomerLimits) -> Result<(), KeyStoreError> {
        self.store.set_customer_limits(customer_id, limits).await
    }

    async fn check_ready(&self) -> Result<(), KeyStoreError> {
        self.store.check_ready().await
    }
}

/// A store in a new temporary data directory, which lives as long as the returned guard.
async fn observed_store() -> (TempDir, Arc<ObservedKeyStore>) {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let store = SqliteMetaStore::open(data_dir.path()).await.expect("open meta.db");
    let observed = ObservedKeyStore {
        store,
        find_key_calls: AtomicUsize::new(0),
        hold_next_find_key: AtomicBool::new(false),
        held: Notify::new(),
        release: Notify::new(),
        down: AtomicBool::new(false),
    };
    (data_dir, Arc::new(observed))
}

/// A cache whose entries outlive any test, so only eviction and invalidation remove them.
fn long_lived(max_entries: usize) -> KeyCacheConfig {
    KeyCacheConfig { ttl_secs: 3600, negative_ttl_secs: 3600, max_entries }
}

async fn create_key(store: &ObservedKeyStore, customer: &str) -> ApiKey {
    let customer_id = CustomerId::new(customer).expect("a valid customer id");
    store.create_key(&customer_id, Scope::Ingest, "").await.expect("create a key")
}

fn bearer(key: &ApiKey) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    let value = format!("Bearer {}", key.expose_secret()).parse().expect("a key is valid metadata");
    metadata.insert("authorization", value);
    metadata
}

/// Runs `callers` together while the store holds the first look-up, which it releases only after every
/// caller has been polled once, so all of them find the key uncached and the look-up under way.
async fn with_first_look_up_held<F: Future>(store: &ObservedKeyStore, callers: Vec<F>) -> Vec<F::Output> {
    store.hold_next_find_key();
    let release_when_held = async {
        store.held.notified().await;
        store.release.notify_one();
    };
    let (outputs, ()) = tokio::join!(futures::future::join_all(callers), release_when_held);
    outputs
}

#[tokio::test]
async fn a_well_formed_unknown_key_is_looked_up_once_per_negative_ttl() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));

    let retried_key = ApiKey::generate();
    for _ in 0..3 {
        let answer = authenticator.authenticate(&bearer(&retried_key), Scope::Ingest).await;
        assert!(matches!(answer, Err(AuthError::Unknown)), "{answer:?}");
    }
    assert_eq!(store.find_key_calls(), 1, "a retried unknown key is asked about once");

    let burst_key = ApiKey::generate();
    let burst_metadata = bearer(&burst_key);
    let burst = (0..CONCURRENT_CALLERS).map(|_| authenticator.authenticate(&burst_metadata, Scope::Ingest)).collect();
    for answer in with_first_look_up_held(&store, burst).await {
        assert!(matches!(answer, Err(AuthError::Unknown)), "{answer:?}");
    }
    assert_eq!(store.find_key_calls(), 2, "a burst of one unknown key is asked about once");

    let uncached = Authenticator::new(Arc::clone(&store), KeyCacheConfig { negative_ttl_secs: 0, ..long_lived(100) });
    for _ in 0..2 {
        let answer = uncached.authenticate(&bearer(&retried_key), Scope::Ingest).await;
        assert!(matches!(answer, Err(AuthError::Unknown)), "{answer:?}");
    }
    assert_eq!(store.find_key_calls(), 4, "with no negative TTL every miss asks the store");
}

#[tokio::test]
async fn a_flood_of_unknown_keys_does_not_evict_valid_keys() {
    let (_data_dir, store) = observed_store().await;
    let max_entries = 4;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(max_entries));
    let valid_keys = [create_key(&store, "acme").await, create_key(&store, "globex").await];
    for key in &valid_keys {
        authenticator.authorize(key.hash(), Scope::Ingest).await.expect("a valid key");
    }

    for _ in 0..3 * max_entries {
        let answer = authenticator.authorize(ApiKey::generate().hash(), Scope::Ingest).await;
        assert!(matches!(answer, Err(AuthError::Unknown)), "{answer:?}");
        assert!(authenticator.cached_entries() <= max_entries, "the cache holds at most max_entries");
    }
    let calls_after_flood = store.find_key_calls();
    for key in &valid_keys {
        authenticator.authorize(key.hash(), Scope::Ingest).await.expect("a valid key");
    }
    assert_eq!(store.find_key_calls(), calls_after_flood, "the valid keys are still cached");
}

#[tokio::test]
async fn a_full_cache_evicts_its_least_recently_used_key() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(2));
    let oldest = create_key(&store, "acme").await;
    let used_again = create_key(&store, "globex").await;
    let newest = create_key(&store, "initech").await;
    authenticator.authorize(oldest.hash(), Scope::Ingest).await.expect("a valid key");
    authenticator.authorize(used_again.hash(), Scope::Ingest).await.expect("a valid key");
    authenticator.authorize(oldest.hash(), Scope::Ingest).await.expect("a valid key");
    authenticator.authorize(newest.hash(), Scope::Ingest).await.expect("a valid key");
    assert_eq!(authenticator.cached_entries(), 2);
    assert_eq!(store.find_key_calls(), 3);

    authenticator.authorize(oldest.hash(), Scope::Ingest).await.expect("a valid key");
    authenticator.authorize(newest.hash(), Scope::Ingest).await.expect("a valid key");
    assert_eq!(store.find_key_calls(), 3, "the two most recently used keys stayed");
    authenticator.authorize(used_again.hash(), Scope::Ingest).await.expect("a valid key");
    assert_eq!(store.find_key_calls(), 4, "the least recently used key was evicted");
}

#[tokio::test]
async fn concurrent_misses_of_a_key_share_one_look_up() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));
    let key = create_key(&store, "acme").await;

    let callers = (0..CONCURRENT_CALLERS).map(|_| authenticator.authorize(key.hash(), Scope::Ingest)).collect();
    let principals: Vec<_> =
        with_first_look_up_held(&store, callers).await.into_iter().map(|answer| answer.expect("a valid key")).collect();

    assert_eq!(store.find_key_calls(), 1, "one look-up for all the callers");
    assert!(principals.iter().all(|principal| Arc::ptr_eq(principal, &principals[0])), "all get the same answer");
    assert_eq!(principals[0].key_id, key.id());
}

#[tokio::test]
async fn concurrent_misses_of_a_key_share_one_error_which_is_not_cached() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));
    let key = create_key(&store, "acme").await;

    store.down.store(true, Ordering::SeqCst);
    let callers = (0..CONCURRENT_CALLERS).map(|_| authenticator.authorize(key.hash(), Scope::Ingest)).collect();
    for answer in with_first_look_up_held(&store, callers).await {
        assert!(matches!(answer, Err(AuthError::Unavailable(_))), "{answer:?}");
    }
    assert_eq!(store.find_key_calls(), 1, "one failed look-up for all the callers");

    store.down.store(false, Ordering::SeqCst);
    authenticator.authorize(key.hash(), Scope::Ingest).await.expect("the store is back");
    assert_eq!(store.find_key_calls(), 2, "a failure is not cached");
}

#[tokio::test]
async fn a_dropped_leading_caller_hands_the_look_up_to_a_waiting_one() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));
    let key = create_key(&store, "acme").await;

    store.hold_next_find_key();
    let mut leader = Box::pin(authenticator.authorize(key.hash(), Scope::Ingest));
    assert!(futures::poll!(&mut leader).is_pending(), "the held look-up cannot finish");
    let mut waiter = std::pin::pin!(authenticator.authorize(key.hash(), Scope::Ingest));
    assert!(futures::poll!(&mut waiter).is_pending(), "the second caller waits for the first");
    drop(leader);

    let principal = waiter.await.expect("the waiter looks the key up itself");
    assert_eq!(principal.key_id, key.id());
    assert_eq!(store.find_key_calls(), 2, "the dropped look-up, then the waiter's own");
}

#[tokio::test]
async fn a_look_up_begun_before_an_invalidation_is_not_cached() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));
    let key = create_key(&store, "acme").await;

    store.hold_next_find_key();
    let stale_look_up = authenticator.authorize(key.hash(), Scope::Ingest);
    let revoke_while_held = async {
        store.held.notified().await; // the look-up has read the key as valid
        assert!(store.revoke_key(&key.id()).await.expect("revoke the key"));
        authenticator.invalidate(key.hash());
        // A caller after the invalidation asks the store itself rather than wait for the stale look-up
        // (checked before awaiting it, which would never end if it waited for the held look-up).
        let mut fresh_look_up = std::pin::pin!(authenticator.authorize(key.hash(), Scope::Ingest));
        // SQLite may answer within that first poll: a finished look-up is not polled again.
        let first_poll = futures::poll!(&mut fresh_look_up);
        assert_eq!(store.find_key_calls(), 2, "the caller after the invalidation looks the key up");
        let fresh_answer = match first_poll {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => fresh_look_up.await,
        };
        // The stale look-up ends last, so nothing but its own check keeps it out of the cache.
        store.release.notify_one();
        fresh_answer
    };
    let (stale_answer, fresh_answer) = tokio::join!(stale_look_up, revoke_while_held);

    assert!(stale_answer.is_ok(), "the look-up began before the revocation: {stale_answer:?}");
    assert!(matches!(fresh_answer, Err(AuthError::Revoked(_))), "{fresh_answer:?}");
    let later_answer = authenticator.authorize(key.hash(), Scope::Ingest).await;
    assert!(matches!(later_answer, Err(AuthError::Revoked(_))), "{later_answer:?}");
    assert_eq!(store.find_key_calls(), 2, "the stale look-up, then the fresh one, whose answer is cached");
}

#[tokio::test]
async fn invalidating_every_key_makes_each_ask_the_store_again() {
    let (_data_dir, store) = observed_store().await;
    let authenticator = Authenticator::new(Arc::clone(&store), long_lived(100));
    let key = create_key(&store, "acme").await;
    authenticator.authorize(key.hash(), Scope::Ingest).await.expect("a valid key");
    assert!(store.revoke_key(&key.id()).await.expect("revoke the key"));
    authenticator.authorize(key.hash(), Scope::Ingest).await.expect("still cached as valid");

    authenticator.invalidate_all();
    assert_eq!(authenticator.cached_entries(), 0);
    let answer = authenticator.authorize(key.hash(), Scope::Ingest).await;
    assert!(matches!(answer, Err(AuthError::Revoked(_))), "{answer:?}");
    assert_eq!(store.find_key_calls(), 2);
}
