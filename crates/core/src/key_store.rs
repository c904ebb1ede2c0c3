//! The [`KeyStore`] seam: API keys and per-customer limits.
//!
//! Distributed mode keeps them in Postgres (`hourglass-postgres`); standalone mode will keep them in its
//! embedded store. Both hold only key hashes.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::BoxError;
use crate::api_key::{ApiKey, KeyHash, KeyId, Scope};
use crate::customer::CustomerId;

/// Errors from a key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The store could not be reached or failed; the caller may retry.
    #[error("key store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store's schema is missing or behind this build: an operator must migrate.
    #[error("key store schema problem: {0}")]
    Schema(#[source] BoxError),
    /// The store holds data this version cannot read (e.g. an unknown scope).
    #[error("key store holds invalid data: {0}")]
    InvalidData(String),
}

/// What the collector and the query service need to know about a presented key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key's public id, for logs.
    pub key_id: KeyId,
    /// The customer the key belongs to.
    pub customer_id: CustomerId,
    /// What the key may be used for.
    pub scope: Scope,
    /// Whether the key was revoked.
    pub revoked: bool,
}

/// A key as shown by `hourglass keys list` (never the secret, which is not stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyListing {
    /// The key's public id.
    pub key_id: KeyId,
    /// The customer the key belongs to.
    pub customer_id: CustomerId,
    /// What the key may be used for.
    pub scope: Scope,
    /// A free-form label given at creation.
    pub name: String,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Per-customer limits; unset fields fall back to the collector's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CustomerLimits {
    /// Sustained events per second the customer may send (per collector replica).
    pub events_per_second: Option<u32>,
    /// Events the customer may send in a burst above the sustained rate.
    pub burst_events: Option<u32>,
    /// Over how many Kafka keys the customer's batches are spread (1 = one key, strict per-customer
    /// order; more spreads a hot customer over more partitions, giving up cross-batch order).
    pub kafka_key_spread: Option<u32>,
    /// Distinct event types the customer may send per hour (of `occurred_at`).
    pub max_event_types_per_hour: Option<u32>,
    /// Distinct property names one event type of the customer may carry per hour.
    pub max_property_names_per_event_type: Option<u32>,
}

/// API keys and customer limits.
pub trait KeyStore: Send + Sync + 'static {
    /// Finds the key with this hash, revoked or not.
    fn find_key(&self, hash: KeyHash) -> impl Future<Output = Result<Option<KeyGrant>, KeyStoreError>> + Send;

    /// Creates a key for a customer and returns it: the only time the whole key exists outside its
    /// owner's hands.
    fn create_key(
        &self,
        customer_id: &CustomerId,
        scope: Scope,
        name: &str,
    ) -> impl Future<Output = Result<ApiKey, KeyStoreError>> + Send;

    /// Revokes a key; returns false if no key has that id. Revoking twice keeps the first time.
    fn revoke_key(&self, key_id: &KeyId) -> impl Future<Output = Result<bool, KeyStoreError>> + Send;

    /// Lists keys, of one customer or of all, oldest first.
    fn list_keys(
        &self,
        customer_id: Option<&CustomerId>,
    ) -> impl Future<Output = Result<Vec<KeyListing>, KeyStoreError>> + Send;

    /// The customer's limits; all `None` when none were set.
    fn customer_limits(
        &self,
        customer_id: &CustomerId,
    ) -> impl Future<Output = Result<CustomerLimits, KeyStoreError>> + Send;

    /// Replaces the customer's limits.
    fn set_customer_limits(
        &self,
        customer_id: &CustomerId,
        limits: CustomerLimits,
    ) -> impl Future<Output = Result<(), KeyStoreError>> + Send;

    /// Checks the store is reachable and its schema is current, for readiness.
    fn check_ready(&self) -> impl Future<Output = Result<(), KeyStoreError>> + Send;
}
