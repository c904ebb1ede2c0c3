//! API-key authentication with a short-lived cache.
//!
//! The key travels in the `authorization` metadata (`Bearer hgk_…`). Its shape and checksum are checked
//! first, so garbage never reaches the database; then its hash is looked up in the key store, and the
//! answer (with the customer's limits) is cached for a short TTL. Unknown keys are cached too, briefly,
//! so a client retrying with a bad key does not hammer the database. The cache (`auth/cache.rs`) is bounded,
//! asks the store once for many concurrent callers of one key, and can be told a key was revoked.

mod cache;

use std::sync::Arc;

use hourglass_core::api_key::{ApiKey, KeyHash, KeyId, MalformedKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore, KeyStoreError};
use tonic::metadata::MetadataMap;

use cache::{CachedLookup, KeyCache, NextStep, SharedAnswer};

/// How long a key look-up is trusted.
#[derive(Clone, Debug, clap::Args)]
pub struct KeyCacheConfig {
    /// How long a key (and its customer's limits) is cached; a revoked key stops working within this.
    #[arg(long = "key-cache-ttl-secs", env = "HOURGLASS_KEY_CACHE_TTL_SECS", default_value_t = 30)]
    pub ttl_secs: u64,

    /// How long an unknown key is remembered as unknown, sparing the database from repeated bad keys.
    #[arg(long = "key-cache-negative-ttl-secs", env = "HOURGLASS_KEY_CACHE_NEGATIVE_TTL_SECS", default_value_t = 5)]
    pub negative_ttl_secs: u64,

    /// Most keys cached, known and unknown; past it, the least recently used unknown key is dropped,
    /// and the least recently used known key only when no unknown key is cached.
    #[arg(long = "key-cache-max-entries", env = "HOURGLASS_KEY_CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: usize,
}

/// Who is calling: the customer behind a valid key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id, for logs.
    pub key_id: KeyId,
    /// The key's hash, to re-check the key during a long stream.
    pub key_hash: KeyHash,
    /// The customer.
    pub customer_id: CustomerId,
    /// The customer's own limits.
    pub limits: CustomerLimits,
}

/// Why a call is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing API key: send it in the `authorization` metadata as `Bearer hgk_...`")]
    Missing,
    /// The metadata is not a well-formed key.
    #[error("{0}")]
    Malformed(#[from] MalformedKey),
    /// No such key.
    #[error("unknown API key")]
    Unknown,
    /// The key was revoked.
    #[error("API key {0} was revoked")]
    Revoked(KeyId),
    /// The key is valid for something else.
    #[error("API key {key_id} has scope {granted}; this call needs scope {required}")]
    WrongScope {
        /// The key.
        key_id: KeyId,
        /// Its scope.
        granted: Scope,
        /// The scope the call needs.
        required: Scope,
    },
    /// The key store could not be asked. Shared: every caller waiting on the same look-up gets it.
    #[error("cannot check API keys right now: {0}")]
    Unavailable(#[source] Arc<KeyStoreError>),
}

impl From<KeyStoreError> for AuthError {
    fn from(error: KeyStoreError) -> Self {
        AuthError::Unavailable(Arc::new(error))
    }
}

impl AuthError {
    /// The status code a call refused for this reason gets.
    pub fn code(&self) -> tonic::Code {
        match self {
            AuthError::Missing | AuthError::Malformed(_) | AuthError::Unknown | AuthError::Revoked(_) => {
                tonic::Code::Unauthenticated
            }
            AuthError::WrongScope { .. } => tonic::Code::PermissionDenied,
            AuthError::Unavailable(error) => match **error {
                KeyStoreError::Unavailable(_) => tonic::Code::Unavailable,
                // Not the caller's to retry: an operator must migrate, or the stored key is damaged.
                KeyStoreError::Schema(_) => tonic::Code::FailedPrecondition,
                KeyStoreError::InvalidData(_) => tonic::Code::Internal,
            },
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}

/// Authenticates calls against a [`KeyStore`], caching answers.
pub struct Authenticator<K> {
    key_store: Arc<K>,
    cache: KeyCache,
}

impl<K: KeyStore> Authenticator<K> {
    /// An authenticator with an empty cache.
    pub fn new(key_store: Arc<K>, config: KeyCacheConfig) -> Self {
        Self { key_store, cache: KeyCache::new(&config) }
    }

    /// The principal behind the call's `authorization` metadata, if its key has `required` scope.
    pub async fn authenticate(&self, metadata: &MetadataMap, required: Scope) -> Result<Arc<Principal>, AuthError> {
        let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
        let text = value.to_str().map_err(|_| AuthError::Malformed(MalformedKey::Shape))?;
        let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).unwrap_or(text).trim();
        let key = ApiKey::parse(token)?;
        self.authorize(key.hash(), required).await
    }

    /// Re-checks a key already seen, from the cache while it is fresh: a long stream notices a revoked
    /// key within the cache TTL.
    pub async fn authorize(&self, key_hash: KeyHash, required: Scope) -> Result<Arc<Principal>, AuthError> {
        match self.lookup(key_hash).await? {
            CachedLookup::Unknown => Err(AuthError::Unknown),
            CachedLookup::Found { principal, revoked: true, .. } => Err(AuthError::Revoked(principal.key_id.clone())),
            CachedLookup::Found { principal, scope, .. } if scope != required => {
                Err(AuthError::WrongScope { key_id: principal.key_id.clone(), granted: scope, required })
            }
            CachedLookup::Found { principal, .. } => Ok(principal),
        }
    }

    /// Forgets what the cache knows of a key, so its next use asks the store: for a process that learns
    /// of a revocation. A look-up of the key already under way is not cached when it ends (it may have
    /// read the key before the revocation); callers already waiting on it still get its answer.
    pub fn invalidate(&self, key_hash: KeyHash) {
        self.cache.invalidate(key_hash);
    }

    /// Forgets every cached key, as [`invalidate`](Self::invalidate) does one.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Keys cached (known and unknown, fresh or expired): never more than `max_entries`.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    async fn lookup(&self, key_hash: KeyHash) -> Result<CachedLookup, AuthError> {
        loop {
            match self.cache.next_step(key_hash) {
                NextStep::Cached(lookup) => return Ok(lookup),
                NextStep::Wait(waiter) => {
                    if let Some(answer) = waiter.answer().await {
                        return answer.map_err(AuthError::Unavailable);
                    }
                    // The leading caller was dropped before the store answered: look again, and lead
                    // the next look-up unless another waiter got there first.
                }
                NextStep::Lead(flight) => {
                    let answer: SharedAnswer = self.ask_store(key_hash).await.map_err(Arc::new);
                    flight.complete(&answer);
                    return answer.map_err(AuthError::Unavailable);
                }
            }
        }
    }

    async fn ask_store(&self, key_hash: KeyHash) -> Result<CachedLookup, KeyStoreError> {
        let Some(grant) = self.key_store.find_key(key_hash).await? else {
            return Ok(CachedLookup::Unknown);
        };
        let limits = self.key_store.customer_limits(&grant.customer_id).await?;
        let principal = Principal { key_id: grant.key_id, key_hash, customer_id: grant.customer_id, limits };
        Ok(CachedLookup::Found { principal: Arc::new(principal), scope: grant.scope, revoked: grant.revoked })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_store_that_cannot_answer_says_whether_retrying_helps() {
        let code = |error: KeyStoreError| tonic::Status::from(AuthError::from(error)).code();
        assert_eq!(code(KeyStoreError::Unavailable("connection refused".into())), tonic::Code::Unavailable);
        assert_eq!(
            code(KeyStoreError::Schema("relation \"api_keys\" does not exist".into())),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(code(KeyStoreError::InvalidData("unknown scope".into())), tonic::Code::Internal);
        assert_eq!(tonic::Status::from(AuthError::Unknown).code(), tonic::Code::Unauthenticated);
    }
}
